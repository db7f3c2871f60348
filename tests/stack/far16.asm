; far16.asm: far CALL, RETF and IRET with a 16-bit operand size (66 9A, 66 FF /3, 66 CB,
; 66 CA, 66 CF), for tests/stack/test_far16.py. They push and pop IP and CS as words, so the calls run
; from code copied below 64 KiB (LOW): a 16-bit return address is IP. What each call and
; return left (ESP inside and after, the words pushed) is printed in hex on COM1; the same
; binary boots on qemu-system-i386 -kernel (multiboot header), and the host's KVM runs the
; instructions on its own processor.
bits 32
org 0x100000

LOW         equ 0x8000
RES         equ 0x7000

start:
        jmp entry

        align 4
multiboot:
        dd 0x1BADB002
        dd 0x00010000
        dd -(0x1BADB002 + 0x00010000)
        dd multiboot
        dd 0x100000
        dd 0
        dd 0
        dd entry

entry:
        mov esp, 0x90000
        lgdt [gdtr]
        jmp 0x08:.cs
.cs:    mov ax, 0x10
        mov ds, ax
        mov es, ax
        mov ss, ax
        cld
        mov esi, blob
        mov edi, LOW
        mov ecx, blob_end - blob
        rep movsb
        jmp 0x08:LOW
back:   mov esi, RES                        ; the calls' values
        mov ecx, 8
.print: lodsd
        call hex
        loop .print
        jmp 0x08:(iret16 - blob + LOW)
back2:  mov esi, RES + 32                   ; the IRETW's (the host's KVM here refuses it)
        mov ecx, 3
.more:  lodsd
        call hex
        loop .more
        mov dx, 0x501
        mov al, 0
        out dx, al
        hlt

; runs at LOW
blob:
        call word 0x08:(f1 - blob + LOW)        ; ptr16:16
        mov [RES], ebx
        mov [RES + 4], esp
        call far word [ptr16 - blob + LOW]      ; m16:16
r2:     mov [RES + 8], ebx
        mov [RES + 12], esp
        call word 0x08:(f2 - blob + LOW)
r3:     mov [RES + 16], ebx
        mov [RES + 20], esp
        mov esp, 0x90000
        jmp 0x08:back
        ; IRETW from a frame of words: IP, CS, FLAGS (OF SF AF CF set); EFLAGS(31:16) kept
iret16: pushfd
        or dword [esp], 0x40000                 ; AC, which the word frame does not hold
        popfd
        push word 0x0893
        push word 0x08
        push word r4 - blob + LOW
        iretw
r4:     mov [RES + 32], esp
        pushfd
        pop eax
        and eax, 0x40FD5
        mov [RES + 36], eax
        pushfd
        and dword [esp], ~0x40000
        popfd
        mov eax, r4 - blob + LOW
        mov [RES + 40], eax
        jmp 0x08:back2
f1:     mov ebx, esp
        mov eax, [esp]                          ; CS << 16 | IP
        mov [RES + 24], eax
        retfw
f2:     mov ebx, esp
        mov eax, [esp]
        mov [RES + 28], eax
        retfw 6
ptr16:  dw f1 - blob + LOW, 0x08
blob_end:

hex:    ; EAX as eight hex digits and a newline on COM1
        push ecx
        mov ecx, 8
.digit: rol eax, 4
        push eax
        and al, 15
        add al, '0'
        cmp al, '9'
        jbe .put
        add al, 7
.put:   mov dx, 0x3F8
        out dx, al
        pop eax
        loop .digit
        mov al, 10
        out dx, al
        pop ecx
        ret

        align 8
gdt:    dq 0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF
gdtr:   dw 23
        dd gdt
