; Lesson 3, VM entry and the VMCS: a guest whose state you can watch in the VMCS.
;
; It sets up a stack, then prints "VMX" and a newline on COM1 through a small function
; (so RSP and RIP move), and ends the VM through isa-debug-exit. Each `out` is a VM exit:
; the CPU saves the guest's RIP, RSP, RFLAGS, control and segment registers into the
; VMCS guest-state area, loads the host-state area (HOST_RIP: kvm.ko's vmx_vmexit) and
; writes the exit information (VM_EXIT_REASON, EXIT_QUALIFICATION). The next VMRESUME
; loads the guest state back.
; The same binary boots on qemu-system-i386 -kernel (multiboot header below).
bits 32
org 0x100000

COM1        equ 0x3F8                   ; the 16550 UART's data register
DEBUG_EXIT  equ 0x501                   ; QEMU's isa-debug-exit

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
        mov esp, 0x90000                ; a stack of our own (GUEST_RSP at the next exit)
        mov al, 'V'
        call putc
        mov al, 'M'
        call putc
        mov al, 'X'
        call putc
        mov al, 10
        call putc
        mov dx, DEBUG_EXIT
        mov al, 0                       ; exit status (0 << 1) | 1 = 1
        out dx, al
        hlt

; putc: send AL on COM1 (QEMU's UART is always ready: no polling here)
putc:
        push edx
        mov dx, COM1
        out dx, al                      ; VM exit: IO_INSTRUCTION, qualification 0x03F80000
        pop edx
        ret
