; Lesson 9 (EPT): two address spaces, switched with CR3, the same guest under EPT and
; under shadow paging.
;
; Two page directories, PD_A and PD_B, share PT0 (linear 0-4 MiB, identity) and map the
; window at linear 0x400000 through their own page tables onto FRAME_A and FRAME_B. The
; guest switches between them ROUNDS times, adding 1 to the counter in A's window and 2
; to the counter in B's, then prints both counters.
;   At the start, with paging on in A, it reads 4 bytes at linear 0x401000 once (EPT!).
; - Under EPT the guest owns its CR3 and its page tables: switching address spaces costs
;   no VM exit. kvm.ko only sees the first touch of each guest-physical page (an
;   EPT_VIOLATION) and the CR0 write that turns paging on. The hardware pays instead: a
;   TLB miss walks the guest's tables and, for every guest-physical address on the way,
;   the EPT tables (2 guest + 12 EPT references for a 4 KiB page).
; - Under shadow paging every MOV to CR3 exits (CR_ACCESS), and so do the first touches
;   of pages in each address space (#PF).
; The same binary boots on qemu-system-i386 -kernel (multiboot header below).
bits 32
org 0x100000

COM1        equ 0x3F8
LSR         equ COM1 + 5
LSR_THRE    equ 0x20
DEBUG_EXIT  equ 0x501

PD_A        equ 0x200000                ; address space A: page directory
PD_B        equ 0x201000                ; address space B: page directory
PT0         equ 0x202000                ; shared: linear 0-4 MiB, identity
PT_A        equ 0x203000                ; A: linear 4-8 MiB
PT_B        equ 0x204000                ; B: linear 4-8 MiB
FRAME_A     equ 0x300000                ; A's page at the window
FRAME_B     equ 0x301000                ; B's page at the window
FRAME_P     equ 0x302000                ; A's page at the probe
WINDOW      equ 0x400000                ; linear
PROBE       equ 0x401000                ; linear: read once, one TLB miss, one 2-D walk
P_RW        equ 0x003                   ; present, writable
ROUNDS      equ 64                      ; context switches: 2 per round

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

        ; the tables, built with paging off (the counters too: both start at 0)
        mov edi, PD_A
        mov ecx, 5 * 1024               ; PD_A PD_B PT0 PT_A PT_B
        xor eax, eax
        rep stosd
        mov dword [FRAME_A], 0
        mov dword [FRAME_B], 0
        mov dword [FRAME_P], "EPT!"
        mov edi, PT0
        mov eax, P_RW
        mov ecx, 1024
.ident: stosd                           ; linear page i -> physical page i
        add eax, 0x1000
        loop .ident
        mov dword [PD_A], PT0 + P_RW
        mov dword [PD_A + 4], PT_A + P_RW
        mov dword [PD_B], PT0 + P_RW
        mov dword [PD_B + 4], PT_B + P_RW
        mov dword [PT_A], FRAME_A + P_RW
        mov dword [PT_A + 4], FRAME_P + P_RW
        mov dword [PT_B], FRAME_B + P_RW

        mov eax, PD_A
        mov cr3, eax
        mov eax, cr0
        or eax, 0x80010000              ; PG and WP
        mov cr0, eax

        ; the probe: one read of linear PROBE, whose pages EPT already maps
        mov edx, [PROBE]
        mov ecx, 4
.probe: mov al, dl
        call putc
        shr edx, 8
        loop .probe
        mov al, 10
        call putc

        ; ROUNDS rounds: A adds 1 to its counter, B adds 2 to its own
        mov ecx, ROUNDS
.round: mov eax, PD_A
        mov cr3, eax                    ; switch to A
        add dword [WINDOW], 1
        mov eax, PD_B
        mov cr3, eax                    ; switch to B
        add dword [WINDOW], 2
        loop .round

        ; report: "A=xxxxxxxx B=xxxxxxxx"
        mov al, 'A'
        mov ebx, PD_A
        call report
        mov al, ' '
        call putc
        mov al, 'B'
        mov ebx, PD_B
        call report
        mov al, 10
        call putc

        mov dx, DEBUG_EXIT
        mov al, 0                       ; exit status (0 << 1) | 1 = 1
        out dx, al
        hlt

; report: print AL, '=', and the counter at WINDOW in the address space whose PD is EBX
report:
        call putc
        mov al, '='
        call putc
        mov cr3, ebx
        mov edx, [WINDOW]
        mov ecx, 8
.digit: rol edx, 4
        mov al, dl
        and al, 0x0F
        add al, '0'
        cmp al, '9'
        jbe .put
        add al, 'a' - '0' - 10
.put:   call putc
        loop .digit
        ret

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
