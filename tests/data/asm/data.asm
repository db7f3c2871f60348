; data directives, strings, numbers, expressions, times/align/res, $ and $$, equ, local labels
bits 32
org 0x7c00
SIZE equ 16
TWICE equ SIZE*2
NEGV equ -SIZE
OFFS equ tail - $$
main:
    mov eax, SIZE
    mov ebx, TWICE + 1
    mov ecx, NEGV
    mov edx, OFFS
    mov esi, $
    mov edi, $$
    mov eax, $ - main
    jmp .done
.loop:
    dec ecx
    jnz .loop
.done:
    jmp main.loop
other:
.loop:
    jmp .loop
    jmp main.done
    db 0
    db 1, 2, 3
    db -1, -128, 255
    db 'a', "b", `c`
    db 'hello', 0
    db "it's", 0
    db 'say "hi"', 0
    db `tab\there\nnl\r\0\\\'\"\x41\101\e`, 0
    db `\u00e9`
    db "a" + 1
    dw 0x1234, -1, 'ab', 'abc'
    dw 65535, -32768
    dd 0xdeadbeef, -1, 'abcd', 'abcdef'
    dq 0x123456789abcdef0, -2
    db 0x10, 10h, 0Ah, 0xA, $0A, 0o17, 17o, 17q, 0q17, 0b101, 101b, 0y11, 11y, 0d99, 99d
    dw 1_000
    dd 1_000_000, 0x_ff_ff
    dd 7 / 2, 7 % 2, -7 // 2, -7 %% 2, 7 // -2
    dq -7 / 2, -256 >> 4
    dd 1 << 4, 256 >> 4, 0xF0 & 0x3C, 0xF0 | 0x0F, 0xFF ^ 0x0F, ~0, -(3)
    dd (1 + 2) * 3, 1 + 2 * 3, 10 - 2 - 3, 2 * (3 + 4) - 1, !0, !5, +5
    dd 'a' - 'A', ('z' - 'a') / 2
    dd main, tail, tail - main, main + 4, $ - $$, ($ - $$) * 2
    times 4 db 0xAA
    times 3 dw $ - $$
    times 2 dd 1, 2
    times 0 db 1
    times SIZE/4 nop
    times 3 push eax
    align 4
    db 1
    align 8
    db 2
    align 16, db 0xCC
    db 3
    alignb 4
    db 4
    align 4, nop
    resb 3
    resw 2
    resd 1
    resq 1
    db 5
tail:
    times 510-($-$$) db 0
    dw 0xAA55
