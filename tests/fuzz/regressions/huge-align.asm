align 1<<40
