; triple_stack.asm: a stack push that page-faults while an exception is delivered.
; ESP is 8 bytes above a not-present page: #UD pushes EFLAGS and CS, then EIP faults
; (#PF, write, CR2 = page end - 4). Delivering that #PF pushes on the same stack and
; faults again (#PF + #PF: #DF), and so does the #DF: triple fault, shutdown.
%include "common.inc"

PD      equ 0x200000
PT0     equ 0x201000
HOLE    equ 0x80000                     ; this page is not mapped

main:
        mov edi, PD
        mov ecx, 2 * 1024
        xor eax, eax
        cld
        rep stosd
        mov edi, PT0
        mov eax, 0x003
.ident: stosd
        add eax, 0x1000
        cmp edi, PT0 + 4096
        jb .ident
        mov dword [PT0 + (HOLE >> 12) * 4], 0
        mov dword [PD], PT0 | 3
        mov eax, PD
        mov cr3, eax
        mov eax, cr0
        or eax, 0x80010000
        mov cr0, eax
        PRINT_LINE "before the triple fault"
        mov esp, HOLE + 0x1000 + 8
        ud2
        PRINT_LINE "not reached"
        jmp finish
