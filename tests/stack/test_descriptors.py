"""LAR, LSL, VERR, VERW, SLDT and STR (SDM Vol. 2A LAR, LSL; Vol. 2B VERR/VERW, SLDT, STR) over
a GDT of every kind of descriptor and the LDT reset leaves at linear 0 (SDM Vol. 3A,
"Processor State Following Power-up, Reset, or INIT": LDTR base 0, limit FFFF):
tests/stack/descriptors.asm on bare metal, both MMUs and the host's KVM prints what
qemu-system-i386 prints. vmsim raised #UD for all six and took LDTR for null, so that a
selector with TI = 1 was #GP. (The host's kvm_pvm runs SLDT, STR and the LDT's segment load,
then refuses LAR: an emulation failure.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.stack.stackrun import printed_lines
from tests.stack.test_qemu import run_qemu
from vmsim.asm import assemble
from vmsim.kvm.api import EXIT_KVM_FAILED

GUEST = Path(__file__).resolve().parent / "descriptors.asm"
SELECTORS = [0x0000, 0x0003, 0x0FF8, 0x00C0, 0x000C, 0x000F, 0x0014, 0x0017, 0x001C] + [
    8 * k + rpl for k in range(1, 24) for rpl in range(4)]
HEAD = 4  # SLDT EAX, STR EAX, SLDT into memory, the LDT's data descriptor
FAIL = ["00000000"] + ["DEADBEEF"] * 4


@pytest.mark.parametrize("way", ["bare", "sim-ept", "sim-shadow", "kvm"])
def test_lar_lsl_verr_verw(way: str, tmp_path: Path) -> None:
    status, words = printed_lines(GUEST, way)
    image = assemble(GUEST.read_text(), str(GUEST))
    printed, qemu_status = run_qemu(image.data, tmp_path)
    qemu = printed.decode().split()
    if way == "kvm" and status == EXIT_KVM_FAILED:
        assert words == qemu[:HEAD]
        pytest.skip("the host's KVM refuses LAR (kvm_pvm: an emulation failure); SLDT, STR "
                    "and the LDT's segment agreed with QEMU")
    assert status == 1 and len(words) == HEAD + 5 * len(SELECTORS)
    # Selectors 0 (LDTR, TR), a word with its upper half kept, ES's descriptor now accessed.
    assert words[:HEAD] == ["00000000", "00000000", "FFFF0000", "00CF9300"]
    at = {sel: words[HEAD + 5 * i:HEAD + 5 * i + 5] for i, sel in enumerate(SELECTORS)}
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
    # In the LDT: the data segment (accessed by the load; DPL 0, so not with RPL 3), the
    # call gate (DPL 3), an empty entry.
    assert at[0x0C] == ["0000003F", "00C09300", "DEAD9300", "FFFFFFFF", "DEADFFFF"]
    assert at[0x0F] == at[0x1C] == FAIL
    assert at[0x14][:2] == at[0x17][:2] == ["00000030", "0000EC00"]
    assert (qemu_status, qemu) == (status, words)
