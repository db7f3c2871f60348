; The fixture lesson's guest: writes "hi" and a newline to COM1, one byte per OUT
; (one VM exit each), then 0 to isa-debug-exit (the run's status is 1).
bits 32
org 0x100000

start:
        mov esi, message
        mov dx, 0x3F8
next:
        lodsb
        test al, al
        jz done
        out dx, al
        jmp next
done:
        mov eax, 0x1234
        mov dx, 0x501
        mov al, 0
        out dx, al
        hlt

message: db "hi", 10, 0
