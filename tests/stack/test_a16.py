"""String instructions and LOOPcc with a 16-bit address size (a 0x67 prefix in 32-bit
code) address with SI and DI and count in CX, each wrapping within 64 KiB with the upper
half of its register kept (SDM Vol. 2 MOVS ... OUTS, LOOPcc): tests/stack/a16.asm, on bare
metal, both MMUs (its REP OUTSB and INSW through kvm.ko's instruction emulator) and the
host's KVM, each printing what qemu-system-i386 prints. vmsim refused most of them (#UD,
"not in subset") and ran LOOP, LODS, SCAS and OUTS with ECX, ESI and EDI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.stack.stackrun import printed_lines
from tests.stack.test_qemu import run_qemu
from vmsim.asm import assemble

GUEST = Path(__file__).resolve().parent / "a16.asm"


@pytest.mark.parametrize("way", ["bare", "sim-ept", "sim-shadow", "kvm"])
def test_a16_string_instructions_and_loops(way: str, tmp_path: Path) -> None:
    status, lines = printed_lines(GUEST, way)
    assert status == 1
    assert lines[0] == "a16!"  # REP OUTSB of four bytes downwards, CX = 4, ECX = 0x44440004
    v = [int(x, 16) for x in lines[1:]]
    # (What the SDM gives, worked out by hand: the step's comments in a16.asm.)
    assert v[0:3] == [0x12340000, 0xA5A56010, 0x5A5A7010]  # REP MOVSB: CX 16 -> 0, SI, DI + 16
    assert v[7] == 0x7777FFFA and v[8:10] == [0xBEEFBEEF] * 2  # REP STOSW down across 0
    assert v[10] == 0x44332211 and v[12] == 0x99990002  # LODSD across 64 KiB; SI wraps to 2
    assert v[15] == 0xCAFE001A and v[17] == 0xCAFE6006  # REPNE SCASB stops after SRC[5]
    assert v[19:22] == [0x33330003, 0x11116012, 0x22227012]  # REPE CMPSW: the 9th word differs
    assert v[22:24] == [0x44440000, 0x444460FF]  # REP OUTSB
    assert v[25:29] == [0xABCD0000, 0x444460FF, 0x66666206, 0x0000FFFF]  # REP INSW, CX = 3
    assert v[29:31] == [0x10000, 0xABCD0000]  # LOOP from CX = 0: 65,536 times
    assert v[33:35] == [3, 0x55550002] and v[37:39] == [4, 0x77770000]  # LOOPNE, LOOPE
    assert v[41] == 0  # JCXZ with CX = 0, ECX = 0x10000: taken
    image = assemble(GUEST.read_text(), str(GUEST))
    printed, qemu_status = run_qemu(image.data, tmp_path)
    assert (qemu_status, printed.decode().split()) == (status, lines)
