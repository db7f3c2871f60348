times 0xffffffff db 0
