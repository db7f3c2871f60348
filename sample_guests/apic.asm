; apic.asm: the local APIC at 0xFEE00000: its timer (one-shot, then periodic), a self-IPI,
; and with two or more vCPUs a fixed IPI from vCPU 0 to the vCPU with APIC ID 1.
;
; vCPU 0 masks the 8259A PICs (nothing comes from there), enables its APIC (spurious-
; interrupt vector register 0x1FF: software enable, spurious vector 0xFF) and then:
; - one-shot: divide by 16, LVT timer vector 0x40, initial count 0x10000; waits with
;   `sti; hlt` for the interrupt, and reads the current count afterwards (0: expired);
; - periodic: LVT timer vector 0x41 with bit 17 set, the same count; the handler counts
;   to 5, then masks the LVT and writes initial count 0, which stops the timer;
; - self-IPI: ICR destination shorthand "self" (bits 19:18 = 01), fixed, vector 0x42; the
;   handler looks at the ISR bit of 0x42 (in service) before it writes the EOI;
; - IPI: only when CPUID.1:EBX[23:16] (logical processors) is 2 or more: a fixed IPI,
;   vector 0x43, physical destination APIC ID 1. vCPU 1's handler answers by writing its
;   APIC ID into a flag that vCPU 0 waits for. A run with one vCPU never takes this path,
;   so its output is the same on qemu-system-i386 (-M pc, one vCPU).
; Every handler ends with an EOI (a write of 0 to 0xFEE000B0) and IRET, except the
; spurious vector's, which takes no EOI (SDM Vol. 3A 11.9).
; vCPUs other than 0 and 1 (vmsim --smp 3 and more) stop with `cli; hlt`.
;
; What it shows about virtualization (vmsim --irqchip kernel; the APIC lives in kvm.ko):
; every APIC register access is an APIC-access VM exit that kvm.ko's lapic.c handles in
; the kernel, the timer is an hrtimer of kvm.ko's, and an IPI to another vCPU makes
; kvm.ko kick that vCPU out of its halt. Numbers from the 1 GHz APIC bus that KVM and QEMU
; model (APIC_BUS_CYCLE_NS = 1): 0x10000 * 16 ns = 1.05 ms per period, well above the
; 200 us that kvm.ko's min_timer_period_us clamps a periodic timer to.
bits 32
org 0x100000

COM1        equ 0x3F8
LSR         equ COM1 + 5
LSR_THRE    equ 0x20
DEBUG_EXIT  equ 0x501
STACK_TOP   equ 0x90000                 ; vCPU i: STACK_TOP - i * 0x1000, RAM on QEMU too

APIC        equ 0xFEE00000
APIC_ID     equ APIC + 0x020
APIC_TPR    equ APIC + 0x080
APIC_EOI    equ APIC + 0x0B0
APIC_SVR    equ APIC + 0x0F0
APIC_ISR    equ APIC + 0x100            ; 8 registers, 0x10 apart: vectors 32*k .. 32*k+31
APIC_ICR_LO equ APIC + 0x300
APIC_ICR_HI equ APIC + 0x310
APIC_LVTT   equ APIC + 0x320
APIC_TMICT  equ APIC + 0x380
APIC_TMCCT  equ APIC + 0x390
APIC_TDCR   equ APIC + 0x3E0

V_ONESHOT   equ 0x40
V_PERIODIC  equ 0x41
V_SELF      equ 0x42
V_IPI       equ 0x43
V_SPURIOUS  equ 0xFF
SVR_ENABLE  equ 0x100
LVT_MASKED  equ 0x10000
LVT_PERIODIC equ 0x20000
ICR_SELF    equ 0x40000                 ; destination shorthand 01
ICR_BUSY    equ 0x1000                  ; delivery status
TDCR_DIV16  equ 0x3
COUNT       equ 0x10000
PERIODS     equ 5

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
        mov eax, 1
        cpuid
        mov ebp, ebx                    ; CPUID.1:EBX, kept for the count of processors
        shr ebx, 24                     ; initial APIC ID: which vCPU this is
        mov esp, ebx
        shl esp, 12
        neg esp
        add esp, STACK_TOP
        lgdt [gdt_descriptor]           ; our own flat GDT: QEMU enters with its own
        jmp 0x08:.reload_cs
.reload_cs:
        mov ax, 0x10
        mov ds, ax
        mov es, ax
        mov ss, ax
        cld
        test ebx, ebx
        jnz ap_entry

        ; vCPU 0. The PICs stay quiet: everything masked.
        mov al, 0xFF
        out 0x21, al
        out 0xA1, al

        ; IDT: every vector to `unexpected`, then the APIC's vectors
        xor ecx, ecx
.fill:  mov eax, unexpected
        call set_gate
        inc ecx
        cmp ecx, 256
        jb .fill
        mov ecx, V_ONESHOT
        mov eax, oneshot_handler
        call set_gate
        mov ecx, V_PERIODIC
        mov eax, periodic_handler
        call set_gate
        mov ecx, V_SELF
        mov eax, self_handler
        call set_gate
        mov ecx, V_IPI
        mov eax, ipi_handler
        call set_gate
        mov ecx, V_SPURIOUS
        mov eax, spurious_handler
        call set_gate
        lidt [idt_descriptor]
        mov dword [idt_ready], 1        ; the other vCPUs load the same IDT

        ; enable the APIC; TPR 0 accepts every priority class
        mov dword [APIC_TPR], 0
        mov dword [APIC_SVR], SVR_ENABLE | V_SPURIOUS
        mov esi, s_id
        call puts
        mov eax, [APIC_ID]
        shr eax, 24
        call putdec
        mov esi, s_svr
        call puts
        mov eax, [APIC_SVR]
        call puthex8
        call newline

        ; one-shot
        mov dword [APIC_TDCR], TDCR_DIV16
        mov dword [APIC_LVTT], V_ONESHOT
        mov dword [APIC_TMICT], COUNT   ; starts the count-down
.os:    cmp dword [oneshots], 0
        jne .os_done
        sti
        hlt
        cli
        jmp .os
.os_done:
        mov esi, s_oneshot
        call puts
        mov eax, [oneshots]
        call putdec
        mov esi, s_oneshot2
        call puts
        mov eax, [APIC_TMCCT]
        call puthex8
        call newline

        ; periodic
        mov dword [APIC_LVTT], LVT_PERIODIC | V_PERIODIC
        mov dword [APIC_TMICT], COUNT
.per:   cmp dword [periods], PERIODS
        jae .per_done
        sti
        hlt
        cli
        jmp .per
.per_done:
        mov esi, s_periodic
        call puts
        mov eax, [periods]
        call putdec
        mov esi, s_periodic2
        call puts
        mov eax, [APIC_LVTT]
        call puthex8
        mov esi, s_periodic3
        call puts
        mov eax, [APIC_TMCCT]
        call puthex8
        call newline

        ; self-IPI, sent with IF=0: it waits in the IRR until the `sti; hlt`
        mov dword [APIC_ICR_LO], ICR_SELF | V_SELF
.busy:  test dword [APIC_ICR_LO], ICR_BUSY
        jnz .busy
.self:  cmp dword [selfs], 0
        jne .self_done
        sti
        hlt
        cli
        jmp .self
.self_done:
        mov esi, s_self
        call puts
        mov eax, [selfs]
        call putdec
        mov esi, s_self2
        call puts
        mov al, [isr_in_handler]
        call puthex2
        mov esi, s_self3
        call puts
        mov eax, [APIC_ISR + 0x10 * (V_SELF / 32)]
        call puthex2
        mov esi, s_self4
        call puts

        ; an IPI to vCPU 1, when there is one (never on a single vCPU)
        shr ebp, 16
        and ebp, 0xFF                   ; logical processors (0 on QEMU -smp 1)
        cmp ebp, 2
        jb .end
.ready: pause
        cmp dword [ap_ready], 0
        je .ready
        mov dword [APIC_ICR_HI], 1 << 24    ; physical destination: APIC ID 1
        mov dword [APIC_ICR_LO], V_IPI      ; fixed, physical, no shorthand
.ack:   pause
        cmp dword [ap_ack], 0
        je .ack
        mov esi, s_ipi
        call puts
        mov eax, [ap_ack]
        and eax, 0xFF
        call putdec
        call newline

.end:   mov esi, s_done
        call puts
        mov dx, DEBUG_EXIT
        mov al, 0                       ; exit status (0 << 1) | 1 = 1
        out dx, al
        cli
        hlt

; the other vCPUs: wait for vCPU 0's IDT; vCPU 1 takes the IPI, the rest stop
ap_entry:
.idt:   pause
        cmp dword [idt_ready], 0
        je .idt
        lidt [idt_descriptor]
        cmp ebx, 1
        jne park
        mov dword [APIC_TPR], 0
        mov dword [APIC_SVR], SVR_ENABLE | V_SPURIOUS   ; a disabled APIC drops fixed IPIs
        mov dword [ap_ready], 1
.wait:  cmp dword [ap_ack], 0
        jne park
        sti
        hlt
        cli
        jmp .wait
park:   cli
        hlt
        jmp park

oneshot_handler:
        inc dword [oneshots]
        mov dword [APIC_EOI], 0
        iret

periodic_handler:
        cmp dword [periods], PERIODS
        jae .eoi                        ; accepted before the timer stopped: not counted
        inc dword [periods]
        cmp dword [periods], PERIODS
        jb .eoi
        mov dword [APIC_LVTT], LVT_MASKED | LVT_PERIODIC | V_PERIODIC
        mov dword [APIC_TMICT], 0       ; stops the timer
.eoi:   mov dword [APIC_EOI], 0
        iret

self_handler:
        push eax
        mov eax, [APIC_ISR + 0x10 * (V_SELF / 32)]
        mov [isr_in_handler], al        ; bit V_SELF % 32 = 2: in service
        inc dword [selfs]
        mov dword [APIC_EOI], 0
        pop eax
        iret

ipi_handler:
        push eax
        mov eax, [APIC_ID]
        shr eax, 24
        or eax, 0x100                   ; nonzero even for APIC ID 0
        mov [ap_ack], eax
        mov dword [APIC_EOI], 0
        pop eax
        iret

spurious_handler:
        iret                            ; no EOI for the spurious vector

; any other vector: say so and stop with exit status 1 (host status 3)
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

newline:
        push eax
        mov al, 10
        call putc
        pop eax
        ret

; puthex2 / puthex8: AL as 2, EAX as 8 hexadecimal digits
puthex2:
        push ecx
        mov ecx, 2
        ror eax, 8
        call puthex
        rol eax, 8
        pop ecx
        ret

puthex8:
        push ecx
        mov ecx, 8
        call puthex
        pop ecx
        ret

; puthex: the top ECX digits of EAX
puthex:
        pushad
        mov ebx, eax
.digit: rol ebx, 4
        mov eax, ebx
        and eax, 0xF
        mov al, [hexdigits + eax]
        call putc
        loop .digit
        popad
        ret

; putdec: EAX in decimal
putdec:
        pushad
        mov ebx, 10
        xor ecx, ecx
.div:   xor edx, edx
        div ebx
        push edx
        inc ecx
        test eax, eax
        jnz .div
.out:   pop eax
        add al, '0'
        call putc
        loop .out
        popad
        ret

s_id:         db "apic: id ", 0
s_svr:        db ", svr ", 0
s_oneshot:    db "one-shot: ", 0
s_oneshot2:   db " interrupt, then current count ", 0
s_periodic:   db "periodic: ", 0
s_periodic2:  db " ticks, then lvt timer ", 0
s_periodic3:  db ", current count ", 0
s_self:       db "self-ipi: vector 0x42 taken ", 0
s_self2:      db " time, isr ", 0
s_self3:      db " in the handler, ", 0
s_self4:      db " after the eoi", 10, 0
s_ipi:        db "ipi: vector 0x43 to apic 1, answered by apic ", 0
s_done:       db "apic: done", 10, 0
s_unexpected: db "unexpected interrupt", 10, 0
hexdigits:    db "0123456789ABCDEF"

        align 4
idt_ready:      dd 0
ap_ready:       dd 0
ap_ack:         dd 0
oneshots:       dd 0
periods:        dd 0
selfs:          dd 0
isr_in_handler: db 0

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
