; Lesson 1, the four layers: the smallest guest that talks to a device.
;
; It writes "Hi" and a newline to the serial port COM1 (port 0x3F8), one `out` per byte,
; then writes 0 to isa-debug-exit (port 0x501), which ends the VM with status 1.
; Each `out` is a VM exit: the CPU (hardware) stops the guest, kvm.ko's handle_io sees a
; port it has no device for, KVM_RUN returns to QEMU with KVM_EXIT_IO, and QEMU's 16550
; model prints the byte. (A real driver would first poll the line status register, port
; 0x3FD; QEMU's UART is always ready, so this guest skips that.)
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
        mov dx, COM1
        mov al, 'H'
        out dx, al                      ; VM exit 1: IO_INSTRUCTION, then KVM_EXIT_IO
        mov al, 'i'
        out dx, al                      ; VM exit 2
        mov al, 10
        out dx, al                      ; VM exit 3: the newline
        mov dx, DEBUG_EXIT
        mov al, 0                       ; exit status (0 << 1) | 1 = 1
        out dx, al                      ; VM exit 4: QEMU ends the VM
        hlt
