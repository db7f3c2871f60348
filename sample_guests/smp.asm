; smp.asm: N vCPUs adding to shared counters at the same time, with LOCK-prefixed
; instructions and a spinlock made of XCHG.
;
; Entry (vmsim's firmware shortcut for --smp N; on a real PC the other processors wait
; for INIT-SIPI-SIPI): every vCPU starts here, and CPUID leaf 1 tells each which it is
; (EBX[31:24], the initial APIC ID) and how many there are (EBX[23:16], set to N as QEMU
; does for -smp N; QEMU leaves it 0 for one vCPU, read as 1). Each vCPU takes its own
; stack from its APIC ID, then
; - adds 1 to `counter` 100000 times with LOCK XADD;
; - adds 1 to `guarded` 1000 times with a plain load, increment and store, inside a
;   spinlock taken with XCHG (which locks without a prefix) and released with a store;
; - LOCK INC of `done`.
; vCPU 0 then waits (a PAUSE loop) until `done` is N, prints both totals in decimal and
; exits through isa-debug-exit; the others stop with `cli; hlt`.
; With atomic read-modify-writes the totals are exactly N * 100000 and N * 1000 however
; the vCPUs interleave; a lost update would show in the numbers.
;
; What it shows about virtualization: none of this exits (no I/O until vCPU 0 prints),
; so on the host's /dev/kvm the vCPU threads run truly in parallel and the hardware's
; cache coherence makes the LOCKed instructions atomic; on vmsim the scheduler interleaves
; the vCPUs on the virtual clock, deterministically. No IRET, no paging, no interrupts:
; it runs on the host's software KVM too.
bits 32
org 0x100000

COM1        equ 0x3F8
LSR         equ COM1 + 5
LSR_THRE    equ 0x20
DEBUG_EXIT  equ 0x501
STACK_TOP   equ 0x90000                 ; vCPU i: STACK_TOP - i * 0x1000, RAM on QEMU too
ADDS        equ 100000               ; a multiple of 4
LOCKED_ADDS equ 1000

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
        lock xadd [counter], eax        ; EAX gets the old value, so 1 again each time
        mov eax, 1
        lock xadd [counter], eax
        mov eax, 1
        lock xadd [counter], eax
        mov eax, 1
        lock xadd [counter], eax
        dec ecx
        jnz .add

        mov ecx, LOCKED_ADDS
.take:  mov eax, 1
        xchg eax, [spinlock]            ; atomic: 1 in, the old value out
        test eax, eax
        jz .held
.spin:  pause                           ; held by another vCPU: wait until it looks free
        cmp dword [spinlock], 0
        jne .spin
        jmp .take
.held:  mov eax, [guarded]              ; not atomic by itself: the lock makes it safe
        inc eax
        mov [guarded], eax
        mov dword [spinlock], 0         ; release (stores are not reordered with older ones)
        dec ecx
        jnz .take

        lock inc dword [done]
        test ebx, ebx
        jnz park

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
        mov esi, s_guarded
        call puts
        mov eax, [guarded]
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
s_guarded:  db ", under the lock ", 0

        align 4
counter:    dd 0
guarded:    dd 0
spinlock:   dd 0
done:       dd 0

        align 8
gdt:    dq 0                            ; null descriptor
        dq 0x00CF9A000000FFFF           ; 0x08: flat 32-bit code, base 0, 4 GiB
        dq 0x00CF92000000FFFF           ; 0x10: flat data
gdt_end:
gdt_descriptor:
        dw gdt_end - gdt - 1
        dd gdt
