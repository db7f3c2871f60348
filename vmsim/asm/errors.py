"""The one exception type of the assembler: every mistake points at a file, line and column."""

from __future__ import annotations


class AsmError(Exception):
    """An assembly error; `str(e)` is `file:line:col: message` (line and col are 1-based)."""

    def __init__(self, message: str, file: str = "<input>", line: int = 0, col: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.col = col

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"


class LineError(Exception):
    """Raised below the statement level with a column only; the driver adds file and line."""

    def __init__(self, message: str, col: int) -> None:
        super().__init__(message)
        self.message = message
        self.col = col
