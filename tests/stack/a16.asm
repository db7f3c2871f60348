; a16.asm: string instructions and LOOPcc with a 16-bit address size (a 0x67 prefix in
; 32-bit code), for tests/stack/test_a16.py. They address with SI and DI and count in CX,
; each wrapping within 64 KiB with the upper half of its register kept (SDM Vol. 2 MOVS,
; LOOPcc: "the address-size attribute"). Each step stores what it left (the registers, the
; memory it wrote, the arithmetic flags) at RES; the guest prints them in hex on COM1, with
; REP OUTSB's own output between. The same binary boots on qemu-system-i386 -kernel
; (multiboot header). vmsim's assembler has no a16 prefix: it is written `db 0x67`.
bits 32
org 0x100000

SRC         equ 0x6000
DST         equ 0x7000
RES         equ 0x5000
NOBODY      equ 0x2E8                       ; COM4's port: nobody is there (reads all ones)

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
        mov edi, SRC                        ; SRC: 3, 10, 17 ... (32 bytes)
        mov ecx, 32
        mov al, 3
.fill:  stosb
        add al, 7
        loop .fill
        mov dword [SRC + 0x100], '!61a'     ; "a16!" backwards: REP OUTSB with DF set
        mov edi, DST                        ; DST and the top and bottom of 64 KiB: zero
        mov ecx, 16
        xor eax, eax
        rep stosd
        mov [0xFFF8], eax
        mov [0xFFFC], eax
        mov [0x0000], eax
        mov [0x0004], eax
        mov ebp, RES

        ; 1. REP MOVSB: 16 bytes SRC -> DST
        mov esi, 0xA5A50000 + SRC
        mov edi, 0x5A5A0000 + DST
        mov ecx, 0x12340010
        db 0x67
        rep movsb
        call keep_ecx_esi_edi
        mov eax, [DST]
        call keep
        mov eax, [DST + 12]
        call keep

        ; 2. REP STOSW downwards across 0: words at 2, 0, FFFE, FFFC; DI ends at FFFA
        mov edi, 0x77770002
        mov ecx, 0x00010004
        mov eax, 0x1111BEEF
        std
        db 0x67
        rep stosw
        cld
        call keep_ecx_esi_edi
        mov eax, [0xFFFC]
        call keep
        mov eax, [0x0000]
        call keep

        ; 3. LODSD at SI = FFFE reads across 64 KiB; SI wraps to 2
        mov dword [0xFFFE], 0x44332211
        mov esi, 0x9999FFFE
        db 0x67
        lodsd
        call keep
        call keep_ecx_esi_edi

        ; 4. REPNE SCASB finds 38 (SRC[5])
        mov edi, 0xCAFE0000 + SRC
        mov ecx, 0xCAFE0020
        mov al, 38
        db 0x67
        repne scasb
        call keep_flags
        call keep_ecx_esi_edi

        ; 5. REPE CMPSW: DST holds 8 of SRC's words, then zeros
        mov esi, 0x11110000 + SRC
        mov edi, 0x22220000 + DST
        mov ecx, 0x3333000C
        db 0x67
        repe cmpsw
        call keep_flags
        call keep_ecx_esi_edi

        ; 6. REP OUTSB of "a16!" to COM1, downwards (kvm.ko's emulator under KVM)
        mov esi, 0x44440000 + SRC + 0x103
        mov ecx, 0x44440004
        mov dx, 0x3F8
        std
        db 0x67
        rep outsb
        cld
        mov al, 10
        out dx, al
        call keep_ecx_esi_edi

        ; 7. REP INSW from a port nobody claims (all ones), CX = 3
        mov edi, 0x66660000 + SRC + 0x200
        mov ecx, 0xABCD0003
        mov dx, NOBODY
        db 0x67
        rep insw
        call keep_ecx_esi_edi
        mov eax, [SRC + 0x204]
        call keep

        ; 8. LOOP from CX = 0: 65,536 times, ECX's upper half kept
        mov ecx, 0xABCD0000
        xor ebx, ebx
.l8:    inc ebx
        db 0x67
        loop .l8
        mov eax, ebx
        call keep
        call keep_ecx_esi_edi

        ; 9. LOOPNE ends when EBX reaches 3 (ZF), LOOPE when CX reaches 0
        mov ecx, 0x55550005
        xor ebx, ebx
.l9:    inc ebx
        cmp ebx, 3
        db 0x67
        loopne .l9
        mov eax, ebx
        call keep
        call keep_ecx_esi_edi
        mov ecx, 0x77770004
        xor ebx, ebx
.l9e:   inc ebx
        cmp eax, eax
        db 0x67
        loope .l9e
        mov eax, ebx
        call keep
        call keep_ecx_esi_edi

        ; 10. JCXZ with CX = 0 and ECX not 0: taken
        mov ecx, 0x10000
        xor eax, eax
        db 0x67
        jcxz .z
        dec eax
.z:     call keep

        mov esi, RES                        ; print what was kept
.print: cmp esi, ebp
        jae .done
        lodsd
        call hex
        jmp .print
.done:  mov dx, 0x501
        mov al, 0
        out dx, al
        hlt

keep:   ; EAX at [EBP], EBP on
        mov [ebp], eax
        add ebp, 4
        ret

keep_ecx_esi_edi:
        mov eax, ecx
        call keep
        mov eax, esi
        call keep
        mov eax, edi
        jmp keep

keep_flags:     ; the arithmetic flags (CF PF AF ZF SF OF)
        pushfd
        pop eax
        and eax, 0x8D5
        jmp keep

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
