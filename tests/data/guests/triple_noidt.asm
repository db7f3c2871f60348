; triple_noidt.asm: an exception with an empty IDT (limit 0) is a triple fault
; (SDM Vol. 3A 6.15 "Interrupt 8"): #UD -> #GP (vector 6 beyond the IDT limit, benign +
; contributory: delivered) -> #GP (vector 13 beyond the limit: contributory + contributory)
; -> #DF -> #GP while delivering #DF -> shutdown. QEMU with -no-reboot then exits (status
; 0); vmsim stops with StopReason.SHUTDOWN. The output so far is kept.
%include "common.inc"

main:
        PRINT_LINE "before the triple fault"
        lidt [no_idt]
        ud2
        PRINT_LINE "not reached"
        jmp finish

        align 8
no_idt: dw 0
        dd 0
