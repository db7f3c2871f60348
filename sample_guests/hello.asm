; hello.asm: the smallest useful vmsim guest.
; Prints a greeting on COM1 (polling the 16550's LSR before each byte), puts the same
; text on the VGA text screen, and reports success through isa-debug-exit.
; The same binary boots on qemu-system-i386 -kernel (multiboot header below).
bits 32
org 0x100000

COM1        equ 0x3F8
LSR         equ COM1 + 5
LSR_THRE    equ 0x20
DEBUG_EXIT  equ 0x501
VGA         equ 0xB8000

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

        mov esi, message
        mov edi, VGA
.next:  lodsb
        test al, al
        jz .done
        call putc
        mov ah, 0x1F                    ; white on blue
        stosw
        jmp .next
.done:
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

message: db "Hello from a vmsim guest!", 10, 0

        align 8
gdt:    dq 0                            ; null descriptor
        dq 0x00CF9A000000FFFF           ; 0x08: flat 32-bit code, base 0, 4 GiB
        dq 0x00CF92000000FFFF           ; 0x10: flat data
gdt_end:
gdt_descriptor:
        dw gdt_end - gdt - 1
        dd gdt
