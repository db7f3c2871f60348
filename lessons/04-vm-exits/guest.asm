; Lesson 4, VM exits: three forms of port I/O and the exit qualification of each.
;
; - `out 0x80, al`: a POST code, as firmware writes to show its progress. The port is an
;   immediate: qualification 0x00800040 (port 0x80 in bits 31:16, bit 6 = immediate).
; - `in al, dx` with DX = 0x3FD: reads the 16550's line status register before each
;   byte. Qualification 0x03FD0008 (bit 3 = IN, size 1, port in DX).
; - `out dx, al` with DX = 0x3F8: sends the byte. Qualification 0x03F80000.
; Each exits with reason 30, IO_INSTRUCTION; kvm.ko's handle_io decodes the qualification
; and, with no device of its own on these ports, returns to QEMU with KVM_EXIT_IO.
; The same binary boots on qemu-system-i386 -kernel (multiboot header below).
bits 32
org 0x100000

COM1        equ 0x3F8                   ; the 16550 UART's data register
LSR         equ COM1 + 5                ; its line status register
LSR_THRE    equ 0x20                    ; "transmitter holding register empty"
POST        equ 0x80                    ; the PC's POST-code port
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
        mov esp, 0x90000
        mov al, 0x01
        out POST, al                    ; exit: qualification 0x00800040
        mov al, 'I'
        call putc
        mov al, 'O'
        call putc
        mov al, 10
        call putc
        mov dx, DEBUG_EXIT
        mov al, 0                       ; exit status (0 << 1) | 1 = 1
        out dx, al                      ; exit: qualification 0x05010000
        hlt

; putc: send AL on COM1 once the transmitter holding register is empty
putc:
        push edx
        push eax
        mov dx, LSR
.wait:  in al, dx                       ; exit: qualification 0x03FD0008
        test al, LSR_THRE
        jz .wait
        pop eax
        mov dx, COM1
        out dx, al                      ; exit: qualification 0x03F80000
        pop edx
        ret
