"""LLDT and LTR (SDM Vol. 2A LLDT, LTR) over a GDT of LDTs, TSSs and other descriptors:
tests/stack/ldt_tr.asm on bare metal and both MMUs prints what qemu-system-i386 prints, but
for its last case (LTR of a null selector, #GP(0) by the SDM; QEMU 7.2 loads it). Before,
vmsim raised #UD for both. Under VMX the exits between the cases store LDTR and TR into
the VMCS and the entries load them back; after the run the VMCS holds the TR that the last
LTR loaded, as a VM exit stores it. (The host's kvm_pvm refuses LAR, and IRET.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.stack.stackrun import printed_lines
from tests.stack.test_qemu import run_qemu
from vmsim.asm import assemble
from vmsim.hw.vmcs import F
from vmsim.kvm.api import EXIT_KVM_FAILED
from vmsim.session import Session

GUEST = Path(__file__).resolve().parent / "ldt_tr.asm"
WORDS = 6  # per case: the fault, SLDT, STR, the GDT entry, FS's fault, LAR of 0C
NONE = "FFFFFFFF"


def _cases(words: list[str]) -> list[list[str]]:
    return [words[i:i + WORDS] for i in range(0, len(words), WORDS)]


@pytest.mark.parametrize("way", ["bare", "sim-ept", "sim-shadow", "kvm"])
def test_lldt_ltr(way: str, tmp_path: Path) -> None:
    status, words = printed_lines(GUEST, way)
    image = assemble(GUEST.read_text(), str(GUEST))
    printed, qemu_status = run_qemu(image.data, tmp_path)
    qemu = _cases(printed.decode().split())
    if way == "kvm" and status == EXIT_KVM_FAILED:
        assert len(words) >= 5 and words == printed.decode().split()[:len(words)]
        pytest.skip("the host's KVM refuses LAR (kvm_pvm: an emulation failure); LLDT, SLDT, "
                    "STR and the load from the new LDT agreed with QEMU")
    cases = _cases(words)
    assert status == qemu_status == 1 and len(cases) == len(qemu) == 23
    # A few by hand from the SDM: (fault, SLDT, STR, GDT entry's high dword, FS, LAR 0C).
    assert cases[0] == [NONE, "00000018", "00000000", "00008210", NONE, "00C09300"]
    assert cases[2][4:] == ["000D000C", "DEADBEEF"]  # 0C past the short LDT's limit
    assert cases[4][:2] == ["000B0028", "00000050"]  # #NP(28), LDTR as it was
    assert cases[9] == [NONE, "00000000", "00000000", "00000000", "000D000C", "DEADBEEF"]
    assert cases[13][:4] == [NONE, "00000018", "00000030", "00008B00"]  # now busy
    assert cases[14][0] == "000D0030"  # a busy TSS: #GP(30)
    assert cases[15][2:4] == ["00000038", "00808300"]  # 16-bit TSS, busy
    assert cases[-1][:3] == ["000D0000", "00000018", "00000049"]  # null: #GP(0), TR kept
    assert cases[:-1] == qemu[:-1]
    assert qemu[-1][:3] == [NONE, "00000018", "00000000"]  # QEMU loads the null selector


@pytest.mark.parametrize("paging", ["ept", "shadow"])
def test_the_vmcs_holds_what_ltr_loaded(paging: str) -> None:
    """The last exit stored TR (selector 49, the TSS at 30 of limit 67, a busy 32-bit
    TSS: type B, present) and LDTR (18: base of ldt0, limit 17, an LDT: type 2, present)."""
    image = assemble(GUEST.read_text(), str(GUEST))
    s = Session(image, "sim", paging=paging)
    assert s.run().exit_status == 1
    vmcs = s.vm.cpus[0].vcpu.vmcs
    assert [vmcs.read(f) for f in (F.GUEST_TR_SELECTOR, F.GUEST_TR_BASE, F.GUEST_TR_LIMIT,
                                   F.GUEST_TR_AR_BYTES)] == [0x49, 0x30, 0x67, 0x8B]
    assert [vmcs.read(f) for f in (F.GUEST_LDTR_SELECTOR, F.GUEST_LDTR_BASE,
                                   F.GUEST_LDTR_LIMIT, F.GUEST_LDTR_AR_BYTES)] == [
        0x18, image.symbols["ldt0"], 0x17, 0x82]
