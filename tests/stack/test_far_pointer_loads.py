"""LDS, LES, LFS, LGS and LSS (SDM Vol. 2A): a far pointer's offset into a register and
its selector into a segment register, with 32- and 16-bit offsets. On bare metal, on the
simulated kvm.ko with EPT and with shadow paging, and on the host's KVM (the oracle): the
registers, the selectors and the exit status must be the same. LSS with a null selector is
#GP(0): with no IDT, a triple fault everywhere."""

from __future__ import annotations

import pytest

from tests.stack.stackrun import guest_sees, host_kvm_problem

RESULTS = 0x3000
GDT = """gdt:    dq 0
        dq 0x00CF9A000000FFFF
        dq 0x00CF92000000FFFF
gdt_end:
gdt_descriptor:
        dw gdt_end - gdt - 1
        dd gdt"""


def _guest(body: str) -> str:
    stores = "\n        ".join(f"mov [{RESULTS + 4 * i:#x}], {r}" for i, r in
                               enumerate(("eax", "ebx", "ecx", "edx", "esp", "esi", "edi")))
    sregs = "\n        ".join(f"mov ax, {s}\n        mov [{RESULTS + 28 + 2 * i:#x}], ax"
                              for i, s in enumerate(("ds", "es", "fs", "gs", "ss")))
    return f"""bits 32
org 0x100000
        lgdt [gdt_descriptor]
        mov dword [0x3100], 0x12345678
        mov word [0x3104], 0x10
        mov dword [0x3108], 0x8fff0
        mov word [0x310c], 0x10
        mov dword [0x3110], 0xabcd
        mov word [0x3114], 0
        mov word [0x3118], 0x4321
        mov word [0x311a], 0x10
        mov eax, 0x11111111
        mov ebx, 0x22222222
        mov ecx, 0x33333333
        mov edx, 0x44444444
        {body}
        {stores}
        {sregs}
        mov dx, 0x501
        mov al, 0
        out dx, al
{GDT}
"""


PROGRAMS = [
    "lds eax, [0x3100]",
    "les ebx, [0x3100]\nlfs ecx, [0x3110]",  # FS null: allowed for a data segment
    "lgs dx, [0x3118]",  # a 16-bit offset: the high half of EDX stays
    "lss esp, [0x3108]\npush dword 7\npop edi",
    "mov esi, 0x3100\nlds esi, [esi]",  # the address's register is the destination
    "lss esp, [0x3110]",  # a null SS: #GP(0), a triple fault with no IDT
    "lfs eax, [0x3100]\nlgs ebx, [0x3110]\nles ecx, [0x3108]",
]


@pytest.mark.parametrize("body", PROGRAMS)
def test_far_pointer_loads_agree_with_the_hardware(body: str) -> None:
    text = _guest(body)
    reads = ((RESULTS, 38),)
    bare = guest_sees(text, "bare", "ept", reads)
    for paging in ("ept", "shadow"):
        assert guest_sees(text, "sim", paging, reads) == bare, f"{paging} differs:\n{body}"
    if host_kvm_problem() is None:
        assert guest_sees(text, "kvm", "ept", reads) == bare, f"the host's KVM differs:\n{body}"


def test_what_the_loads_leave() -> None:
    """Independently of the backends: the values the SDM's operation gives."""
    _, shutdown, seen = guest_sees(_guest("lds eax, [0x3100]\nlfs ecx, [0x3110]\n"
                                          "lgs dx, [0x3118]\nlss esp, [0x3108]"),
                                   "bare", "ept", ((RESULTS, 38),))
    assert not shutdown
    regs = [int.from_bytes(seen[i:i + 4], "little") for i in range(0, 28, 4)]
    sregs = [int.from_bytes(seen[28 + i:30 + i], "little") for i in range(0, 10, 2)]
    assert regs[0] == 0x12345678 and regs[2] == 0xABCD and regs[3] == 0x44444321
    assert regs[4] == 0x8FFF0
    assert sregs == [0x10, 0x10, 0, 0x10, 0x10]  # DS ES FS GS SS
