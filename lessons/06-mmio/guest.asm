; Lesson 6 (MMIO): four characters on the VGA text screen, one read back.
;
; The VGA text buffer at guest-physical 0xB8000 is not RAM: no memory slot backs it, so
; QEMU's VGA model answers every access (memory-mapped I/O). Under EPT:
; - the first access finds no EPT entry: EPT_VIOLATION (exit 48); kvm.ko finds no memory
;   slot for the address and installs a deliberately misconfigured EPT entry (W+X, no R);
; - the instruction emulator decodes the instruction and hands the access to
;   QEMU as KVM_EXIT_MMIO (address, length, data): a store leaves with its data after the
;   instruction completed, a load leaves first and completes on the next KVM_RUN.
; The same binary boots on qemu-system-i386 -kernel (multiboot header below).
bits 32
org 0x100000

COM1        equ 0x3F8
LSR         equ COM1 + 5
LSR_THRE    equ 0x20
DEBUG_EXIT  equ 0x501
VGA         equ 0xB8000
WHITE_BLUE  equ 0x1F                    ; attribute: white on blue

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

        ; four cells, one 16-bit store each: character in the low byte, attribute above
        mov word [VGA], WHITE_BLUE << 8 | 'M'
        mov word [VGA + 2], WHITE_BLUE << 8 | 'M'
        mov word [VGA + 4], WHITE_BLUE << 8 | 'I'
        mov word [VGA + 6], WHITE_BLUE << 8 | 'O'

        ; read the first cell back (a load: QEMU answers it) and print its character
        mov ax, [VGA]
        call putc
        mov al, 10
        call putc

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
