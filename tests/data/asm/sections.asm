; sections in a flat binary: .text first, then .data (aligned 4), .bss not emitted
[bits 32]
[org 0x1000]
section .text
    mov eax, value
    mov ebx, [value]
    mov ecx, buffer
    jmp next
section .data
value: dd 42
    db 1
section .text
next:
    mov edx, message
    ret
section .bss
buffer: resb 64
section .data
message: db "ok", 0
    align 16
table: dd value, next, buffer
