; smc.asm: self-modifying code (SDM Vol. 3A 11.6): a store to an instruction that has
; not yet executed is seen when it executes, even the very next instruction.
%include "common.inc"

main:
        ; a store to the next instruction's immediate
        mov byte [n1 + 1], 0x42
n1:     mov al, 0x11
        PRINT "next insn: "
        HEX eax, 2
        PRINT {10}

        ; a loop that patches an instruction it has already executed
        xor ebx, ebx
        xor ecx, ecx
loop1:  mov [p2 + 1], cl
p2:     mov al, 0x7F
        add bl, al
        inc ecx
        cmp ecx, 4
        jb loop1
        PRINT "loop sum: "
        HEX ebx, 2
        PRINT {10}

        ; an opcode replaced: nop -> inc eax
        mov eax, 5
        mov byte [p3], 0x40
p3:     nop
        PRINT "nop->inc: "
        HEX eax, 2
        PRINT {10}

        ; a dword store over the next two instructions
        mov eax, 1
        mov dword [p4], 0x90404040      ; inc eax x3, nop
p4:     dec eax
        dec eax
        dec eax
        dec eax
        PRINT "dword patch: "
        HEX eax, 2
        PRINT {10}

        ; an instruction straddling a page boundary, patched in its second page
        xor esi, esi
again:  jmp straddle
straddle_back:
        PRINT "straddle: "
        HEX eax, 8
        PRINT {10}
        inc esi
        mov byte [straddle + 4], 0x99
        cmp esi, 2
        jb again
        jmp finish

        align 4096
        times 4096 - 2 nop
straddle:
        mov eax, 0x11223344             ; B8 44 33 | 22 11 (next page)
        jmp straddle_back
