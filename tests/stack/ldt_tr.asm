; ldt_tr.asm: LLDT and LTR (SDM Vol. 2A LLDT, LTR), for tests/stack/test_ldt_tr.py. A list
; of cases, each a selector loaded by LLDT or LTR from a register or from memory, over a GDT
; of LDTs (byte and page granular, short, not present), TSSs (32- and 16-bit, available,
; not present) and other descriptors. After each case the guest prints six words on COM1,
; in hex: the fault the load raised (vector << 16 | error code, FFFFFFFF for none), SLDT,
; STR, the high dword of the selector's GDT entry (LTR marks a TSS busy there), then the
; fault of loading FS with selector 0C (entry 1 of the LDT now loaded: writable in one LDT,
; read-only in the other) and LAR of 0C (DEADBEEF where LAR fails). Its faults are caught by #NP and #GP
; handlers that resume at the address the case left in `resume`. The cases run in order:
; LTR of a TSS marked busy by an earlier case faults. The same binary boots on
; qemu-system-i386 -kernel (multiboot header). (The last case, LTR of a null selector, is
; #GP(0) by the SDM; QEMU 7.2 loads it.)
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
        mov eax, np_handler             ; interrupt gates for #NP (11) and #GP (13)
        mov [idt + 11 * 8], ax
        shr eax, 16
        mov [idt + 11 * 8 + 6], ax
        mov eax, gp_handler
        mov [idt + 13 * 8], ax
        shr eax, 16
        mov [idt + 13 * 8 + 6], ax
        lidt [idtr]
        mov edi, gdt + 0x18             ; the LDT descriptors, whose bases are labels
        mov eax, ldt0
        mov ecx, 0x17
        mov edx, 0x8200
        call set_desc
        mov edi, gdt + 0x20
        mov eax, ldt1
        mov ecx, 0x0B
        call set_desc
        mov edi, gdt + 0x28
        mov eax, ldt0
        mov ecx, 0x17
        mov edx, 0x0200                 ; not present
        call set_desc
        mov edi, gdt + 0x50
        mov eax, ldt1
        xor ecx, ecx
        mov edx, 0x808200               ; G: limit 0 is FFF
        call set_desc
        mov edi, gdt + 0x58
        mov eax, ldt1
        mov ecx, 0x0F
        mov edx, 0xE200                 ; DPL 3
        call set_desc
        mov esi, cases
.next:  movzx ebx, word [esi]
        cmp bx, 0xFFFF
        je .done
        movzx eax, word [esi + 2]
        add esi, 4
        mov dword [fault], 0xFFFFFFFF
        mov dword [resume], .loaded
        mov [operand], bx
        cmp eax, 1
        je .ltr
        cmp eax, 2
        je .lldt_m
        cmp eax, 3
        je .ltr_m
        lldt bx
        jmp .loaded
.ltr:   ltr bx
        jmp .loaded
.lldt_m:
        lldt [operand]
        jmp .loaded
.ltr_m: ltr [operand]
.loaded:
        mov eax, [fault]
        call hex
        mov eax, 0xFFFFFFFF
        sldt eax
        call hex
        mov eax, 0xFFFFFFFF
        str eax
        call hex
        mov eax, ebx                    ; the GDT entry's high dword (0 past the GDT)
        and eax, 0xFFF8
        cmp eax, gdt_end - gdt
        jb .in
        xor eax, eax
        jmp .entry
.in:    mov eax, [gdt + eax + 4]
.entry: call hex
        mov dword [fault], 0xFFFFFFFF
        mov dword [resume], .read
        mov cx, 0x0C
        mov fs, cx
.read:  mov eax, [fault]
        call hex
        mov eax, 0xDEADBEEF
        lar eax, ecx
        call hex
        mov cx, 0x10
        mov fs, cx
        jmp .next
.done:  mov dx, 0x501
        mov al, 0
        out dx, al
        hlt

np_handler:     ; #NP: note vector and error code, resume where the case said
        push dword 11
        jmp fault_common
gp_handler:
        push dword 13
fault_common:   ; [ESP] the vector, then the error code, EIP, CS, EFLAGS
        push eax
        mov eax, [esp + 4]
        shl eax, 16
        or eax, [esp + 8]
        mov [fault], eax
        mov eax, [resume]
        mov [esp + 12], eax
        pop eax
        add esp, 8
        iretd

set_desc:       ; EDI the entry, EAX its base, ECX its limit, EDX the high dword's rights
        push ebx
        push edx
        mov ebx, eax
        shl ebx, 16
        mov bx, cx
        mov [edi], ebx
        mov ebx, eax
        and ebx, 0xFF000000
        or ebx, edx
        mov edx, eax
        shr edx, 16
        and edx, 0xFF
        or ebx, edx
        mov edx, ecx
        and edx, 0xF0000
        or ebx, edx
        mov [edi + 4], ebx
        pop edx
        pop ebx
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
        dq 0                                ; 18 LDT at ldt0, limit 17 (made by set_desc)
        dq 0                                ; 20 LDT at ldt1, limit 0B: entry 1 past it
        dq 0                                ; 28 LDT at ldt0, not present
        dq 0x0000890000300067               ; 30 32-bit TSS at 30, available
        dq 0x0080810000300000               ; 38 16-bit TSS, available, page granular
        dq 0x0000090000300067               ; 40 32-bit TSS, not present
        dq 0x0000890000300067               ; 48 32-bit TSS, available
        dq 0                                ; 50 LDT at ldt1, limit 0 page granular (FFF)
        dq 0                                ; 58 LDT at ldt1, limit 0F, DPL 3
gdt_end:
gdtr:   dw gdt_end - gdt - 1
        dd gdt

        align 8
ldt0:   dq 0
        dq 0x00CF93000000FFFF               ; 0C data, flat, writable, accessed
        dq 0
ldt1:   dq 0
        dq 0x00CF91000000FFFF               ; 0C data, flat, read-only, accessed

        align 8
idt:    times 14 dq 0x00008E0000080000      ; 32-bit interrupt gates to 08:handler
idt_end:
idtr:   dw idt_end - idt - 1
        dd idt

fault:  dd 0
resume: dd 0
operand:
        dw 0

; (selector, how: 0 LLDT reg, 1 LTR reg, 2 LLDT mem, 3 LTR mem)
cases:
        dw 0x0018, 0                        ; the first LDT: its 0C writable
        dw 0x001B, 2                        ; RPL 3, from memory: SLDT gives 001B
        dw 0x0020, 0                        ; the short LDT: FS's entry past its limit
        dw 0x0050, 0                        ; the second LDT, page granular
        dw 0x0028, 0                        ; not present: #NP(28)
        dw 0x0010, 0                        ; a data segment: #GP(10)
        dw 0x0030, 0                        ; a TSS: #GP(30)
        dw 0x000C, 0                        ; TI = 1: #GP(0C)
        dw 0x0200, 0                        ; past the GDT's limit: #GP(200)
        dw 0x0000, 0                        ; null: LDTR unusable, FS from the LDT #GP(0C)
        dw 0x0003, 2                        ; null with RPL 3
        dw 0x0058, 0                        ; DPL 3 (no privilege check at CPL 0)
        dw 0x0018, 0
        dw 0x0030, 1                        ; LTR: busy from now on
        dw 0x0030, 1                        ; busy: #GP(30)
        dw 0x0038, 3                        ; 16-bit TSS, from memory
        dw 0x0040, 1                        ; not present: #NP(40)
        dw 0x0018, 1                        ; an LDT: #GP(18)
        dw 0x0010, 1                        ; a data segment: #GP(10)
        dw 0x004C, 1                        ; TI = 1: #GP(4C)
        dw 0x0200, 1                        ; past the GDT's limit: #GP(200)
        dw 0x0049, 1                        ; RPL 1: STR gives 0049
        dw 0x0000, 1                        ; null: #GP(0) (QEMU loads it)
        dw 0xFFFF
