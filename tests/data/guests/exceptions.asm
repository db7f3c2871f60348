; exceptions.asm: IDT delivery of faults and traps (SDM Vol. 3A 6.12-6.15), error codes,
; IRETD back, descriptor checks on segment loads, far jumps and gates.
%include "common.inc"

main:
        ; The PIC is masked so that IF=1 below lets no timer interrupt in on QEMU (its
        ; BIOS leaves IRQ0 unmasked); vmsim has no PIC and drops these writes.
        mov al, 0xFF
        out 0x21, al
        out 0xA1, al

        ; vectors with their own gate kinds: 0x42 interrupt gate, 0x43 trap gate
        mov eax, 0x43
        mov ebx, stub_67                ; stubs are named in decimal
        mov ecx, 0x8F
        call set_gate
        ; 0x41: not-present gate
        mov eax, 0x41
        mov ebx, stub_65
        mov ecx, 0x0E
        call set_gate
        ; 0x44: gate whose code selector (0x48) is beyond the GDT limit
        mov word [idt + 0x44*8 + 2], 0x48
        ; 0x45: gate whose code selector is a data segment
        mov word [idt + 0x45*8 + 2], 0x10
        ; 0x46: not a gate (type 0x0C: call gate, S=0): #GP
        mov byte [idt + 0x46*8 + 5], 0x8C

        ; #DE: fault, no error code
        xor edx, edx
        mov eax, 1
        xor ecx, ecx
        TRY "div0", de_insn, de_back
de_insn:
        div ecx
de_back:
        CHECK_ESP

        ; #UD from ud2: fault, no error code
        TRY "ud2", ud_insn, ud_back
ud_insn:
        ud2
ud_back:
        CHECK_ESP

        ; INT3: trap, the saved EIP is the next instruction (rel=1)
        TRY "int3", bp_insn, 1
bp_insn:
        int3
        CHECK_ESP
        PRINT_LINE "back after int3"

        ; INT 0x40: trap, rel=2 (CD 40), no error code
        TRY "int40", int40_insn, 1
int40_insn:
        int 0x40
        CHECK_ESP
        PRINT_LINE "back after int 0x40"

        ; INTO with OF=1: trap #OF, rel=1
        mov al, 0x7F
        add al, 1                       ; OF=1
        TRY "into", into_insn, 1
into_insn:
        into
        CHECK_ESP
        ; INTO with OF=0: nothing
        xor eax, eax
        into
        PRINT_LINE "into with OF=0: no trap"

        ; interrupt gate clears IF; trap gate keeps it (pushed EFLAGS has IF=1 in both)
        sti
        TRY "intgate", ig_insn, 1
ig_insn:
        int 0x42
        TRY "trapgate", tg_insn, 1
tg_insn:
        int 0x43
        cli

        ; #GP(selector) for a selector beyond the GDT limit, RPL bits cleared
        mov ax, 0x43
        TRY "mov ds,0x43", gp1_insn, gp1_back
gp1_insn:
        mov ds, ax
gp1_back:
        CHECK_ESP
        ; (TI=1 selectors are left out: QEMU enters with the LDTR from reset, limit
        ; 0xFFFF, where vmsim's has none; LLDT is outside vmsim's subset.)
        ; far jmp beyond the GDT limit
        TRY "jmp 0x50:x", gp3_insn, gp3_back
gp3_insn:
        jmp 0x50:gp3_back
gp3_back:
        ; far jmp to a data segment: #GP(selector)
        TRY "jmp 0x10:x", gp4_insn, gp4_back
gp4_insn:
        jmp 0x10:gp4_back
gp4_back:
        ; null selector in SS: #GP(0)
        xor eax, eax
        TRY "mov ss,0", gp5_insn, gp5_back
gp5_insn:
        mov ss, ax
gp5_back:
        ; execute-only code segment into DS: #GP(selector)
        mov ax, 0x28
        TRY "mov ds,0x28", gp6_insn, gp6_back
gp6_insn:
        mov ds, ax
gp6_back:
        ; far jmp to a DPL-3 code segment at CPL 0: #GP(selector)
        TRY "jmp 0x30:x", gp11_insn, gp11_back
gp11_insn:
        jmp 0x30:gp11_back
gp11_back:
        ; a data selector with RPL 3 > DPL 0: #GP(selector); RPL 3 = DPL 3 is fine
        mov ax, 0x13
        TRY "mov ds,0x13", gp12_insn, gp12_back
gp12_insn:
        mov ds, ax
gp12_back:
        mov ax, 0x3B
        mov gs, ax
        mov ax, 0x10
        mov gs, ax
        PRINT_LINE "dpl 3 data with rpl 3 loaded"
        ; a gate to a DPL-3 code segment: #GP(selector)
        mov word [idt + 0x48*8 + 2], 0x30
        TRY "int48", gp13_insn, gp13_back
gp13_insn:
        int 0x48
gp13_back:
        ; a null selector in DS is fine (until used)
        xor eax, eax
        mov fs, ax
        mov ax, 0x10
        mov fs, ax
        PRINT_LINE "null fs loaded"

        ; #NP(selector) for a not-present data segment, #SS(selector) for SS
        mov ax, 0x18
        TRY "mov ds,0x18", np1_insn, np1_back
np1_insn:
        mov ds, ax
np1_back:
        TRY "mov ss,0x18", ss1_insn, ss1_back
ss1_insn:
        mov ss, ax
ss1_back:
        ; far jmp to a not-present code segment: #NP(selector)
        TRY "jmp 0x20:x", np2_insn, np2_back
np2_insn:
        jmp 0x20:np2_back
np2_back:
        CHECK_ESP

        ; INT n through a not-present gate: #NP(vector*8+2), EXT=0 for INT n
        TRY "int41", np3_insn, np3_back
np3_insn:
        int 0x41
np3_back:
        ; gate's code selector beyond the GDT limit: #GP(selector)
        TRY "int44", gp7_insn, gp7_back
gp7_insn:
        int 0x44
gp7_back:
        ; gate's code selector is a data segment: #GP(selector)
        TRY "int45", gp8_insn, gp8_back
gp8_insn:
        int 0x45
gp8_back:
        ; descriptor in the IDT that is not an interrupt or trap gate: #GP(vector*8+2)
        TRY "int46", gp9_insn, gp9_back
gp9_insn:
        int 0x46
gp9_back:
        ; vector beyond the IDT limit: #GP(vector*8+2)
        lidt [idt_small]
        TRY "int60", gp10_insn, gp10_back
gp10_insn:
        int 0x60
gp10_back:
        lidt [idt_descriptor]
        CHECK_ESP

        ; IRETD restores EFLAGS from the frame: a handler can change them
        mov dword [resume], 1
        mov eax, 0x47
        mov ebx, flag_handler
        mov ecx, 0x8E
        call set_gate
        clc
        int 0x47
        jc .cf_set
        PRINT_LINE "iretd: CF not restored from frame"
        jmp .cf_done
.cf_set:
        PRINT_LINE "iretd: CF from frame"
.cf_done:
        mov dword [resume], unexpected
        jmp finish

flag_handler:                           ; set CF in the saved EFLAGS and return
        or dword [esp + 8], 1
        iretd

        align 8
idt_small:
        dw 0x50 * 8 - 1
        dd idt
