; Lesson 11: two vCPUs, two vCPU threads, one big QEMU lock.
;
; Entry (vmsim's firmware shortcut for smp = N; on a real PC the other processors wait
; for INIT-SIPI-SIPI): every vCPU starts here. CPUID leaf 1 tells each which it is
; (EBX[31:24], the initial APIC ID) and how many there are (EBX[23:16], N as QEMU sets it
; for -smp N; 0 for one vCPU, read as 1). Each vCPU takes its own stack, adds 1 to
; `counter` ADDS times with LOCK XADD, and increments `done` with LOCK INC. vCPU 0 then
; waits (a PAUSE loop) until `done` is N, prints the total on COM1 and exits through
; isa-debug-exit; the other vCPUs stop with `cli; hlt` (the `park` label).
;
; No IRET, no paging, no interrupts: the same binary runs on the host's software KVM and
; on qemu-system-i386 -kernel, there with one vCPU ("smp: vcpus 1, counter 2000"): QEMU's
; other processors wait for INIT-SIPI-SIPI, which this guest does not send.
bits 32
org 0x100000

COM1        equ 0x3F8
LSR         equ COM1 + 5
LSR_THRE    equ 0x20
DEBUG_EXIT  equ 0x501
VGA         equ 0xB8000                 ; the VGA text screen: 80 x 25 (character, colour)
STACK_TOP   equ 0x90000                 ; vCPU i: STACK_TOP - i * 0x1000
ADDS        equ 2000                    ; a multiple of 4

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
        mov ebp, ebx
        shr ebp, 16
        and ebp, 0xFF                   ; logical processors
        jnz .n
        inc ebp                         ; 0: one
.n:     shr ebx, 24                     ; initial APIC ID: which vCPU this is
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

        mov ecx, ADDS / 4               ; four adds a round: fewer loop instructions
.add:   mov eax, 1
        lock xadd [counter], eax
        mov eax, 1
        lock xadd [counter], eax
        mov eax, 1
        lock xadd [counter], eax
        mov eax, 1
        lock xadd [counter], eax
        dec ecx
        jnz .add

        lock inc dword [done]
        test ebx, ebx
        jnz park                        ; vCPU 1 and up: nothing more to do

        ; vCPU 0: wait for everyone, then report
.wait:  pause
        cmp [done], ebp
        jb .wait
        mov esi, s_vcpus
        call puts
        mov eax, ebp
        call putdec
        mov esi, s_counter
        call puts
        mov eax, [counter]
        call putdec
        mov al, 10
        call putc
        mov dx, DEBUG_EXIT
        mov al, 0                       ; exit status (0 << 1) | 1 = 1
        out dx, al
park:   cli
        hlt
        jmp park

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

s_vcpus:    db "smp: vcpus ", 0
s_counter:  db ", counter ", 0
s_vga:      db "vcpu 1 was here", 0     ; a line for vCPU 1 to write on the screen

        align 4
counter:    dd 0
done:       dd 0

        align 8
gdt:    dq 0                            ; null descriptor
        dq 0x00CF9A000000FFFF           ; 0x08: flat 32-bit code, base 0, 4 GiB
        dq 0x00CF92000000FFFF           ; 0x10: flat data
gdt_end:
gdt_descriptor:
        dw gdt_end - gdt - 1
        dd gdt
