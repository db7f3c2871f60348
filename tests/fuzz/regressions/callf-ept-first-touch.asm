; Found while fixing RETF (tests/fuzz): CALL FAR whose second push (the return EIP) is the first
; touch of a page under EPT. Exit status 3 when the frame and ESP are right.
bits 32
org 0x100000
    lgdt [gdtr]
    mov dword [0x103000], 0   ; the CS slot's page is mapped; the EIP slot's (0x102ffc) is not
    mov esp, 0x103004
    call 0x08:target
back:
    mov al, 2
    jmp done
target:
    mov eax, [esp]         ; the return EIP pushed
    cmp eax, back
    jne bad
    mov eax, [esp+4]
    cmp eax, 0x08
    jne bad
    cmp esp, 0x103004 - 8
    jne bad
    mov al, 1
    jmp done
bad:
    mov al, 3
done:
    mov dx, 0x501
    out dx, al
    hlt
gdt: dq 0, 0x00cf9a000000ffff, 0x00cf92000000ffff
gdtr: dw 23
      dd gdt
