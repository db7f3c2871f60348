"""Device models. Each is a plain state machine with `read(offset, size)` and
`write(offset, size, value)`; what it drives (output, a stop request) is handed to it."""
