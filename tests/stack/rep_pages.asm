; rep_pages.asm: REP STOS, MOVS, INS and OUTS over runs of pages that differ from one to
; the next, for tests/stack/test_rep_pages.py (vmsim's page-at-a-time REP must do what the element
; by element one does, wherever a page changes what a store does).
;
; Linear 0x400000-0x40FFFF (16 pages) is mapped through PT to physical frames in a
; scrambled order (never contiguous), except:
; - page 3: not present; the #PF handler logs the fault and maps it;
; - page 6: the VGA text buffer (MMIO: each store an exit to QEMU's device under KVM);
; - page 8: read-only, CR0.WP set; the #PF handler logs the fault and makes it writable;
; - page 13: the frame of page 2 again (an alias: a copy into it changes its source);
; - page 16: physical 32 MiB, where nothing is (stores dropped); page 17: frame 16.
; Then STOS and MOVS up and down across them, a MOVS whose runs overlap, and a STOSB over
; code that runs next (self-modifying); then REP INS and OUTS at a port nobody claims
; across them (on bare metal, a page at a time too); then REPE / REPNE SCAS and CMPS and
; REP LODS across them, whose ECX, ESI, EDI and flags (EAX for LODS) the guest keeps in a
; page it hashes. The handler logs CR2, ECX, ESI and
; EDI; the guest prints the log and a hash of each frame and of the VGA page on COM1, and the test reads
; them too. The same binary boots on qemu-system-i386 -kernel (multiboot header), an
; oracle for what the string instructions leave.
bits 32
org 0x100000

DEBUG_EXIT  equ 0x501
PD          equ 0x200000
PT          equ 0x201000
LOG         equ 0x202000                ; [count] then 4 dwords a fault
FRAMES      equ 0x300000                ; 16 frames
WINDOW      equ 0x400000
VGA         equ 0xB8000
P_W         equ 0x003
P_RO        equ 0x001

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
        lgdt [gdt_descriptor]
        jmp 0x08:.cs
.cs:    mov ax, 0x10
        mov ds, ax
        mov es, ax
        mov ss, ax
        cld
        ; IDT: every vector to `unexpected`, #PF (14) to `pf`
        mov ecx, 32
        mov eax, unexpected
.idt:   mov [idt + ecx * 8 - 8], ax
        mov word [idt + ecx * 8 - 6], 0x08
        mov word [idt + ecx * 8 - 4], 0x8E00
        shr eax, 16
        mov [idt + ecx * 8 - 2], ax
        mov eax, unexpected
        loop .idt
        mov eax, pf
        mov [idt + 14 * 8], ax
        shr eax, 16
        mov [idt + 14 * 8 + 6], ax
        lidt [idt_descriptor]

        ; tables, with paging off
        mov edi, PD
        mov ecx, 3 * 1024
        xor eax, eax
        rep stosd
        mov dword [PD], 0x083           ; 0-4 MiB: one 4 MiB page, identity
        mov dword [PD + 4], PT + P_W    ; 4-8 MiB: PT
        xor ecx, ecx
.pt:    movzx eax, byte [order + ecx]
        shl eax, 12
        add eax, FRAMES + P_W
        mov [PT + ecx * 4], eax
        inc ecx
        cmp ecx, 16
        jb .pt
        and dword [PT + 3 * 4], ~1      ; not present
        mov dword [PT + 6 * 4], VGA + P_W
        and dword [PT + 8 * 4], ~2      ; read-only
        mov eax, [PT + 2 * 4]
        mov [PT + 13 * 4], eax          ; page 13 is page 2's frame
        mov dword [PT + 16 * 4], 0x2000000 + P_W
        mov dword [PT + 17 * 4], FRAMES + 16 * 4096 + P_W
        mov eax, cr4
        or eax, 0x10
        mov cr4, eax
        mov eax, PD
        mov cr3, eax
        mov eax, cr0
        or eax, 0x80010000              ; PG, WP
        mov cr0, eax

        ; 1: STOSD up from page 0 into page 15, over every kind of page
        mov edi, WINDOW + 0x10
        mov ecx, (16 * 4096 - 0x30) / 4
        mov eax, 0x11223344
        rep stosd
        mov eax, [WINDOW + 6 * 4096 + 0x100]    ; what the VGA page holds now
        mov [LOG + 0xF00], eax
        ; 2: STOSW down, from mid page 12 to mid page 1, not aligned
        std
        mov edi, WINDOW + 12 * 4096 + 0x801
        mov ecx, (11 * 4096) / 2
        mov eax, 0xA5A55A5A
        rep stosw
        cld
        mov eax, [WINDOW + 6 * 4096 + 0xFFC]
        mov [LOG + 0xF04], eax
        ; 3: MOVSD up, pages 0-4 onto pages 9-13 (13 is page 2's frame: the copy
        ;    rewrites part of its own source as it goes)
        mov esi, WINDOW + 0x20
        mov edi, WINDOW + 9 * 4096 + 0x24
        mov ecx, (5 * 4096 - 0x60) / 4
        rep movsd
        ; 4: MOVSB up onto itself, 3 bytes on: the first bytes repeat across 2.5 pages
        mov dword [WINDOW + 10 * 4096 - 4], 0x04030201
        mov esi, WINDOW + 10 * 4096 - 4
        mov edi, WINDOW + 10 * 4096 - 1
        mov ecx, 10 * 1024
        rep movsb
        ; 5: MOVSD down, pages 14-15 onto pages 4-7 (VGA among them), then VGA onto RAM
        std
        mov esi, WINDOW + 15 * 4096 + 0xFF0
        mov edi, WINDOW + 7 * 4096 + 0x7F8
        mov ecx, (2 * 4096 + 0x700) / 4
        rep movsd
        cld
        mov esi, WINDOW + 6 * 4096
        mov edi, WINDOW + 14 * 4096 + 2
        mov ecx, 4096 / 2
        rep movsw
        ; 6: STOSB over the code that runs next: it becomes NOPs, and the INC survives
        mov edi, patch
        mov ecx, patch_end - patch
        mov al, 0x90
        rep stosb
patch:  mov byte [LOG + 0xFF0], 0xEE    ; (overwritten before it runs)
        mov byte [LOG + 0xFF1], 0xEE
patch_end:
        inc byte [LOG + 0xFF2]
        ; 7: STOSD from page 15 through nothing (page 16) into page 17
        mov edi, WINDOW + 15 * 4096 + 0xF00
        mov ecx, (4096 + 0x200) / 4
        mov eax, 0xC0FFEE00
        rep stosd
        ; 8: MOVSD from page 0 into nothing (page 16)
        mov esi, WINDOW
        mov edi, WINDOW + 16 * 4096 + 0x8
        mov ecx, 0x3F0
        rep movsd
        ; 9: INSW down from a port nobody claims (COM4's): all ones from mid page 12 to
        ;    mid page 5, over RAM, the VGA page and page 11, made not present (a fault)
        and dword [PT + 11 * 4], ~1
        invlpg [WINDOW + 11 * 4096]
        std
        mov dx, 0x2E8
        mov edi, WINDOW + 12 * 4096 + 0x7FE
        mov ecx, (7 * 4096) / 2
        rep insw
        cld
        ; 10: OUTSD to it from mid page 1 to mid page 8 (the loads alone: VGA's, and page
        ;     4's, made not present: a fault)
        and dword [PT + 4 * 4], ~1
        invlpg [WINDOW + 4 * 4096]
        mov esi, WINDOW + 4096 + 0x404
        mov ecx, (7 * 4096) / 4
        rep outsd
        mov [LOG + 0xF08], esi
        ; 11: MOVSW up from the VGA page into page 7, made not present, and STOSD down from
        ;     the VGA page into page 5, made not present: under KVM each element that
        ;     touches VGA is kvm.ko's emulator's, and so is the one that faults
        and dword [PT + 7 * 4], ~1
        invlpg [WINDOW + 7 * 4096]
        mov esi, WINDOW + 6 * 4096 + 0x10
        mov edi, WINDOW + 7 * 4096 - 0x20
        mov ecx, 0x100
        rep movsw
        and dword [PT + 5 * 4], ~1
        invlpg [WINDOW + 5 * 4096]
        std
        mov edi, WINDOW + 6 * 4096 + 0x10
        mov ecx, 0x100
        mov eax, 0x31323334
        rep stosd
        cld
        ; a run longer than a REP chunk (4096), over RAM only: the budget counts chunks
        mov edi, WINDOW + 9 * 4096
        mov ecx, 5000
        mov eax, 0x77665544
        rep stosd
        ; 12: REPE SCASD up from page 9 while EAX's, across page 10 made not present (a
        ;     fault) into page 13, past the 5000 the STOSD stored (ECX, ESI, EDI and
        ;     EFLAGS after each compare are kept in page 14, at 0x800 on)
        and dword [PT + 10 * 4], ~1
        invlpg [WINDOW + 10 * 4096]
        mov edi, WINDOW + 9 * 4096
        mov ecx, 6000
        repe scasd
        mov ebx, WINDOW + 14 * 4096 + 0x800
        call keep
        ; 13: REPNE SCASB down from page 7 into the VGA page for a byte 0x31 (the STOSD
        ;     down in 11 stored 0x31323334 there)
        std
        mov edi, WINDOW + 7 * 4096 + 0x40
        mov ecx, 0x2000
        mov al, 0x31
        repne scasb
        cld
        call keep
        ; 14: REPE CMPSD of page 16 (nothing there: zeros) against page 14, zeroed up to
        ;     what 12 and 13 kept there
        mov edi, WINDOW + 14 * 4096
        mov ecx, 0x200
        xor eax, eax
        rep stosd
        mov esi, WINDOW + 16 * 4096 + 0x10
        mov edi, WINDOW + 14 * 4096
        mov ecx, 0x300
        repe cmpsd
        call keep
        ; 15: REPE CMPSW down over page 2 against page 13 (the same frame: equal), then
        ;     page 1 against page 12; and REPNE CMPSB over pages 0 and 15 (all different
        ;     at first: 15 holds C0FFEE00 from 7)
        std
        mov esi, WINDOW + 2 * 4096 + 0x100
        mov edi, WINDOW + 13 * 4096 + 0x100
        mov ecx, 0x1000
        repe cmpsw
        cld
        call keep
        mov esi, WINDOW + 0 * 4096 + 0x80
        mov edi, WINDOW + 15 * 4096 + 0xF00
        mov ecx, 0x200
        repne cmpsb
        call keep
        ; 16: REP LODSD up from page 4 through the VGA page to page 7 (EAX: the last),
        ;     and REP LODSW down from page 17 through page 16 (nothing) into page 15
        mov esi, WINDOW + 4 * 4096 + 0x20
        mov ecx, 3 * 4096 / 4
        rep lodsd
        call keep
        mov [ebx - 4], eax
        std
        mov esi, WINDOW + 17 * 4096 + 0x100
        mov ecx, 4096 / 2 + 0x100
        rep lodsw
        cld
        call keep
        mov [ebx - 4], eax
        ; report: the faults, a hash of each frame and of the VGA page, the SMC bytes
        mov ebx, 0
.faults:
        cmp ebx, [LOG]
        jae .hashes
        mov al, 'f'
        call putc
        mov ecx, 4
        mov esi, ebx
        shl esi, 4
        add esi, LOG + 4
.fword: mov al, ' '
        call putc
        lodsd
        call puthex
        loop .fword
        call newline
        inc ebx
        jmp .faults
.hashes:
        mov esi, FRAMES
        mov ebx, 17
.frame: call hash_page
        dec ebx
        jnz .frame
        mov esi, WINDOW + 6 * 4096
        call hash_page
        mov eax, [LOG + 0xF00]
        call puthex
        mov eax, [LOG + 0xF04]
        call puthex
        mov eax, [LOG + 0xF08]
        call puthex
        mov eax, [LOG + 0xFF0]
        call puthex
        call newline
        mov al, 0
        mov dx, DEBUG_EXIT
        out dx, al
        hlt

hash_page:      ; ESI: a page; prints its FNV-1 hash by dwords (h = h * prime ^ dword)
        mov edx, 0x811C9DC5
        mov ecx, 1024
.h:     lodsd
        imul edx, edx, 0x01000193
        xor edx, eax
        loop .h
        mov eax, edx
        call puthex
        mov al, ' '
        jmp putc

puthex:         ; EAX as 8 hex digits
        push ecx
        push eax
        mov ecx, 8
.d:     rol eax, 4
        push eax
        and al, 0x0F
        add al, '0'
        cmp al, '9'
        jbe .p
        add al, 'a' - '0' - 10
.p:     call putc
        pop eax
        loop .d
        pop eax
        pop ecx
        ret

newline:
        mov al, 10
putc:           ; AL to COM1 once its THR is empty
        push edx
        push eax
        mov dx, 0x3FD
.w:     in al, dx
        test al, 0x20
        jz .w
        pop eax
        mov dx, 0x3F8
        out dx, al
        pop edx
        ret

keep:   ; ECX, ESI, EDI and EFLAGS to [EBX], which moves on past them
        pushfd
        mov [ebx], ecx
        mov [ebx + 4], esi
        mov [ebx + 8], edi
        pop dword [ebx + 12]
        add ebx, 16
        ret

pf:     ; log CR2 ECX ESI EDI, then map the page or make it writable, and retry
        push eax
        push ebx
        mov ebx, [LOG]
        shl ebx, 4
        mov eax, cr2
        mov [LOG + 4 + ebx], eax
        mov [LOG + 8 + ebx], ecx
        mov [LOG + 12 + ebx], esi
        mov [LOG + 16 + ebx], edi
        inc dword [LOG]
        mov eax, cr2
        shr eax, 12
        and eax, 0x3FF
        or dword [PT + eax * 4], P_W
        mov eax, cr2
        invlpg [eax]
        pop ebx
        pop eax
        add esp, 4                      ; the error code
        iret

unexpected:
        mov al, 3
        mov dx, DEBUG_EXIT
        out dx, al
        hlt

order:  db 7, 12, 3, 15, 0, 9, 14, 5, 1, 11, 6, 2, 13, 8, 10, 4

        align 8
gdt:    dq 0
        dq 0x00CF9A000000FFFF
        dq 0x00CF92000000FFFF
gdt_end:
gdt_descriptor:
        dw gdt_end - gdt - 1
        dd gdt
idt:    times 32 dq 0
idt_descriptor:
        dw 32 * 8 - 1
        dd idt
