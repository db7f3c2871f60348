; Lesson 10: the PIT's IRQ 0 through the 8259A PIC, taken in a `sti; hlt` loop.
;
; The guest remaps the PIC pair to vectors 0x20-0x2F, masks every line but IRQ 0,
; programs PIT channel 0 as a rate generator (mode 2) with reload 239: 1193182 Hz / 239,
; a tick every 200 us (KVM's shortest periodic PIT period, min_timer_period_us), and
; waits for TICKS ticks. The IRQ 0 handler counts, masks IRQ 0 at the last tick, sends a
; non-specific EOI and returns with IRET. Then the guest prints "done" on COM1 and ends
; through isa-debug-exit (exit status 1).
;
; Run it with the in-kernel irqchip (QEMU's kernel-irqchip=on) and with the userspace one,
; and compare what reaches QEMU (the lesson's predicts). The same binary boots on
; qemu-system-i386 -kernel (multiboot header below) and prints the same.
bits 32
org 0x100000

COM1        equ 0x3F8
LSR         equ COM1 + 5
LSR_THRE    equ 0x20
DEBUG_EXIT  equ 0x501
PIC1_CMD    equ 0x20
PIC1_DATA   equ 0x21
PIC2_CMD    equ 0xA0
PIC2_DATA   equ 0xA1
PIT_CH0     equ 0x40
PIT_CMD     equ 0x43
IRQ_BASE    equ 0x20                    ; master: vectors 0x20-0x27, slave: 0x28-0x2F
RELOAD      equ 239                     ; 1193182 / 239 = 4992 Hz: 200 us
TICKS       equ 3

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
        cli
        mov esp, 0x90000                ; RAM on QEMU too (0xF0000-0xFFFFF is its BIOS)
        lgdt [gdt_descriptor]           ; our own flat GDT: QEMU enters with its own
        jmp 0x08:.reload_cs
.reload_cs:
        mov ax, 0x10
        mov ds, ax
        mov es, ax
        mov ss, ax
        cld

        ; IDT: every vector to `unexpected`, vector 0x20 (IRQ 0) to `irq0`
        xor ecx, ecx
.fill:  mov eax, unexpected
        call set_gate
        inc ecx
        cmp ecx, 256
        jb .fill
        mov ecx, IRQ_BASE
        mov eax, irq0
        call set_gate
        lidt [idt_descriptor]

        ; PIC: ICW1 (edge, cascade, ICW4 follows), ICW2 (vector base), ICW3, ICW4 (8086
        ; mode); then OCW1: mask everything but IRQ 0
        mov al, 0x11
        out PIC1_CMD, al
        out PIC2_CMD, al
        mov al, IRQ_BASE
        out PIC1_DATA, al
        mov al, IRQ_BASE + 8
        out PIC2_DATA, al
        mov al, 4
        out PIC1_DATA, al
        mov al, 2
        out PIC2_DATA, al
        mov al, 1
        out PIC1_DATA, al
        out PIC2_DATA, al
        mov al, 0xFE
        out PIC1_DATA, al
        mov al, 0xFF
        out PIC2_DATA, al

        ; PIT channel 0: LSB then MSB, mode 2, binary (0x34); from here it counts
        mov al, 0x34
        out PIT_CMD, al
        mov ax, RELOAD
        out PIT_CH0, al
        mov al, ah
        out PIT_CH0, al

        ; wait for the ticks: interrupts are on only inside `sti; hlt` (STI's shadow
        ; keeps the interrupt out of the gap before the HLT)
wait_loop:
        cmp dword [ticks], TICKS
        jae done
        sti
        hlt
        cli
        jmp wait_loop

done:   mov esi, s_done
        call puts
        mov dx, DEBUG_EXIT
        mov al, 0                       ; exit status (0 << 1) | 1 = 1
        out dx, al
        hlt

; IRQ 0: count the tick, mask IRQ 0 after the last one, EOI, return
irq0:
        push eax
        inc dword [ticks]
        cmp dword [ticks], TICKS
        jb .eoi
        mov al, 0xFF                    ; the last tick: mask IRQ 0
        out PIC1_DATA, al
.eoi:   mov al, 0x20                    ; OCW2: non-specific EOI
        out PIC1_CMD, al
        pop eax
        iret

; any other vector: say so and stop with exit status 3
unexpected:
        mov esi, s_unexpected
        call puts
        mov dx, DEBUG_EXIT
        mov al, 1
        out dx, al
        cli
        hlt

; set_gate: IDT entry ECX = 32-bit interrupt gate to EAX, selector 0x08, DPL 0
set_gate:
        push edx
        mov edx, eax
        and edx, 0xFFFF
        or edx, 0x08 << 16
        mov [idt + ecx*8], edx
        mov edx, eax
        and edx, 0xFFFF0000
        or edx, 0x8E00                  ; present, DPL 0, 32-bit interrupt gate
        mov [idt + ecx*8 + 4], edx
        pop edx
        ret

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
        push esi
        push eax
.next:  lodsb
        test al, al
        jz .end
        call putc
        jmp .next
.end:   pop eax
        pop esi
        ret

s_done:       db "done", 10, 0
s_unexpected: db "unexpected interrupt", 10, 0

        align 4
ticks:  dd 0

        align 8
gdt:    dq 0                            ; null descriptor
        dq 0x00CF9A000000FFFF           ; 0x08: flat 32-bit code, base 0, 4 GiB
        dq 0x00CF92000000FFFF           ; 0x10: flat data
gdt_end:
gdt_descriptor:
        dw gdt_end - gdt - 1
        dd gdt

        align 8
idt:    times 256 dq 0
idt_descriptor:
        dw 256 * 8 - 1
        dd idt
