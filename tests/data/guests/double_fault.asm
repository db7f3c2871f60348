; double_fault.asm: a fault while delivering another (SDM Vol. 3A 6.15, Table 6-5).
; contributory + contributory and #PF + (contributory or #PF) give #DF (error code 0);
; benign + anything, and contributory + #PF, are handled one after the other.
; #DF is an abort and the SDM leaves its saved CS:EIP undefined; QEMU and vmsim both push
; the instruction that raised the first fault, which lets the handler resume.
%include "common.inc"

PD      equ 0x200000
PT0     equ 0x201000

%macro GATE_PRESENT 2                   ; vector, 0 or 1
%if %2
        or byte [idt + %1*8 + 5], 0x80
%else
        and byte [idt + %1*8 + 5], 0x7F
%endif
%endmacro

main:
        ; the two straddling IDT copies (physical writes, before paging is on)
        mov esi, idt
        mov edi, 0x400000 - 14 * 8
        mov ecx, NSTUBS * 2
        cld
        rep movsd
        mov esi, idt
        mov edi, 0x3FF000 - 14 * 8
        mov ecx, NSTUBS * 2
        rep movsd
        ; paging: identity map 0-4 MiB but the page 0x3FE000, nothing else
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
        mov dword [PT0 + 0x3FE * 4], 0
        mov dword [PD], PT0 | 3
        mov eax, PD
        mov cr3, eax
        mov eax, cr0
        or eax, 0x80010000
        mov cr0, eax

        ; contributory (#NP for a segment) + #NP for its not-present gate: #DF
        GATE_PRESENT 11, 0
        mov ax, 0x18
        TRY "np+np", df1, df1_back
df1:    mov ds, ax
df1_back:
        GATE_PRESENT 11, 1
        CHECK_ESP

        ; #DE whose gate is not an interrupt/trap gate (#GP): #DF
        mov byte [idt + 0*8 + 5], 0x8C
        xor edx, edx
        xor ecx, ecx
        TRY "de+gp", df2, df2_back
df2:    div ecx
df2_back:
        mov byte [idt + 0*8 + 5], 0x8E

        ; #GP whose gate is beyond the IDT limit... the limit check gives #GP again: #DF
        lidt [idt_limit_13]             ; vectors 0-12 only: 13 (#GP) is outside, 8 inside
        mov ax, 0x48
        TRY "gp+gp", df3, df3_back
df3:    mov es, ax
df3_back:
        lidt [idt_descriptor]

        ; #PF whose gate is not present (#NP): #DF, CR2 from the #PF
        GATE_PRESENT 14, 0
        TRY "pf+np", df4, df4_back
df4:    mov eax, [0x00C00444]
df4_back:
        GATE_PRESENT 14, 1

        ; #PF whose gate's code selector is beyond the GDT limit (#GP): #DF
        mov word [idt + 14*8 + 2], 0x48
        TRY "pf+gp", df5, df5_back
df5:    mov dword [0x00C00888], eax
df5_back:
        mov word [idt + 14*8 + 2], 0x08

        ; #PF whose gate sits on a not-present page (#PF reading the IDT): #DF, and CR2
        ; holds the second fault's address (the IDT entry)
        lidt [idt_pf_unmapped]
        TRY "pf+pf", df6, df6_back
df6:    mov eax, [0x00C00010]
df6_back:
        lidt [idt_descriptor]
        CHECK_ESP

        ; benign (#UD) + contributory (#NP for its gate): handled serially, #NP reported
        ; with EXT=1 in its error code (vector 6 * 8 + IDT bit + EXT)
        GATE_PRESENT 6, 0
        TRY "ud+np", sr1, sr1_back
sr1:    ud2
sr1_back:
        GATE_PRESENT 6, 1

        ; contributory (#GP) + #PF (reading its gate, on a not-present page): handled
        ; serially, the #PF is reported and returns to the instruction that raised the #GP
        lidt [idt_gp_unmapped]
        mov ax, 0x48
        TRY "gp+pf", sr2, sr2_back
sr2:    mov ds, ax
sr2_back:
        lidt [idt_descriptor]

        ; INT n is no exception for Table 6-5: INT 0x0D through a not-present gate is a
        ; plain #NP (0x0D*8 + IDT, EXT=0), and so is INT 8 (not a #DF: no shutdown)
        GATE_PRESENT 13, 0
        TRY "int 0x0d+np", sw1, sw1_back
sw1:    int 0x0D
sw1_back:
        GATE_PRESENT 13, 1
        GATE_PRESENT 8, 0
        TRY "int 8+np", sw2, sw2_back
sw2:    int 8
sw2_back:
        GATE_PRESENT 8, 1

        ; #DF itself with its gate not present: triple fault; the last test (see
        ; triple_*.asm for that)
        jmp finish

        align 8
idt_limit_13:
        dw 13 * 8 - 1
        dd idt
; Copies of the IDT that straddle a mapped and a not-present page (made in main):
idt_pf_unmapped:                        ; 0..13 on 0x3FF000 (mapped), 14.. on 0x400000 (not)
        dw NSTUBS * 8 - 1
        dd 0x400000 - 14 * 8
idt_gp_unmapped:                        ; 0..13 on 0x3FE000 (unmapped), 14.. on 0x3FF000
        dw NSTUBS * 8 - 1
        dd 0x3FF000 - 14 * 8
