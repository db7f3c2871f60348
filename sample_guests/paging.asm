; paging.asm: the guest's own page tables: two address spaces switched with CR3, a PTE
; changed and flushed with INVLPG, a 4 MiB page, and the accessed/dirty bits the MMU sets.
;
; What it shows about virtualization (run it with --stats, with --paging ept and shadow):
; - With EPT the guest owns its page tables and CR3: loading CR3, editing PTEs and INVLPG
;   cause no VM exit at all. Only turning paging on exits: CR0.PG and CR4.PSE are bits
;   KVM must see (CR_ACCESS, reason 28), so it can switch its view of the guest's MMU.
;   The hardware then walks two levels of tables for every TLB miss: the guest's (linear
;   to guest-physical) and EPT (guest-physical to host-physical).
; - With shadow paging (kvm_intel ept=0) kvm.ko must see all of it: every MOV to CR3 exits,
;   INVLPG exits, the first touch of each page is a #PF exit that fills a shadow entry,
;   and writes to the (write-protected) guest page tables are #PF exits that kvm.ko
;   emulates.
; - The guest cannot tell: it prints the same lines in both modes, on bare metal and on
;   qemu-system-i386.
; Layout: PD_A and PD_B map 0-4 MiB with one 4 MiB page (identity), and linear 4-8 MiB
; through their own page table (PT_A, PT_B): linear 0x400000 is frame A in one address
; space and frame B in the other. PD_A also maps linear 8-12 MiB with a 4 MiB page onto
; physical 0-4 MiB, an alias of the identity mapping.
bits 32
org 0x100000

COM1        equ 0x3F8
LSR         equ COM1 + 5
LSR_THRE    equ 0x20
DEBUG_EXIT  equ 0x501

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

PD_A        equ 0x200000
PD_B        equ 0x201000
PT_A        equ 0x202000
PT_B        equ 0x203000
FRAME_A     equ 0x300000
FRAME_B     equ 0x301000
FRAME_C     equ 0x302000
WINDOW      equ 0x400000                ; linear: one 4 KiB page, per address space
ALIAS       equ 0x800000                ; linear: 4 MiB page onto physical 0
PTE_P_W     equ 0x003
PDE_4M      equ 0x083                   ; present, writable, page size (4 MiB)

        ; tables and frames, built with paging still off
        mov edi, PD_A
        mov ecx, 4 * 1024               ; PD_A PD_B PT_A PT_B
        xor eax, eax
        rep stosd
        mov dword [PD_A], PDE_4M
        mov dword [PD_A + 4], PT_A + PTE_P_W
        mov dword [PD_A + 8], PDE_4M    ; linear 8 MiB -> physical 0
        mov dword [PD_B], PDE_4M
        mov dword [PD_B + 4], PT_B + PTE_P_W
        mov dword [PT_A], FRAME_A + PTE_P_W
        mov dword [PT_B], FRAME_B + PTE_P_W
        mov dword [FRAME_A], "A-1"
        mov dword [FRAME_B], "B-1"
        mov dword [FRAME_C], "C-1"

        mov eax, cr4
        or eax, 0x10                    ; CR4.PSE: 4 MiB pages
        mov cr4, eax
        mov eax, PD_A
        mov cr3, eax
        mov eax, cr0
        or eax, 0x80000000              ; CR0.PG
        mov cr0, eax
        mov esi, s_on
        call puts

        ; the same linear address in two address spaces
        mov esi, s_in_a
        call puts
        mov esi, WINDOW
        call puts
        call newline
        mov eax, PD_B
        mov cr3, eax
        mov esi, s_in_b
        call puts
        mov esi, WINDOW
        call puts
        call newline

        ; a PTE changed, then INVLPG: the next access walks again and sees frame C
        mov dword [PT_B], FRAME_C + PTE_P_W
        invlpg [WINDOW]
        mov esi, s_invlpg
        call puts
        mov esi, WINDOW
        call puts
        call newline

        ; accessed and dirty bits: PT_B[0] was read (A), now written (D)
        mov esi, s_pte_read
        call puts
        mov eax, [PT_B]
        and eax, 0x60
        call puthex8
        call newline
        mov byte [WINDOW + 2], '2'
        mov esi, s_pte_write
        call puts
        mov eax, [PT_B]
        and eax, 0x60
        call puthex8
        mov esi, s_now
        call puts
        mov esi, WINDOW
        call puts
        call newline

        ; back to A; the 4 MiB alias: linear ALIAS + x is physical x
        mov eax, PD_A
        mov cr3, eax
        mov esi, s_alias
        call puts
        mov esi, ALIAS + FRAME_A
        call puts
        mov byte [ALIAS + FRAME_A + 2], '3'     ; write through the alias ...
        mov esi, s_alias_w
        call puts
        mov esi, WINDOW                 ; ... read through the 4 KiB mapping
        call puts
        call newline
        mov esi, s_pde_4m
        call puts
        mov eax, [PD_A + 8]
        and eax, 0xE0                   ; PS, D, A
        call puthex8
        call newline

        ; paging off again: linear is physical
        mov eax, cr0
        and eax, 0x7FFFFFFF
        mov cr0, eax
        mov esi, s_off
        call puts
        mov esi, FRAME_C
        call puts
        call newline
        mov al, 0
        jmp exit

s_on:       db "paging on: CR3 = PD_A", 10, 0
s_in_a:     db "address space A, linear 0x400000: ", 0
s_in_b:     db "address space B, linear 0x400000: ", 0
s_invlpg:   db "PT_B[0] -> frame C, invlpg: ", 0
s_pte_read: db "PT_B[0] A/D bits after a read: ", 0
s_pte_write: db "PT_B[0] A/D bits after a write: ", 0
s_now:      db ", frame C now ", 0
s_alias:    db "4 MiB page, linear 0x800000 + 0x300000: ", 0
s_alias_w:  db ", after a write there, linear 0x400000: ", 0
s_pde_4m:   db "PD_A[2] (4 MiB page) PS/D/A bits: ", 0
s_off:      db "paging off, physical 0x302000: ", 0

; -- serial output (the same in every sample guest) ----------------------------------------

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

; puts: send the zero-terminated string at ESI
puts:
        push eax
        push esi
.next:  lodsb
        test al, al
        jz .done
        call putc
        jmp .next
.done:  pop esi
        pop eax
        ret

; puthex: send EAX as ECX (1..8) hexadecimal digits
puthex:
        pushad
        mov ebx, eax
        mov edx, ecx
        mov ecx, 8
        sub ecx, edx
        shl ecx, 2
        shl ebx, cl                     ; the first digit wanted in bits 31:28
        mov ecx, edx
.digit: rol ebx, 4
        mov eax, ebx
        and eax, 0xF
        mov al, [hexdigits + eax]
        call putc
        loop .digit
        popad
        ret

; puthex32 / puthex8: "0x" and EAX as 8 / AL as 2 digits
puthex32:
        push ecx
        push esi
        mov esi, s_0x
        call puts
        mov ecx, 8
        call puthex
        pop esi
        pop ecx
        ret

puthex8:
        push ecx
        push esi
        mov esi, s_0x
        call puts
        mov ecx, 2
        call puthex
        pop esi
        pop ecx
        ret

newline:
        push eax
        mov al, 10
        call putc
        pop eax
        ret

; exit: isa-debug-exit with the value in AL (QEMU's status is (AL << 1) | 1)
exit:
        mov dx, DEBUG_EXIT
        out dx, al
        hlt
        jmp exit

hexdigits:  db "0123456789abcdef"
s_0x:       db "0x", 0

        align 8
gdt:    dq 0                            ; null descriptor
        dq 0x00CF9A000000FFFF           ; 0x08: flat 32-bit code, base 0, 4 GiB
        dq 0x00CF92000000FFFF           ; 0x10: flat data
gdt_end:
gdt_descriptor:
        dw gdt_end - gdt - 1
        dd gdt
