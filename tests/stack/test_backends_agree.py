"""Where the architecture decides, every backend ends the same way: `vmsim run` on bare
metal, on the simulated kvm.ko with EPT and with shadow paging gives the same exit status,
the same serial output and the same stderr line (which names the EIP).

- Clearing CR0.PE and enabling PAE paging: vmsim models neither, so every backend stops at
  that MOV to CR with the same "unsupported" line and status 70.
- `rep outsb` to isa-debug-exit: QEMU's device exits at the first write (KVM and QEMU end
  with the first byte), so bare metal does too.
- Triple faults: the EIP reported is the one the shutdown saved, that of the instruction
  whose fault could not be delivered (SDM Vol. 3A 6.15 "Interrupt 8": the triple fault
  is a shutdown at the faulting instruction), for INT n and INT3 (2 and 1 bytes) too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vmsim.cli import main

DATA = Path(__file__).resolve().parents[1] / "data" / "guests"
BACKENDS = (("--backend", "bare"), ("--paging", "ept"), ("--paging", "shadow"))

HEADER = "bits 32\norg 0x100000\n"
GDT = """
        lgdt [gdtr]
        jmp 0x08:.cs
.cs:    mov ax, 0x10
        mov ds, ax
        mov ss, ax
"""
TABLES = """
        align 8
gdt:    dq 0
        dq 0x00CF9A000000FFFF
        dq 0x00CF92000000FFFF
gdtr:   dw 23
        dd gdt
"""
GUESTS = {
    "clear_pe": """
        mov eax, cr0
        and eax, ~1
        mov cr0, eax
        mov dx, 0x501
        mov al, 5
        out dx, al
""",
    "pae_paging": """
        mov eax, cr4
        or eax, 0x20
        mov cr4, eax
        mov eax, 0x200000
        mov cr3, eax
        mov eax, cr0
        or eax, 0x80000000
        mov cr0, eax
        mov dx, 0x501
        mov al, 5
        out dx, al
""",
    "rep_outsb_debug_exit": """
        mov esi, data
        mov ecx, 3
        mov dx, 0x501
        rep outsb
        hlt
data:   db 7, 8, 9
""",
    # IDT limit 0: INT n and INT3 fault (#GP), so does the #DF: shutdown at the INT.
    "int_n_no_idt": GDT + "        nop\n        int 0x40\n" + TABLES,
    "int3_no_idt": GDT + "        nop\n        int3\n" + TABLES,
    "ud2_no_idt": GDT + "        ud2\n" + TABLES,
    # A gate to a valid handler, but no stack: the pushes go nowhere RAM is (in the sim
    # backend: EPT violations / MMIO emulation during the delivery of a software interrupt).
    "int_n_stack_outside_ram": GDT + """
        mov eax, handler
        mov [idt + 0x40 * 8], ax
        mov word [idt + 0x40 * 8 + 2], 0x08
        mov word [idt + 0x40 * 8 + 4], 0x8E00
        shr eax, 16
        mov [idt + 0x40 * 8 + 6], ax
        lidt [idtr]
        mov esp, 0xC0000000
        int 0x40
handler:
        mov dx, 0x501
        mov al, 3
        out dx, al
idtr:   dw 0x41 * 8 - 1
        dd idt
idt:    times 0x41 * 8 db 0
""" + TABLES,
    # INT n and INT3 whose delivery exits (the stack's page is touched first there: an EPT
    # violation, or a shadow #PF) are injected again with their length: the handler
    # sees the return EIP past the instruction (sent to COM1: its low two bytes).
    "soft_int_frame_eip": GDT + """
        mov eax, handler
        mov [idt + 3 * 8], ax
        mov [idt + 0x40 * 8], ax
        mov word [idt + 3 * 8 + 2], 0x08
        mov word [idt + 0x40 * 8 + 2], 0x08
        mov word [idt + 3 * 8 + 4], 0x8E00
        mov word [idt + 0x40 * 8 + 4], 0x8E00
        shr eax, 16
        mov [idt + 3 * 8 + 6], ax
        mov [idt + 0x40 * 8 + 6], ax
        lidt [idtr]
        mov esp, 0x300000
        int 0x40
after_int_n:
        mov esp, 0x380000
        int3
after_int3:
        mov dx, 0x501
        mov al, 5
        out dx, al
handler:
        mov eax, [esp]
        mov dx, 0x3F8
        out dx, al
        mov al, ah
        out dx, al
        iret
idtr:   dw 0x41 * 8 - 1
        dd idt
idt:    times 0x41 * 8 db 0
""" + TABLES,
}


def _run(args: list[str], capsysbinary) -> tuple[int, bytes, str]:
    status = main(["run", "--max-instructions", "2000000", *args])
    out = capsysbinary.readouterr()
    return status, out.out, out.err.decode()


@pytest.mark.parametrize("name", GUESTS)
def test_backends_end_alike(name: str, tmp_path: Path, capsysbinary) -> None:
    guest = tmp_path / f"{name}.asm"
    guest.write_text(HEADER + GUESTS[name])
    results = {b: _run([*b, str(guest)], capsysbinary) for b in BACKENDS}
    first = results[BACKENDS[0]]
    for b, r in results.items():
        assert r == first, f"{name}: {' '.join(b)} ended {r}, bare {first}"
    if name in ("clear_pe", "pae_paging"):
        assert first[0] == 70 and "stopped at eip 0x" in first[2]
    if name == "rep_outsb_debug_exit":
        assert first[0] == (7 << 1) | 1
    if name == "soft_int_frame_eip":
        from vmsim.asm import assemble

        sym = assemble(HEADER + GUESTS[name], "soft_int_frame_eip.asm").symbols
        want = b"".join((sym[k] & 0xFFFF).to_bytes(2, "little")
                        for k in ("after_int_n", "after_int3"))
        assert first[0] == (5 << 1) | 1 and first[1] == want, first


@pytest.mark.parametrize("name", sorted(p.stem for p in DATA.glob("triple_*.asm")))
def test_triple_faults_report_the_same_eip(name: str, capsysbinary) -> None:
    """tests/data/guests' triple faults (built with nasm: they use %include)."""
    from tests.guests.guestrun import build, nasm_path

    if nasm_path() is None:
        pytest.skip("nasm is not installed")
    guest = build(name)
    results = {b: _run([*b, str(guest)], capsysbinary) for b in BACKENDS}
    first = results[BACKENDS[0]]
    assert "triple fault" in first[2]
    for b, r in results.items():
        assert r == first, f"{name}: {' '.join(b)} ended {r}, bare {first}"
