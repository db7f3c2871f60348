; less common system and legacy instructions
bits 32
top:
    jcxz top
    xlat
    xlatb
    sysenter
    sysexit
    rdtscp
    rsm
    cmpxchg8b [esi]
    nop eax
    nop dword [eax+4]
    nop word [eax]
    aaa
    aas
    daa
    das
    aam
    aam 16
    aad
    aad 16
    salc
    bound eax, [ebx]
    bound ax, [esi+4]
    bound edi, [ebp-8]
    bound ecx, [eax*4+0x1000]
    les eax, [ebx]
    lds si, [ebx]
    lss esp, [stack_ptr]
    lfs eax, [ebx+4]
    lgs ax, [ebx]
    lar eax, ebx
    lsl ecx, [esi]
    verr ax
    verw word [esi]
    lldt [esi]
    sldt ax
    str eax
    smsw ax
    lmsw word [ebx]
    invd
    rdpmc
    mov dr6, eax
    mov esi, dr3
stack_ptr: dd 0x90000
    dw 0x10
    str ax
    str [eax]
    sldt [eax]
    smsw [eax]
    lar ax, bx
