; Lesson 3, step "failed-entry": a guest that sleeps in HLT until a timer wakes it.
;
; It programs the PIC (IRQ 0 to vector 0x20, everything else masked) and the PIT (one
; interrupt, about 1 ms away), waits with `sti; hlt`, then prints "awake" and ends the VM.
; With the irqchip in the kernel the vCPU sleeps in kvm.ko (kvm_vcpu_block) meanwhile.
;
; bad-ss.vmsnap is this guest saved while it sleeps, after a KVM_SET_SREGS that made
; SS.DPL 3 (CS.DPL stays 0), as a buggy VMM or a corrupted migration stream would. When
; the timer wakes the vCPU, the VM entry fails its guest-state checks. It was made with:
;   s = vmsim.session.Session("wait.asm")
;   s.step_until(lambda e: e.kind == "kvm_vcpu_block")
;   v = s.vm.cpus[0].vcpu; r = v.get_sregs(); r.ss.dpl = 3; v.set_sregs(r)
;   s.save_snapshot("bad-ss.vmsnap")
; The same binary boots on qemu-system-i386 -kernel (multiboot header below) and prints
; "awake" there too: only the snapshot carries the bad SS.
bits 32
org 0x100000

COM1        equ 0x3F8
DEBUG_EXIT  equ 0x501
PIC1_CMD    equ 0x20
PIC1_DATA   equ 0x21
PIC2_CMD    equ 0xA0
PIC2_DATA   equ 0xA1
PIT_CH0     equ 0x40
PIT_CMD     equ 0x43
IRQ_BASE    equ 0x20                    ; the master PIC's vectors: 0x20-0x27
COUNT       equ 1193                    ; 1193182 Hz / 1193: about 1 ms

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
        mov esp, 0x90000
        lgdt [gdt_descriptor]           ; our own flat GDT: QEMU enters with its own
        jmp 0x08:.reload_cs
.reload_cs:
        mov ax, 0x10
        mov ds, ax
        mov es, ax
        mov ss, ax

        ; IDT: vector 0x20 (IRQ 0) to `tick`; the others stay empty
        mov eax, tick
        mov [idt + IRQ_BASE * 8], ax
        mov word [idt + IRQ_BASE * 8 + 2], 0x08
        mov word [idt + IRQ_BASE * 8 + 4], 0x8E00   ; present, DPL 0, 32-bit interrupt gate
        shr eax, 16
        mov [idt + IRQ_BASE * 8 + 6], ax
        lidt [idt_descriptor]

        ; PIC: ICW1-ICW4 to both chips, then mask everything but IRQ 0
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

        ; PIT channel 0: LSB then MSB, mode 0 (one interrupt at terminal count)
        mov al, 0x30
        out PIT_CMD, al
        mov ax, COUNT
        out PIT_CH0, al
        mov al, ah
        out PIT_CH0, al

.wait:  cmp byte [ticked], 0
        jne .done
        sti
        hlt                             ; the snapshot was taken here
        cli
        jmp .wait

.done:  mov esi, s_awake
        mov dx, COM1
.next:  lodsb
        test al, al
        jz .exit
        out dx, al
        jmp .next
.exit:  mov dx, DEBUG_EXIT
        mov al, 0                       ; exit status (0 << 1) | 1 = 1
        out dx, al
        hlt

; IRQ 0: note it, end of interrupt to the master PIC, return
tick:
        push eax
        mov byte [ticked], 1
        mov al, 0x20                    ; OCW2: non-specific EOI
        out PIC1_CMD, al
        pop eax
        iret

s_awake:    db "awake", 10, 0
ticked:     db 0

        align 8
gdt:    dq 0                            ; null descriptor
        dq 0x00CF9A000000FFFF           ; 0x08: flat 32-bit code, base 0, 4 GiB
        dq 0x00CF92000000FFFF           ; 0x10: flat data
gdt_end:
gdt_descriptor:
        dw gdt_end - gdt - 1
        dd gdt
idt_descriptor:
        dw 256 * 8 - 1
        dd idt
        align 8
idt:    times 256 dq 0
