; A loop of MMIO stores for benchmarks/exit_bench.py: COUNT word stores to the VGA text
; buffer at 0xB8000 (no memory slot: an EPT violation, then EPT misconfigurations, kvm.ko's
; instruction emulator, KVM_EXIT_MMIO to QEMU's VGA model), cycling over the first 80
; cells. Then the guest exits through isa-debug-exit. The benchmark replaces COUNT's value.
bits 32
org 0x100000

VGA         equ 0xB8000
DEBUG_EXIT  equ 0x501
COUNT       equ 2000

start:
        mov esp, 0x90000
        mov ecx, COUNT
        mov edi, VGA
        xor ebx, ebx
.loop:  mov ax, cx
        mov ah, 0x1F
        mov [edi + ebx*2], ax
        inc ebx
        cmp ebx, 80
        jb .next
        xor ebx, ebx
.next:  dec ecx
        jnz .loop
        mov dx, DEBUG_EXIT
        mov al, 0
        out dx, al
        hlt
