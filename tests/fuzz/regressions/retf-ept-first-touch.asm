; Found by tests/fuzz (EPT vs shadow on a mutated guest): RETF whose CS slot is on a page
; the EPT has not mapped yet. Exit status 3 when RETF pops the right EIP and CS.
bits 32
org 0x100000
    lgdt [gdtr]
    mov esp, frame
    retf               ; EIP from 0x100ffc, CS from 0x101000 (a page not touched yet)
good:
    mov al, 1          ; status (1 << 1) | 1 = 3 when RETF popped the right EIP
    mov dx, 0x501
    out dx, al
    hlt
gdt: dq 0, 0x00cf9a000000ffff, 0x00cf92000000ffff
gdtr: dw 23
      dd gdt
    times 0xffc - ($ - $$) db 0xf4
frame:
    dd good
    dd 0x08
