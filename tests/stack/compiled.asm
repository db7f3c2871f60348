; compiled.asm: instructions compilers emit that a family-6 processor without SSE, BMI1 or
; CET runs all the same, for tests/stack/test_compiled.py: ENDBR32 (-fcf-protection puts it
; at the top of every function), the multi-byte NOPs of code alignment, the rest of the
; hint-NOP space 0F 18-0F 1F (PREFETCHh, CLDEMOTE, reserved NOPs), PAUSE, REP RET, and
; REP BSF / REP BSR (TZCNT and LZCNT's encodings, BSF and BSR on such a processor: a zero
; source leaves the destination and sets ZF). What each part left is printed in hex on
; COM1; the same binary boots on qemu-system-i386 -kernel (its default CPU has none of those
; features either). vmsim's assembler knows few of these forms: they are written as bytes.
bits 32
org 0x100000

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
        mov eax, 0x11111111
        call func
        call hex                            ; 22222222: the function ran, RET took it back

        xor ebx, ebx
        mov esi, 0x3000000                  ; nothing there: a hint never touches memory
        db 0x90
        db 0x66, 0x90
        db 0x0F, 0x1F, 0x00
        db 0x0F, 0x1F, 0x40, 0x00
        db 0x0F, 0x1F, 0x44, 0x00, 0x00
        db 0x66, 0x0F, 0x1F, 0x44, 0x00, 0x00
        db 0x0F, 0x1F, 0x80, 0x00, 0x00, 0x00, 0x00
        db 0x0F, 0x1F, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00
        db 0x66, 0x0F, 0x1F, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00
        db 0x66, 0x2E, 0x0F, 0x1F, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00
        db 0x0F, 0x18, 0x06                 ; prefetchnta [esi]
        db 0x0F, 0x18, 0x0E                 ; prefetcht0 [esi]
        db 0x0F, 0x19, 0x06                 ; reserved NOPs
        db 0x0F, 0x1A, 0x06
        db 0x0F, 0x1B, 0xC3
        db 0x0F, 0x1C, 0x06                 ; cldemote [esi]
        db 0x0F, 0x1D, 0x46, 0x10
        db 0x0F, 0x1E, 0xFA
        db 0xF3, 0x0F, 0x1E, 0xC8           ; rdsspd eax (a NOP without CET: EAX kept)
        db 0xF3, 0x90                       ; pause
        lea eax, [ebx + 1]
        call hex                            ; 00000001

        mov ecx, 0x00F00000
        mov edx, 0xDEAD
        db 0xF3, 0x0F, 0xBC, 0xD1           ; rep bsf edx, ecx: 20
        call keep_edx_zf
        xor ecx, ecx
        db 0xF3, 0x0F, 0xBC, 0xD1           ; a zero source: EDX kept, ZF set
        call keep_edx_zf
        mov ecx, 0x00F00000
        db 0xF3, 0x0F, 0xBD, 0xD1           ; rep bsr edx, ecx: 23
        call keep_edx_zf
        xor ecx, ecx
        mov edx, 0xBEEF
        db 0xF3, 0x0F, 0xBD, 0xD1
        call keep_edx_zf
        mov edx, 0x12345678
        mov ecx, 0x0100
        db 0x66, 0xF3, 0x0F, 0xBC, 0xD1     ; rep bsf dx, cx: 8, the upper half kept
        call keep_edx_zf

        mov dx, 0x501
        mov al, 0
        out dx, al
        hlt

func:   db 0xF3, 0x0F, 0x1E, 0xFB           ; endbr32
        add eax, 0x11111111
        db 0xF3, 0xC3                       ; rep ret

keep_edx_zf:    ; EDX, then ZF (0x40 or 0)
        pushfd
        mov eax, edx
        call hex
        pop eax
        and eax, 0x40
        jmp hex

hex:    ; EAX as eight hex digits and a newline on COM1
        push ecx
        push edx
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
        pop edx
        pop ecx
        ret

        align 8
gdt:    dq 0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF
gdtr:   dw 23
        dd gdt
