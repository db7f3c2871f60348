; a boot-sector shaped image with 32-bit code
bits 32
org 0x7c00
entry:
    cli
    xor eax, eax
    mov ds, ax
    mov es, ax
    mov esp, 0x7c00
    mov esi, text
print:
    lodsb
    or al, al
    jz halt
    mov dx, 0xe9
    out dx, al
    jmp short print
halt:
    hlt
    jmp halt
text: db "boot", 0
    times 510-($-$$) db 0
    dw 0xaa55
