resb 1<<40
