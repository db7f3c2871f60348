"""A read-modify-write instruction whose write faults (a read-only page, CR0.WP) is a fault:
the processor state is restored to that before the instruction (SDM Vol. 3A 6.5 "Faults"),
so the frame holds the EFLAGS the instruction found, and memory is unchanged. BTS/BTR/BTC
with an immediate, and the rotates, once set CF before their write."""

from __future__ import annotations

import pytest

from tests.guests.cpubench import CODE, Bench
from vmsim.asm import assemble
from vmsim.hw import exceptions as X

RO = 0x200000  # mapped present, read-only
BEFORE = 0x46  # ZF PF (xor eax, eax), CF clear, reserved bit 1


@pytest.mark.parametrize("insn", [
    "add dword [RO], 1", "adc dword [RO], 1", "inc dword [RO]", "neg dword [RO]",
    "not dword [RO]", "shl dword [RO], 1", "rcr dword [RO], cl", "rol word [RO], 4",
    "ror byte [RO], 1", "rcl dword [RO], 1", "sar dword [RO], cl", "xadd [RO], ebx",
    "cmpxchg [RO], ebx", "xchg [RO], ebx", "bts dword [RO], 5", "btr dword [RO], 5",
    "btc dword [RO], 0", "bts dword [RO], ebx", "btr word [RO], 3", "shld [RO], ebx, 4",
    "shrd [RO], ebx, cl", "or byte [RO], 0x80", "sbb word [RO], 1",
])
def test_a_faulting_write_leaves_flags_and_memory(insn: str) -> None:
    image = assemble(f"bits 32\norg {CODE:#x}\nRO equ {RO:#x}\nmov ebx, 0x1234\n"
                     f"mov ecx, 3\nxor eax, eax\n{insn}\n", "<rmw>")
    b = Bench(image.data)
    b.all_gates()
    b.paging()
    b.map(RO, RO | 1)  # present, not writable
    b.mem.write(RO, 4, 0xA5A5FFFF)  # bit 5 set: BTS would set CF
    b.run()
    assert b.cpu.eip == b.handler(X.PF) + 1
    error_code, eip, _, eflags = b.stack(4)
    assert error_code == 0b011  # present, write
    assert eip == CODE + 12  # the faulting instruction, after 5 + 5 + 2 bytes of set-up
    assert eflags & 0x8D5 == BEFORE & 0x8D5, f"{insn}: flags {eflags:#x}"
    assert b.mem.read(RO, 4) == 0xA5A5FFFF
    assert b.cpu.r[3] == 0x1234 and b.cpu.r[0] == 0  # register operands too
