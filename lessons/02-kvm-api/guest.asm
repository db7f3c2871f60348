; Lesson 2, the KVM API: a guest that needs very little, so the ioctls QEMU makes to set
; the VM up stand out in the event log.
;
; It writes "OK" and a newline to COM1 (port 0x3F8) and ends the VM through
; isa-debug-exit (port 0x501). Every `out` makes KVM_RUN return to QEMU with
; KVM_EXIT_IO; the data QEMU reads from struct kvm_run (direction, size, port, count,
; the byte on the page at data_offset) is in each kvm_userspace_exit event.
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
        mov al, 'O'
        out dx, al                      ; KVM_RUN returns: KVM_EXIT_IO, out, port 0x3F8
        mov al, 'K'
        out dx, al
        mov al, 10
        out dx, al
        mov dx, DEBUG_EXIT
        mov al, 0                       ; exit status (0 << 1) | 1 = 1
        out dx, al
        hlt
