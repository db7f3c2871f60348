; cpuid.asm: what CPUID tells a guest about the processor and about the hypervisor.
;
; What it shows about virtualization:
; - CPUID always causes a VM exit in VMX non-root operation (exit reason 10, CPUID). kvm.ko
;   answers it in the kernel (kvm_emulate_cpuid) from the table QEMU handed it with
;   KVM_SET_CPUID2, so a CPUID never reaches userspace: in the trace there is a `vmexit`
;   CPUID for each one but no `kvm_exit`. Only the serial output below exits to QEMU
;   (KVM_EXIT_IO, one per byte, plus one per poll of the line status register).
; - The vendor string comes from leaf 0. The hypervisor's own leaves start at 0x40000000:
;   KVM answers there with its signature "KVMKVMKVM\0\0\0" and the highest hypervisor leaf
;   (EAX); leaf 0x40000001 has KVM's paravirtual feature bits (none here).
; - Leaf 1 ECX bit 31 is the "hypervisor present" bit that guest kernels test first.
; On qemu-system-i386 without KVM (TCG) there is no KVM signature: a basic leaf above the
; maximum answers like the highest basic leaf, and the guest prints whatever it finds
; there, then says it is not running on KVM.
bits 32
org 0x100000

COM1        equ 0x3F8
LSR         equ COM1 + 5
LSR_THRE    equ 0x20
DEBUG_EXIT  equ 0x501

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
        cld

        ; leaf 0: the highest basic leaf in EAX, the vendor in EBX EDX ECX
        xor eax, eax
        xor ecx, ecx
        cpuid
        mov [text], ebx
        mov [text + 4], edx
        mov [text + 8], ecx
        mov esi, s_leaf0
        call puts
        call puthex32
        mov esi, s_vendor
        call puts
        call put_text
        call newline

        ; leaf 1: family/model/stepping in EAX, the hypervisor bit in ECX bit 31
        mov eax, 1
        xor ecx, ecx
        cpuid
        mov esi, s_leaf1
        call puts
        mov eax, ecx
        shr eax, 31
        mov ecx, 1
        call puthex
        call newline

        ; leaf 0x40000000: the hypervisor's highest leaf in EAX, its signature in EBX ECX EDX
        mov eax, 0x40000000
        xor ecx, ecx
        cpuid
        mov [text], ebx
        mov [text + 4], ecx
        mov [text + 8], edx
        mov [hv_max], eax
        mov esi, s_leaf4
        call puts
        call puthex32
        mov esi, s_signature
        call puts
        call put_text
        call newline

        mov esi, text
        mov edi, kvm_signature
        mov ecx, 12
        repe cmpsb
        jne .not_kvm
        mov eax, 0x40000001             ; KVM_CPUID_FEATURES
        xor ecx, ecx
        cpuid
        mov esi, s_features
        call puts
        call puthex32
        call newline
        mov esi, s_kvm
        call puts
        jmp .done
.not_kvm:
        mov esi, s_not_kvm
        call puts
.done:
        mov al, 0
        jmp exit

; put_text: the 12 bytes at `text` in quotes, "\0" for a zero byte, "." for other
; unprintable ones
put_text:
        pushad
        mov al, '"'
        call putc
        mov esi, text
        mov ecx, 12
.byte:  lodsb
        test al, al
        jnz .nonzero
        mov al, '\'
        call putc
        mov al, '0'
        jmp .put
.nonzero:
        cmp al, 0x20
        jb .dot
        cmp al, 0x7E
        jbe .put
.dot:   mov al, '.'
.put:   call putc
        loop .byte
        mov al, '"'
        call putc
        popad
        ret

s_leaf0:     db "cpuid 0x00000000: max basic leaf ", 0
s_vendor:    db ", vendor ", 0
s_leaf1:     db "cpuid 0x00000001: hypervisor bit (ecx[31]) ", 0
s_leaf4:     db "cpuid 0x40000000: max hypervisor leaf ", 0
s_signature: db ", signature ", 0
s_features:  db "cpuid 0x40000001: KVM features ", 0
s_kvm:       db "running on KVM", 10, 0
s_not_kvm:   db "no KVM signature: not running on KVM", 10, 0
kvm_signature: db "KVMKVMKVM", 0, 0, 0
        align 4
hv_max: dd 0
text:   times 12 db 0

; -- serial output (the same in every sample guest) ----------------------------------------

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
        push eax
        push esi
.next:  lodsb
        test al, al
        jz .done
        call putc
        jmp .next
.done:  pop esi
        pop eax
        ret

; puthex: send EAX as ECX (1..8) hexadecimal digits
puthex:
        pushad
        mov ebx, eax
        mov edx, ecx
        mov ecx, 8
        sub ecx, edx
        shl ecx, 2
        shl ebx, cl                     ; the first digit wanted in bits 31:28
        mov ecx, edx
.digit: rol ebx, 4
        mov eax, ebx
        and eax, 0xF
        mov al, [hexdigits + eax]
        call putc
        loop .digit
        popad
        ret

; puthex32 / puthex8: "0x" and EAX as 8 / AL as 2 digits
puthex32:
        push ecx
        push esi
        mov esi, s_0x
        call puts
        mov ecx, 8
        call puthex
        pop esi
        pop ecx
        ret

puthex8:
        push ecx
        push esi
        mov esi, s_0x
        call puts
        mov ecx, 2
        call puthex
        pop esi
        pop ecx
        ret

newline:
        push eax
        mov al, 10
        call putc
        pop eax
        ret

; exit: isa-debug-exit with the value in AL (QEMU's status is (AL << 1) | 1)
exit:
        mov dx, DEBUG_EXIT
        out dx, al
        hlt
        jmp exit

hexdigits:  db "0123456789abcdef"
s_0x:       db "0x", 0

        align 8
gdt:    dq 0                            ; null descriptor
        dq 0x00CF9A000000FFFF           ; 0x08: flat 32-bit code, base 0, 4 GiB
        dq 0x00CF92000000FFFF           ; 0x10: flat data
gdt_end:
gdt_descriptor:
        dw gdt_end - gdt - 1
        dd gdt
