; Lesson 8 (shadow paging): a guest with its own page tables, run with EPT off.
;
; The guest builds a page directory (PD) with two page tables: PT0 identity-maps the
; first 4 MiB (code, stack, tables, the VGA buffer at 0xB8000) and PT1 maps the window at
; linear 0x400000. It turns paging on, writes four text cells through the window, reads
; the first back and prints it; then it maps a second page at 0x401000 with paging on
; (a write to its own page table), flushes it with INVLPG, and prints a string from it.
;
; Under shadow paging (kvm_intel ept=0) kvm.ko must see all of this:
; - MOV to CR3 and to CR0 exit (CR_ACCESS): kvm.ko keeps the guest's CR3 (gCR3) for
;   itself and loads the hardware's CR3 with the root of its shadow page tables;
; - the first touch of each page is a #PF exit (EXCEPTION_NMI, vector 14): kvm.ko walks
;   the guest's tables in software and fills the shadow entry (kvm_mmu_page_fault);
; - the guest's page tables are write-protected in the shadows, so the guest's write to
;   PT1 is a #PF exit too: kvm.ko emulates the write and zaps the shadow entry it changes;
; - INVLPG exits, and kvm.ko drops the shadow entry for that address.
; The same binary boots on qemu-system-i386 -kernel (multiboot header below).
bits 32
org 0x100000

COM1        equ 0x3F8
LSR         equ COM1 + 5
LSR_THRE    equ 0x20
DEBUG_EXIT  equ 0x501

PD          equ 0x200000                ; page directory
PT0         equ 0x201000                ; page table for linear 0-4 MiB
PT1         equ 0x202000                ; page table for linear 4-8 MiB
FRAME       equ 0x300000                ; a RAM page
FRAME2      equ 0x301000                ; another RAM page
WINDOW      equ 0x400000                ; linear: PT1[0]
WINDOW2     equ 0x401000                ; linear: PT1[1], mapped later
P_RW        equ 0x003                   ; present, writable
WHITE_BLUE  equ 0x1F

start:
        jmp entry

        align 4
multiboot:                              ; multiboot v1 header, "address fields valid"
        dd 0x1BADB002
        dd 0x00010000
        dd -(0x1BADB002 + 0x00010000)
        dd multiboot                    ; header_addr
        dd 0x100000                     ; load_addr
        dd 0                            ; load_end_addr: whole file
        dd 0                            ; bss_end_addr: no bss
        dd entry                        ; entry_addr

entry:
        mov esp, 0x90000
        lgdt [gdt_descriptor]           ; our own flat GDT: QEMU enters with its own
        jmp 0x08:.reload_cs
.reload_cs:
        mov ax, 0x10
        mov ds, ax
        mov es, ax
        mov ss, ax
        cld

        ; clear PD, PT0 and PT1 (paging is still off: these are plain stores)
        mov edi, PD
        mov ecx, 3 * 1024
        xor eax, eax
        rep stosd
        ; PT0: linear page i -> physical page i, for the first 4 MiB
        mov edi, PT0
        mov eax, P_RW
        mov ecx, 1024
.ident: stosd
        add eax, 0x1000
        loop .ident
        mov dword [PD], PT0 + P_RW
        mov dword [PD + 4], PT1 + P_RW
        ; the window: linear 0x400000 -> FRAME
        mov dword [PT1], FRAME + P_RW
        ; a string in FRAME2, for later
        mov dword [FRAME2], "ok!" | 10 << 24

        mov eax, PD
        mov cr3, eax                    ; gCR3
        mov eax, cr0
        or eax, 0x80010000              ; PG and WP
        mov cr0, eax

        ; four cells through the window
        mov word [WINDOW], WHITE_BLUE << 8 | 'V'
        mov word [WINDOW + 2], WHITE_BLUE << 8 | 'G'
        mov word [WINDOW + 4], WHITE_BLUE << 8 | 'A'
        mov word [WINDOW + 6], WHITE_BLUE << 8 | '!'
        mov al, [WINDOW]                ; read the first character back
        call putc
        mov al, 10
        call putc

        ; map FRAME2 at 0x401000 with paging on: a write to the guest's own page table
        mov dword [PT1 + 4], FRAME2 + P_RW
        invlpg [WINDOW2]
        mov esi, WINDOW2
        mov ecx, 4
.print: lodsb
        call putc
        loop .print

        mov dx, DEBUG_EXIT
        mov al, 0                       ; exit status (0 << 1) | 1 = 1
        out dx, al
        hlt

; putc: send AL on COM1 once the transmitter holding register is empty
putc:
        push edx
        push eax
        mov dx, LSR
.wait:  in al, dx
        test al, LSR_THRE
        jz .wait
        pop eax
        mov dx, COM1
        out dx, al
        pop edx
        ret

        align 8
gdt:    dq 0                            ; null descriptor
        dq 0x00CF9A000000FFFF           ; 0x08: flat 32-bit code, base 0, 4 GiB
        dq 0x00CF92000000FFFF           ; 0x10: flat data
gdt_end:
gdt_descriptor:
        dw gdt_end - gdt - 1
        dd gdt
