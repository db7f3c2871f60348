; a multiboot (v1) kernel header and entry, as guests use it
bits 32
MB_MAGIC    equ 0x1BADB002
MB_ALIGN    equ 1 << 0
MB_MEMINFO  equ 1 << 1
MB_FLAGS    equ MB_ALIGN | MB_MEMINFO
MB_CHECKSUM equ -(MB_MAGIC + MB_FLAGS)
STACK_SIZE  equ 0x4000
org 0x100000
section .text
align 4
mb_header:
    dd MB_MAGIC
    dd MB_FLAGS
    dd MB_CHECKSUM
    dd mb_header
    dd 0x100000
    dd end_of_data
    dd end_of_bss
    dd entry
entry:
    mov esp, stack_top
    push 0
    popfd
    push ebx
    push eax
    call kmain
.hang:
    cli
    hlt
    jmp .hang
kmain:
    push ebp
    mov ebp, esp
    mov eax, [ebp+8]
    cmp eax, 0x2BADB002
    jne .bad
    mov dx, 0x3f8
    mov esi, msg
.next:
    lodsb
    test al, al
    jz .out
    out dx, al
    jmp .next
.out:
    mov eax, 0
    vmcall
.bad:
    mov esp, ebp
    pop ebp
    ret
gdt:
    dq 0
    dq 0x00CF9A000000FFFF
    dq 0x00CF92000000FFFF
gdt_end:
gdt_ptr:
    dw gdt_end - gdt - 1
    dd gdt
load_gdt:
    lgdt [gdt_ptr]
    jmp 0x08:.reload
.reload:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov eax, cr0
    or eax, 1
    mov cr0, eax
    and eax, ~(1 << 31)
    ret
section .data
msg: db "Hello from the guest", 13, 10, 0
end_of_data:
section .bss
alignb 16
stack: resb STACK_SIZE
stack_top:
end_of_bss:
