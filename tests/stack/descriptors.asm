; descriptors.asm: LAR, LSL, VERR and VERW (32- and 16-bit LAR and LSL), SLDT and STR, for
; tests/stack/test_descriptors.py, over a GDT of every kind of descriptor: code and data of
; each DPL, execute-only, read-only, conforming, byte and page granular, not present, the
; TSSs, the LDT, call, task, interrupt and trap gates and reserved system types; each
; selector with RPL 0 to 3, the null selector, one past the GDT's limit, and three in the
; LDT that reset leaves at linear 0 (limit FFFF), where the guest writes a data segment and
; a call gate and an empty entry first. Before them it prints SLDT and STR (into EAX, zero-extended, and SLDT
; into a word of memory) and the LDT's data descriptor after ES was loaded from it. Per
; selector it prints the six ZF results (from bit 5 down: LAR EAX, LAR AX, LSL EAX, LSL AX,
; VERR, VERW), then what the four loads left (EAX starts at DEADBEEF each time: a failure
; leaves it), all in hex on COM1. The same binary boots on qemu-system-i386 -kernel
; (multiboot header).
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
        ; Entries of the LDT where reset put it (LDTR: base 0, limit FFFF): 0C a flat data
        ; segment, not yet accessed; 14 a 32-bit call gate.
        mov dword [0x08], 0x0000FFFF
        mov dword [0x0C], 0x00CF9200
        mov dword [0x10], 0x00080000
        mov dword [0x14], 0x0000EC00
        mov dword [0x18], 0                 ; 1C an empty entry (QEMU has its BIOS's vectors there)
        mov dword [0x1C], 0
        mov eax, 0xFFFFFFFF
        db 0x0F, 0x00, 0xC0                 ; sldt eax: zero-extended
        call hex
        mov eax, 0xFFFFFFFF
        db 0x0F, 0x00, 0xC8                 ; str eax
        call hex
        mov dword [word_out], 0xFFFFFFFF
        db 0x0F, 0x00, 0x05                 ; sldt [word_out]: a word
        dd word_out
        mov eax, [word_out]
        call hex
        mov ax, 0x0C                        ; ES from the LDT; the load sets its A bit
        mov es, ax
        mov eax, [0x0C]
        call hex
        mov ax, 0x10
        mov es, ax
        mov esi, selectors
.next:  movzx ebx, word [esi]
        cmp bx, 0xFFFF
        je .done
        add esi, 2
        xor ebp, ebp                        ; the ZF bits
        mov eax, 0xDEADBEEF
        db 0x0F, 0x02, 0xC3                 ; lar eax, bx
        call zf_bit
        mov edi, eax
        mov eax, 0xDEADBEEF
        db 0x66, 0x0F, 0x02, 0xC3           ; lar ax, bx
        call zf_bit
        mov ecx, eax
        mov eax, 0xDEADBEEF
        db 0x0F, 0x03, 0xC3                 ; lsl eax, bx
        call zf_bit
        mov edx, eax
        mov eax, 0xDEADBEEF
        db 0x66, 0x0F, 0x03, 0xC3           ; lsl ax, bx
        call zf_bit
        push eax
        db 0x0F, 0x00, 0xE3                 ; verr bx
        call zf_bit
        db 0x0F, 0x00, 0xEB                 ; verw bx
        call zf_bit
        mov eax, ebp
        call hex
        mov eax, edi
        call hex
        mov eax, ecx
        call hex
        mov eax, edx
        call hex
        pop eax
        call hex
        jmp .next
.done:  mov dx, 0x501
        mov al, 0
        out dx, al
        hlt

zf_bit:         ; EBP = EBP << 1 | ZF, flags untouched before the read
        pushfd
        shl ebp, 1
        test byte [esp], 0x40
        jz .z
        or ebp, 1
.z:     popfd
        ret

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
gdt:    dq 0
        dq 0x00CF9B000000FFFF               ; 08 code, flat, readable, accessed
        dq 0x00CF93000000FFFF               ; 10 data, flat, writable, accessed
        dq 0x0001F2AB00002345               ; 18 data DPL 3, writable, byte limit 12345
        dq 0x0080B000000000FF               ; 20 data DPL 1, read-only, page limit FF
        dq 0x00CF98000000FFFF               ; 28 code, execute-only
        dq 0x00CFFE000000FFFF               ; 30 conforming code DPL 3, readable
        dq 0x0000890000100067               ; 38 32-bit TSS, available
        dq 0x00008B0000100067               ; 40 32-bit TSS, busy
        dq 0x0000C20000200FFF               ; 48 LDT, DPL 2
        dq 0x0000EC0000080000               ; 50 32-bit call gate, DPL 3
        dq 0x0000850000380000               ; 58 task gate
        dq 0x00008E0000080000               ; 60 32-bit interrupt gate
        dq 0x0000800000000000               ; 68 system type 0 (reserved)
        dq 0x0000880000000000               ; 70 system type 8 (reserved)
        dq 0x00008D0000000000               ; 78 system type D (reserved)
        dq 0x004F12000000FFFF               ; 80 data, not present
        dq 0x00CF9A000000FFFF               ; 88 code, readable, page limit FFFFF
        dq 0x0000810000100067               ; 90 16-bit TSS, available
        dq 0x0000830000100067               ; 98 16-bit TSS, busy
        dq 0x0000E40000080000               ; A0 16-bit call gate, DPL 3
        dq 0x00008F0000080000               ; A8 32-bit trap gate
        dq 0x00CFD6000000FFFF               ; B0 data DPL 2, expand-down, writable
        dq 0x00CFBA000000FFFF               ; B8 code DPL 1, readable
gdt_end:
gdtr:   dw gdt_end - gdt - 1
        dd gdt

word_out:
        dd 0
selectors:
        dw 0x0000, 0x0003, 0x0FF8, 0x00C0, 0x000C, 0x000F, 0x0014, 0x0017, 0x001C
        dw 0x0008, 0x0009, 0x000A, 0x000B
        dw 0x0010, 0x0011, 0x0012, 0x0013
        dw 0x0018, 0x0019, 0x001A, 0x001B
        dw 0x0020, 0x0021, 0x0022, 0x0023
        dw 0x0028, 0x0029, 0x002A, 0x002B
        dw 0x0030, 0x0031, 0x0032, 0x0033
        dw 0x0038, 0x0039, 0x003A, 0x003B
        dw 0x0040, 0x0041, 0x0042, 0x0043
        dw 0x0048, 0x0049, 0x004A, 0x004B
        dw 0x0050, 0x0051, 0x0052, 0x0053
        dw 0x0058, 0x0059, 0x005A, 0x005B
        dw 0x0060, 0x0061, 0x0062, 0x0063
        dw 0x0068, 0x0069, 0x006A, 0x006B
        dw 0x0070, 0x0071, 0x0072, 0x0073
        dw 0x0078, 0x0079, 0x007A, 0x007B
        dw 0x0080, 0x0081, 0x0082, 0x0083
        dw 0x0088, 0x0089, 0x008A, 0x008B
        dw 0x0090, 0x0091, 0x0092, 0x0093
        dw 0x0098, 0x0099, 0x009A, 0x009B
        dw 0x00A0, 0x00A1, 0x00A2, 0x00A3
        dw 0x00A8, 0x00A9, 0x00AA, 0x00AB
        dw 0x00B0, 0x00B1, 0x00B2, 0x00B3
        dw 0x00B8, 0x00B9, 0x00BA, 0x00BB
        dw 0xFFFF
