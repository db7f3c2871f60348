"""Far CALL and RETF with a 16-bit operand size push and pop IP and CS as words (SDM Vol. 2A
CALL, RET: "Push(CS); Push(IP)"): tests/stack/far16.asm, on bare metal, both MMUs and the
host's KVM (whose processor runs them itself), each printing what qemu-system-i386 prints.
vmsim pushed EIP and CS as dwords and refused the 16-bit RETF; its assembler dropped the
`word` of `call word sel:off` and the `o16` before `retf`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.stack.stackrun import printed_lines
from tests.stack.test_qemu import run_qemu
from vmsim.asm import assemble

GUEST = Path(__file__).resolve().parent / "far16.asm"
LOW = 0x8000


@pytest.mark.parametrize("way", ["bare", "sim-ept", "sim-shadow", "kvm"])
def test_far_calls_with_a_16_bit_operand_size(way: str, tmp_path: Path) -> None:
    status, lines = printed_lines(GUEST, way)
    assert status == 1
    image = assemble(GUEST.read_text(), str(GUEST))
    values = [int(v, 16) for v in lines]
    # Inside each callee ESP is 4 below (two words); RETF takes them back, RETF 6 six more.
    assert values[:6] == [0x8FFFC, 0x90000, 0x8FFFC, 0x90000, 0x8FFFC, 0x90006]
    # The words pushed by the last call to each callee: CS (0x08) above IP, the return
    # address as it runs below 64 KiB.
    at = {name: image.symbols[name] - image.symbols["blob"] + LOW for name in ("r2", "r3")}
    assert values[6:] == [0x08 << 16 | at["r2"], 0x08 << 16 | at["r3"]]
    printed, qemu_status = run_qemu(image.data, tmp_path)
    assert (qemu_status, printed.decode().split()) == (status, lines)
