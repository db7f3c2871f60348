; A loop of port writes for benchmarks/exit_bench.py: COUNT times `out dx, al` to the
; 16550's scratch register (COM1 + 7), which QEMU's serial model handles (no output).
; Every write is one exit to userspace and back. Then the guest exits through
; isa-debug-exit. The benchmark replaces COUNT's value.
bits 32
org 0x100000

COM1_SCR    equ 0x3FF
DEBUG_EXIT  equ 0x501
COUNT       equ 2000

start:
        mov esp, 0x90000
        mov ecx, COUNT
        mov dx, COM1_SCR
.loop:  mov al, cl
        out dx, al
        dec ecx
        jnz .loop
        mov dx, DEBUG_EXIT
        mov al, 0
        out dx, al
        hlt
