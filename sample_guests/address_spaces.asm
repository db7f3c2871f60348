; address_spaces.asm: three "processes", each with its own page directory, switched the
; way an OS switches them (MOV to CR3), with page-table edits and INVLPG in between.
;
; What it shows about memory virtualization (run it with --stats, once with
; --paging ept and once with --paging shadow):
; - with EPT the guest loads CR3 and edits its page tables without any VM exit; after the
;   first touch of each page (EPT violations that kvm.ko fills lazily) it runs exit-free;
; - with shadow paging every CR3 load exits (CR_ACCESS), every first touch of a page in
;   each address space is a #PF exit that kvm.ko resolves by filling a shadow entry, every
;   write to a page table is a #PF exit that kvm.ko emulates, and INVLPG exits too.
; The guest cannot tell: it prints the same lines in both modes, on bare metal and on
; qemu-system-i386, including the accessed and dirty bits the hardware set in its PTEs.
;
; Memory layout (physical): kernel page table PT_K identity-maps 0-4 MiB and is shared by
; all three page directories; each process has a private page table mapping its "user"
; window at linear 0x40000000 to its own frames.
bits 32
org 0x100000

COM1        equ 0x3F8
DEBUG_EXIT  equ 0x501
PD_BASE     equ 0x200000            ; three page directories, 4 KiB apart
PT_K        equ 0x203000            ; kernel page table (0-4 MiB identity)
PT_U        equ 0x204000            ; three user page tables, 4 KiB apart
FRAMES      equ 0x300000            ; user frames: process p, page i at FRAMES + p*0x10000 + i*0x1000
USER        equ 0x40000000          ; the user window's linear address
ROUNDS      equ 16
P_RW        equ 0x003               ; present, writable

start:
        jmp entry

        align 4
multiboot:
        dd 0x1BADB002, 0x00010000, -(0x1BADB002 + 0x00010000)
        dd multiboot, 0x100000, 0, 0, entry

entry:
        mov esp, 0x90000
        lgdt [gdt_descriptor]
        jmp 0x08:.cs
.cs:    mov ax, 0x10
        mov ds, ax
        mov es, ax
        mov ss, ax

        ; PT_K: 1024 entries identity-mapping 0-4 MiB
        mov edi, PT_K
        mov eax, P_RW
        mov ecx, 1024
.k:     mov [edi], eax
        add eax, 0x1000
        add edi, 4
        loop .k

        ; per process p: PD[p][0] = PT_K, PD[p][256] = PT_U[p] (linear 0x40000000),
        ; PT_U[p][i] = frame (p, i) for i = 0..3
        xor ebx, ebx                    ; p
.proc:  mov edi, ebx
        shl edi, 12
        lea esi, [edi + PT_U]           ; this process's user page table
        add edi, PD_BASE                ; its page directory
        mov dword [edi], PT_K + P_RW
        lea eax, [esi + P_RW]
        mov [edi + 256*4], eax
        mov eax, ebx
        shl eax, 16
        add eax, FRAMES + P_RW
        mov ecx, 4
.u:     mov [esi], eax
        add eax, 0x1000
        add esi, 4
        loop .u
        inc ebx
        cmp ebx, 3
        jb .proc

        ; paging on, in process 0
        mov eax, PD_BASE
        mov cr3, eax
        mov eax, cr0
        or eax, 0x80010000              ; PG and WP
        mov cr0, eax

        ; ROUNDS rounds of: switch to p, add p+1 to its counter at USER, touch USER+0x1000
        mov dword [round], 0
.round: xor ebx, ebx
.sw:    mov eax, ebx
        shl eax, 12
        add eax, PD_BASE
        mov cr3, eax                    ; context switch
        lea eax, [ebx + 1]
        add [USER], eax                 ; the process's own counter
        mov eax, [USER + 0x1000]        ; a read: accessed, not dirty
        inc ebx
        cmp ebx, 3
        jb .sw
        inc dword [round]
        cmp dword [round], ROUNDS
        jb .round

        ; page-table edit in process 2: remap USER+0x2000 to process 0's first frame,
        ; INVLPG, and read process 0's counter through it
        mov eax, PD_BASE + 2*0x1000
        mov cr3, eax
        mov dword [USER + 0x2000], 0x5A5A5A5A   ; dirty the old frame first
        mov dword [PT_U + 2*0x1000 + 2*4], FRAMES + P_RW
        invlpg [USER + 0x2000]
        mov eax, [USER + 0x2000]        ; now process 0's counter: 1 * ROUNDS
        mov [alias], eax

        ; report: each process's counter, the alias read, then the A/D bits of every
        ; user PTE as the hardware left them
        mov esi, msg_counters
        call puts
        xor ebx, ebx
.rep:   mov eax, ebx
        shl eax, 12
        add eax, PD_BASE
        mov cr3, eax
        mov eax, [USER]
        call puthex
        mov al, ' '
        call putc
        inc ebx
        cmp ebx, 3
        jb .rep
        mov esi, msg_alias
        call puts
        mov eax, [alias]
        call puthex
        mov esi, msg_ad
        call puts
        mov esi, PT_U
        xor ebx, ebx                    ; 3 processes x 4 PTEs
.ad:    mov eax, ebx
        shr eax, 2                      ; process
        shl eax, 12
        mov edx, ebx
        and edx, 3
        mov eax, [PT_U + eax + edx*4]
        shr eax, 5
        and eax, 3                      ; bit 0: accessed, bit 1: dirty
        add al, '0'
        call putc
        inc ebx
        cmp ebx, 12
        jb .ad
        mov al, 10
        call putc

        ; success iff process p's counter is (p+1)*ROUNDS and the alias saw process 0's
        mov eax, [alias]
        cmp eax, ROUNDS
        jne .fail
        mov dx, DEBUG_EXIT
        mov al, 0
        out dx, al
.fail:  mov dx, DEBUG_EXIT
        mov al, 1
        out dx, al
        hlt

; puts: the zero-terminated string at ESI
puts:   lodsb
        test al, al
        jz .done
        call putc
        jmp puts
.done:  ret

; puthex: EAX as 8 hex digits
puthex: push ecx
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
        pop ecx
        ret

; putc: AL to COM1 once the transmitter is empty
putc:   push edx
        push eax
        mov dx, COM1 + 5
.w:     in al, dx
        test al, 0x20
        jz .w
        pop eax
        mov dx, COM1
        out dx, al
        pop edx
        ret

msg_counters: db "counters: ", 0
msg_alias:    db 10, "alias: ", 0
msg_ad:       db 10, "A/D of user PTEs: ", 0

        align 4
round:  dd 0
alias:  dd 0

        align 8
gdt:    dq 0
        dq 0x00CF9A000000FFFF
        dq 0x00CF92000000FFFF
gdt_end:
gdt_descriptor:
        dw gdt_end - gdt - 1
        dd gdt
