; triple_df_gate.asm: a double fault whose own gate is not present is a triple fault:
; #NP (segment) -> #NP (its gate not present) -> #DF -> #NP (gate 8 not present) -> shutdown.
%include "common.inc"

main:
        and byte [idt + 11*8 + 5], 0x7F
        and byte [idt + 8*8 + 5], 0x7F
        PRINT_LINE "before the triple fault"
        mov ax, 0x18
        mov ds, ax
        PRINT_LINE "not reached"
        jmp finish
