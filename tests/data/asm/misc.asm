; push/pop, string ops, flags, I/O, system and interrupt instructions
bits 32
org 0x8000
start:
    push eax
    push esp
    push di
    push dword [ebx]
    push word [ebx+2]
    push es
    push cs
    push ss
    push ds
    push fs
    push gs
    push 0
    push 127
    push 128
    push -128
    push -129
    push 0x12345678
    push byte -1
    push word 0x1234
    push word 5
    push strict dword 5
    push start
    push K
    pop eax
    pop si
    pop dword [esp+4]
    pop word [eax]
    pop es
    pop ss
    pop ds
    pop fs
    pop gs
    pusha
    pushad
    pushaw
    popa
    popad
    popaw
    pushf
    pushfd
    pushfw
    popf
    popfd
    popfw
    cbw
    cwde
    cwd
    cdq
    leave
    enter 16, 0
    enter 0x100, 1
    sahf
    lahf
    xlatb
    movsb
    movsw
    movsd
    cmpsb
    cmpsw
    cmpsd
    stosb
    stosw
    stosd
    lodsb
    lodsw
    lodsd
    scasb
    scasw
    scasd
    insb
    insw
    insd
    outsb
    outsw
    outsd
    rep movsb
    rep movsd
    rep movsw
    rep stosd
    repe cmpsb
    repz cmpsd
    repne scasb
    repnz scasw
    rep insb
    rep outsw
    es movsb
    fs lodsd
    clc
    stc
    cmc
    cld
    std
    cli
    sti
    nop
    pause
    hlt
    in al, 0x60
    in ax, 0x60
    in eax, 0xff
    in al, dx
    in ax, dx
    in eax, dx
    out 0x80, al
    out 0x80, ax
    out 0, eax
    out dx, al
    out dx, ax
    out dx, eax
    lgdt [gdtr]
    lidt [idtr]
    sgdt [eax]
    sidt [ebx+4]
    lldt ax
    ltr word [eax]
    ltr cx
    invlpg [eax]
    invlpg [0x1000]
    cpuid
    rdmsr
    wrmsr
    rdtsc
    vmcall
    vmlaunch
    vmresume
    ud2
    wbinvd
    clts
    int 0x80
    int 3
    int3
    int 0
    int 255
    into
    iret
    iretd
    iretw
    ret
    retf
    lock inc dword [eax]
    lock xchg [eax], ecx
    mov word [es:edi], 5
    rep movsd
    bswap ecx
    int1
gdtr: dw 0x17
      dd 0
idtr: dw 0x7ff
      dd 0x1000
K equ 0x42
