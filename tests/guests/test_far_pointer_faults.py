"""LDS/LES/LFS/LGS/LSS when the selector's load faults (SDM Vol. 2A LDS/LES/LFS/LGS/LSS:
"DS <- SegmentSelector(SRC); DEST <- Offset(SRC)", the segment load's checks as MOV's): the
fault comes with the instruction's EIP and the destination register as it was, so the
handler can fix the descriptor and the instruction run again."""

from __future__ import annotations

import struct

import pytest

from tests.guests.cpubench import CODE, GDT, Bench
from vmsim.asm import assemble
from vmsim.hw import exceptions as X
from vmsim.hw.cpu import DS, SS, StopReason

NOT_PRESENT_DATA = 0x00CF12000000FFFF  # flat data, P=0


def _bench(body: str) -> Bench:
    image = assemble(f"bits 32\norg {CODE:#x}\n{body}\n", "<far pointer>")
    b = Bench(image.data)
    b.all_gates()
    b.mem.load(GDT + 0x18, struct.pack("<Q", NOT_PRESENT_DATA))
    b.cpu.gdtr = (GDT, 0x1F)
    b.mem.load(0x5000, struct.pack("<IH", 0x12345678, 0x18))  # -> the not-present 0x18
    b.mem.load(0x5010, struct.pack("<IH", 0x9000, 0))  # a null selector
    b.mem.load(0x5020, struct.pack("<IH", 0x9000, 0x20))  # beyond the GDT's limit
    return b


@pytest.mark.parametrize(("insn", "vector", "code"), [
    ("lds eax, [0x5000]", X.NP, 0x18),
    ("lss eax, [0x5000]", X.SS, 0x18),  # a not-present stack segment is #SS
    ("lss eax, [0x5010]", X.GP, 0),
    ("les eax, [0x5020]", X.GP, 0x20),
])
def test_a_faulting_load_leaves_the_register(insn: str, vector: int, code: int) -> None:
    b = _bench(f"mov eax, 0xCAFEF00D\n{insn}")
    ds, ss = b.cpu.seg[DS], b.cpu.seg[SS]
    assert b.run() is StopReason.HLT
    assert b.cpu.eip == b.handler(vector) + 1  # delivered to its handler
    assert b.stack(2) == [code, CODE + 5]  # the error code, the EIP of the load
    assert b.cpu.r[0] == 0xCAFEF00D
    assert b.cpu.seg[DS] == ds and b.cpu.seg[SS] == ss


def test_a_null_selector_loads_a_data_segment_register() -> None:
    b = _bench("lds eax, [0x5010]\nhlt")
    assert b.run() is StopReason.HLT and b.cpu.eip == CODE + 7  # past the HLT
    assert b.cpu.r[0] == 0x9000 and b.cpu.seg[DS].selector == 0


def test_a_register_source_is_ud() -> None:
    # C5 C0 would be LDS EAX, EAX: in 32-bit mode mod 3 is #UD (the VEX prefix only in
    # 64-bit mode or with bits that make it one).
    b = _bench("")
    b.mem.load(CODE, bytes.fromhex("0fb2c0"))  # LSS EAX, EAX: mod 3
    assert b.run() is StopReason.HLT and b.cpu.eip == b.handler(X.UD) + 1
