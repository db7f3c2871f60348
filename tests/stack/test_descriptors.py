"""LAR, LSL, VERR and VERW (SDM Vol. 2A LAR, LSL; Vol. 2B VERR/VERW) over a GDT of every kind
of descriptor: tests/stack/descriptors.asm on bare metal and both MMUs prints what
qemu-system-i386 prints (the host's kvm_pvm refuses LAR: an emulation failure, skipped).
vmsim raised #UD for all four."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.stack.stackrun import printed_lines
from tests.stack.test_qemu import run_qemu
from vmsim.asm import assemble
from vmsim.kvm.api import EXIT_KVM_FAILED

GUEST = Path(__file__).resolve().parent / "descriptors.asm"
SELECTORS = [0x0000, 0x0003, 0x0FF8, 0x00C0] + [8 * k + rpl for k in range(1, 24) for rpl in range(4)]
FAIL = ["00000000"] + ["DEADBEEF"] * 4


@pytest.mark.parametrize("way", ["bare", "sim-ept", "sim-shadow", "kvm"])
def test_lar_lsl_verr_verw(way: str, tmp_path: Path) -> None:
    status, words = printed_lines(GUEST, way)
    if way == "kvm" and status == EXIT_KVM_FAILED and not words:
        pytest.skip("the host's KVM refuses LAR (kvm_pvm: an emulation failure)")
    assert status == 1 and len(words) == 5 * len(SELECTORS)
    at = {sel: words[5 * i:5 * i + 5] for i, sel in enumerate(SELECTORS)}
    # The SDM's rules, a few worked by hand: (ZF bits, LAR EAX, LAR AX, LSL EAX, LSL AX).
    assert at[0x0000] == at[0x0003] == at[0x0FF8] == at[0x00C0] == FAIL  # null, past the limit
    # Readable code, page granular: access rights masked by 00FxFF00, limit FFFFFFFF.
    assert at[0x08] == ["0000003E", "00C09B00", "DEAD9B00", "FFFFFFFF", "DEADFFFF"]
    assert at[0x1B] == ["0000003F", "0000F200", "DEADF200", "00012345", "DEAD2345"]  # DPL 3
    assert at[0x22] == at[0xBA] == FAIL  # RPL 2 above DPL 1
    assert at[0x33][0] == "0000003E"  # conforming code: no privilege check
    assert at[0x50][:2] == ["00000030", "0000EC00"]  # a call gate: LAR only
    assert at[0x60] == at[0x68] == at[0xA8] == FAIL  # interrupt gate, reserved, trap gate
    assert at[0x80][0] == "0000003F"  # not present: none of them looks at P
    image = assemble(GUEST.read_text(), str(GUEST))
    printed, qemu_status = run_qemu(image.data, tmp_path)
    assert (qemu_status, printed.decode().split()) == (status, words)
