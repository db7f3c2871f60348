; assorted NASM syntax: %define, $-relative jumps, odd labels, char constants, sections
[bits 32]
%define PORT 0x3f8

BASE equ 0x1000
use32
global start
start:
    jmp $
    jmp $+2
    jmp short $+2
    call $+5
    mov dx, PORT
    mov al, 'A'
    cmp eax, 'ABCD'
    mov ax, 'hi'
    mov eax, BASE + 'a'
..@special: nop
$eax: nop
    jmp $eax
label_without_colon nop
label2 db 1
    mov eax, [$eax]
    times 3 jmp short $
    dd start, ..@special, label2
    mov ecx, end - start
    mov ecx, (end - start) / 4
    add esp, byte 8
    sub esp, dword 8
    mov byte [ebx], 'x'
    mov dword [fs:0], 0
    lea esi, [esi+0]
    lea esi, [esi*1+0]
    nop
    fs nop

end:
section .data align=16
    db 1
section .text
    db 2
