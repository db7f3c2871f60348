; exceptions.asm: the guest's own IDT catching #DE, #UD, #GP and #PF.
;
; What it shows about virtualization:
; - Most exceptions never leave the guest: with EPT, kvm.ko does not intercept #DE, #GP
;   or #PF (they are not in the VMCS exception bitmap), so the CPU delivers them through
;   the guest's IDT without any VM exit. Only the handlers' serial output exits.
; - #UD is in KVM's exception bitmap: UD2 causes a VM exit (exit reason 0, EXCEPTION_NMI,
;   vector 6); kvm.ko's handle_ud tries its emulator, which has no UD2 either, and
;   re-injects #UD into the guest at the next VM entry.
; - Some #GPs are made by kvm.ko, not by the CPU: RDMSR of an MSR the guest may not read
;   (here an x2APIC register, with no x2APIC) exits (MSR_READ, reason 31) and KVM injects
;   #GP(0), which to the guest looks exactly like the CPU's own. (QEMU's TCG, which is no
;   hypervisor, answers this RDMSR without a fault.)
; - #PF needs paging: the guest maps 0-4 MiB with one 4 MiB page, 4-8 MiB with a page
;   table whose first page is read-only, and turns paging on (CR0.PG|WP, CR4.PSE). The
;   faults report the error code (P, W/R bits) and CR2.
; Each handler prints the vector, the error code (or "none"), the EIP the CPU pushed and
; whether it is the faulting instruction, then goes on at the test's resume point with
; the stack as it was (it does not return with IRET: that also keeps the guest runnable
; on a host KVM that cannot emulate IRET).
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

IDT_VECTORS equ 32                      ; entries 0..31: INT 0x40 lies beyond the limit
PD          equ 0x200000                ; page directory
PT1         equ 0x201000                ; page table for 4-8 MiB

        ; every vector to `unexpected` first, then the four handlers
        xor ecx, ecx
.fill:  mov eax, unexpected
        call set_gate
        inc ecx
        cmp ecx, IDT_VECTORS
        jb .fill
        mov ecx, 0
        mov eax, de_handler
        call set_gate
        mov ecx, 6
        mov eax, ud_handler
        call set_gate
        mov ecx, 13
        mov eax, gp_handler
        call set_gate
        mov ecx, 14
        mov eax, pf_handler
        call set_gate
        lidt [idt_descriptor]

        ; #DE: division by zero
        mov dword [what], s_div0
        mov dword [fault_at], .f1
        mov dword [resume], .r1
        mov [saved_esp], esp
        xor edx, edx
        mov eax, 1
        xor ecx, ecx
.f1:    div ecx
        call no_fault
.r1:
        ; #DE: the quotient does not fit (0x100000000 / 1)
        mov dword [what], s_divo
        mov dword [fault_at], .f2
        mov dword [resume], .r2
        mov [saved_esp], esp
        mov edx, 1
        xor eax, eax
        mov ecx, 1
.f2:    div ecx
        call no_fault
.r2:
        ; #UD: UD2, the instruction that is defined to be undefined
        mov dword [what], s_ud2
        mov dword [fault_at], .f3
        mov dword [resume], .r3
        mov [saved_esp], esp
.f3:    ud2
        call no_fault
.r3:
        ; #GP(selector): load DS with a selector past the GDT's limit
        mov dword [what], s_sel
        mov dword [fault_at], .f4
        mov dword [resume], .r4
        mov [saved_esp], esp
        mov ax, 0x28
.f4:    mov ds, ax
        call no_fault
.r4:
        ; #GP(0) from KVM: RDMSR of the x2APIC ID register with no x2APIC enabled
        mov dword [what], s_msr
        mov dword [fault_at], .f5
        mov dword [resume], .r5
        mov [saved_esp], esp
        mov ecx, 0x802
.f5:    rdmsr
        call no_fault
.r5:
        ; #GP(vector * 8 + 2): INT 0x40 with the IDT holding 32 entries
        mov dword [what], s_int
        mov dword [fault_at], .f6
        mov dword [resume], .r6
        mov [saved_esp], esp
.f6:    int 0x40
        call no_fault
.r6:
        ; page tables for #PF: PD[0] a 4 MiB page over 0-4 MiB, PD[1] -> PT1, whose
        ; first entry maps 0x400000 read-only; nothing else is present
        mov edi, PD
        mov ecx, 2048                   ; PD and PT1
        xor eax, eax
        rep stosd
        mov dword [PD], 0x00000083      ; present, writable, 4 MiB page
        mov dword [PD + 4], PT1 + 0x003 ; present, writable
        mov dword [PT1], 0x00400001     ; present, read-only
        mov esi, s_paging
        call puts
        mov eax, cr4
        or eax, 0x10                    ; PSE
        mov cr4, eax
        mov eax, PD
        mov cr3, eax
        mov eax, cr0
        or eax, 0x80010000              ; PG and WP (supervisor writes obey R/W)
        mov cr0, eax

        ; #PF, read of a page that is not present
        mov dword [what], s_pf_np
        mov dword [fault_at], .f8
        mov dword [resume], .r8
        mov [saved_esp], esp
.f8:    mov eax, [0x00801000]
        call no_fault
.r8:
        ; #PF, write to a page that is not present
        mov dword [what], s_pf_npw
        mov dword [fault_at], .f9
        mov dword [resume], .r9
        mov [saved_esp], esp
.f9:    mov dword [0x00402000], 1
        call no_fault
.r9:
        ; #PF, write to a present read-only page (CR0.WP)
        mov dword [what], s_pf_ro
        mov dword [fault_at], .f10
        mov dword [resume], .r10
        mov [saved_esp], esp
.f10:   mov dword [0x00400010], 1
        call no_fault
.r10:
        mov esi, s_done
        call puts
        mov al, 0
        jmp exit

; set_gate: IDT entry ECX -> handler EAX (32-bit interrupt gate, CS 0x08, DPL 0)
set_gate:
        push eax
        mov [idt + ecx * 8], ax
        mov word [idt + ecx * 8 + 2], 0x08
        mov word [idt + ecx * 8 + 4], 0x8E00
        shr eax, 16
        mov [idt + ecx * 8 + 6], ax
        pop eax
        ret

no_fault:
        mov esi, [what]
        call puts
        mov esi, s_no_fault
        call puts
        ret

; -- the handlers: the vector, whether the CPU pushed an error code ----------------------------
de_handler:
        mov dword [vector], 0
        jmp report_no_code
ud_handler:
        mov dword [vector], 6
        jmp report_no_code
gp_handler:
        mov dword [vector], 13
        jmp report_code
pf_handler:
        mov dword [vector], 14
        jmp report_code
unexpected:
        mov esi, s_unexpected
        call puts
        mov al, 3
        jmp exit

report_code:
        pop dword [error_code]
        mov byte [has_code], 1
        jmp report
report_no_code:
        mov byte [has_code], 0
report:
        pop dword [pushed_eip]
        pop dword [pushed_cs]
        mov esi, [what]
        call puts
        mov esi, s_vector
        call puts
        mov eax, [vector]
        call puthex8
        mov esi, s_error
        call puts
        cmp byte [has_code], 0
        je .none
        mov eax, [error_code]
        call puthex32
        jmp .eip
.none:  mov esi, s_none
        call puts
.eip:   mov esi, s_eip
        call puts
        mov eax, [pushed_eip]
        call puthex32
        mov esi, s_at_fault
        cmp eax, [fault_at]
        je .where
        mov esi, s_elsewhere
.where: call puts
        mov esi, s_cs
        call puts
        mov eax, [pushed_cs]
        call puthex8
        cmp dword [vector], 14
        jne .end
        mov esi, s_cr2
        call puts
        mov eax, cr2
        call puthex32
.end:   call newline
        mov esp, [saved_esp]            ; the stack as before the faulting instruction
        jmp [resume]

s_div0:     db "div by zero", 0
s_divo:     db "div overflow", 0
s_ud2:      db "ud2", 0
s_sel:      db "mov ds, 0x28", 0
s_int:      db "int 0x40", 0
s_msr:      db "rdmsr 0x802", 0
s_pf_np:    db "read not-present", 0
s_pf_npw:   db "write not-present", 0
s_pf_ro:    db "write read-only", 0
s_paging:   db "paging on (4 MiB page + page table)", 10, 0
s_vector:   db ": vector ", 0
s_error:    db " error ", 0
s_none:     db "none", 0
s_eip:      db " eip ", 0
s_at_fault: db " (the faulting instruction)", 0
s_elsewhere: db " (NOT the faulting instruction)", 0
s_cs:       db " cs ", 0
s_cr2:      db " cr2 ", 0
s_no_fault: db ": no exception", 10, 0
s_unexpected: db "unexpected exception", 10, 0
s_done:     db "all exceptions caught", 10, 0

        align 4
what:       dd 0                        ; the test's name
fault_at:   dd 0                        ; the address of the instruction expected to fault
resume:     dd 0                        ; where the handler goes on
saved_esp:  dd 0
vector:     dd 0
error_code: dd 0
pushed_eip: dd 0
pushed_cs:  dd 0
has_code:   db 0

        align 8
idt:        times IDT_VECTORS dq 0
idt_descriptor:
        dw IDT_VECTORS * 8 - 1
        dd idt

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
