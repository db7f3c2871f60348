"""MOV to and from CR3 with every general register, ESP too, and MOV to CR0 with reserved
bits, on every backend. Under shadow paging both CR3 moves exit (CR3-load and CR3-store
exiting), and kvm.ko's handle_cr moves the value between CR3 and the register itself; ESP
is the one GPR the VMCS holds (GUEST_RSP), so a write that went to the CPU alone was undone
by the next VM entry (vmsim's shadow MMU left `mov esp, cr3` without effect). The oracle is
the architecture: every register reads the value loaded, and CR3 loaded from ESP reads back
that value, as on bare metal."""

from __future__ import annotations

import pytest

from tests.stack.stackrun import host_kvm_problem
from vmsim.asm import assemble
from vmsim.session import Session

GUEST = assemble("""bits 32
org 0x100000
        mov esp, 0x7000
        mov cr3, esp            ; CR3 loaded from ESP ...
        mov eax, cr3
        mov [from_esp], eax     ; ... reads back 0x7000
        mov eax, 0x5000
        mov cr3, eax
        mov ecx, cr3
        mov ebx, cr3
        mov esp, cr3
        mov ebp, cr3
        mov esi, cr3
        mov edi, cr3
        mov [esp_seen], esp     ; (the stack is not used: ESP is a value here)
        mov dx, 0x501
        mov al, 0
        out dx, al              ; isa-debug-exit
from_esp: dd 0
esp_seen: dd 0
""", "<cr3 operands>")

BACKENDS = [("bare", "ept"), ("sim", "ept"), ("sim", "shadow"), ("kvm", "ept")]


@pytest.mark.parametrize(("backend", "paging"), BACKENDS)
def test_cr3_moves_with_every_register(backend: str, paging: str) -> None:
    if backend == "kvm" and (problem := host_kvm_problem()):
        pytest.skip(problem)
    s = Session(GUEST, backend, paging=paging) if backend == "sim" else Session(GUEST, backend)
    outcome = s.run()
    assert outcome.exit_status == 1
    regs = s.registers()
    assert {r: regs[r] for r in ("ECX", "EBX", "ESP", "EBP", "ESI", "EDI")} == dict.fromkeys(
        ("ECX", "EBX", "ESP", "EBP", "ESI", "EDI"), 0x5000)
    assert s.read_linear(GUEST.symbols["from_esp"], 4) == (0x7000).to_bytes(4, "little")
    assert s.read_linear(GUEST.symbols["esp_seen"], 4) == (0x5000).to_bytes(4, "little")


RESERVED = assemble("""bits 32
org 0x100000
        mov eax, cr0
        or eax, 0x10021040      ; reserved bits 6, 12, 17 and 28
        and eax, ~0x10          ; and ET cleared
        mov cr0, eax            ; no #GP: ignored (there is no IDT: a fault would shut down)
        mov ebx, cr0
        mov [seen], ebx
        mov dx, 0x501
        mov al, 0
        out dx, al
seen:   dd 0
""", "<cr0 reserved>")


@pytest.mark.parametrize(("backend", "paging"), BACKENDS)
def test_cr0_reserved_bits_are_ignored_and_et_stays_set(backend: str, paging: str) -> None:
    # Bochs (P6: (value | ET) & 0xE005003F) and KVM's kvm_set_cr0 ("Write to CR0 reserved
    # bits are ignored, even on Intel"; cr0 |= X86_CR0_ET): only PG without PE and NW
    # without CD fault. vmsim raised #GP for the reserved bits and its kvm.ko cleared ET.
    if backend == "kvm" and (problem := host_kvm_problem()):
        pytest.skip(problem)
    s = Session(RESERVED, backend, paging=paging) if backend == "sim" else \
        Session(RESERVED, backend)
    assert s.run().exit_status == 1
    cr0 = int.from_bytes(s.read_linear(RESERVED.symbols["seen"], 4), "little")
    assert cr0 == 0x11  # PE, ET: as it started
