; The fixture lesson's guest: writes "ok" and a newline to COM1, one byte per OUT
; (one VM exit each), then 1 to isa-debug-exit (status 3).
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
        mov al, 1
        out dx, al
        hlt

message: db "ok", 10, 0
