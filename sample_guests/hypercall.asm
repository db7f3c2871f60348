; hypercall.asm: calling the hypervisor on purpose, with VMCALL and KVM's hypercall ABI.
;
; What it shows about virtualization:
; - A guest first makes sure whom it is talking to: CPUID leaf 0x40000000 must answer
;   "KVMKVMKVM" before it uses KVM's ABI (a hypercall is meaningless elsewhere; on a CPU
;   without VMX, or on QEMU's TCG, VMCALL is an invalid opcode).
; - VMCALL always causes a VM exit (exit reason 18, VMCALL). kvm.ko handles it in the
;   kernel (kvm_emulate_hypercall): the number is in EAX, up to four arguments in EBX ECX
;   EDX ESI, the result comes back in EAX and RIP moves past the 3-byte instruction. No
;   `kvm_exit` reaches QEMU for it: only the serial output does.
; - What Linux answers a 32-bit guest at CPL 0 that has no in-kernel APIC:
;     1 KVM_HC_VAPIC_POLL_IRQ  0 (an exit is all it asks for: pending interrupts get
;                              checked on the way back in)
;     5 KVM_HC_KICK_CPU        0 (no APIC map: nobody to wake; PV features are not
;                              enforced, so the call is allowed)
;    11 KVM_HC_SCHED_YIELD     0 (the same)
;    10 KVM_HC_SEND_IPI        -95, -KVM_EOPNOTSUPP (no APIC map to deliver through)
;   any unknown number         -1000, -KVM_ENOSYS (0, 2 KVM_HC_MMU_OP long removed, ...)
;   printed as the 32-bit value the guest sees in EAX.
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

        mov eax, 0x40000000
        xor ecx, ecx
        cpuid
        cmp ebx, 'KVMK'
        jne .not_kvm
        cmp ecx, 'VMKV'
        jne .not_kvm
        cmp edx, 'M'
        jne .not_kvm
        mov esi, s_kvm
        call puts

        mov edi, numbers
.call:  mov eax, [edi]
        cmp eax, -1
        je .done
        mov esi, s_vmcall
        call puts
        call puthex32
        mov ebx, 0x11111111             ; arguments: nothing here reads them
        mov ecx, 0x22222222
        mov edx, 0x33333333
        mov esi, 0x44444444
        vmcall
        mov [after], ebx
        mov [after + 4], ecx
        mov [after + 8], edx
        mov [after + 12], esi
        mov esi, s_arrow
        call puts
        call puthex32
        call check_args
        call newline
        add edi, 4
        jmp .call
.done:
        mov al, 0
        jmp exit
.not_kvm:
        mov esi, s_not_kvm
        call puts
        mov al, 0
        jmp exit

; check_args: a hypercall changes only EAX ("args changed" otherwise)
check_args:
        cmp dword [after], 0x11111111
        jne .changed
        cmp dword [after + 4], 0x22222222
        jne .changed
        cmp dword [after + 8], 0x33333333
        jne .changed
        cmp dword [after + 12], 0x44444444
        jne .changed
        ret
.changed:
        mov esi, s_changed
        call puts
        ret

numbers:    dd 1, 0, 2, 5, 10, 11, 12, 0x12345678, -1
s_kvm:      db "KVM signature found: trying hypercalls", 10, 0
s_not_kvm:  db "no KVM signature: no hypercalls tried", 10, 0
s_vmcall:   db "vmcall nr ", 0
s_arrow:    db " -> eax ", 0
s_changed:  db " (args changed)", 0
        align 4
after:      dd 0, 0, 0, 0              ; EBX ECX EDX ESI after the VMCALL

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
