"""QEMU's writes to guest RAM (a device's DMA, PhysicalMemory.load and .write on the
machine's memory) reach the instructions the vCPUs decoded, though the simulated kvm.ko
views RAM through a memory object of its own: on x86 DMA is coherent with the processors'
caches, so code a disk read overwrites runs as the new bytes, never as the old decode."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmsim.asm import assemble
from vmsim.session import Session
from vmsim.vmm.machine import MachineConfig

ROOT = Path(__file__).resolve().parents[2]

GUEST = """bits 32
org 0x100000
        mov ecx, 3
again:  call patched            ; QEMU rewrites `patched` after the first round
        add ebx, eax
        loop again
        mov dx, 0x501
        mov al, 0
        out dx, al
        hlt
patched:
        mov eax, 1              ; B8 01 00 00 00
        ret
beside: dd 0
"""


def _session(tmp_path: Path, smp: int = 1) -> Session:
    src = tmp_path / "patched.asm"
    src.write_text(GUEST)
    return Session(str(src), "sim", MachineConfig(smp=smp))


@pytest.mark.parametrize("how", ["load", "write"])
def test_qemu_writes_to_decoded_code_drop_it(tmp_path: Path, how: str) -> None:
    s = _session(tmp_path)
    image = assemble(GUEST, "patched.asm")
    patched = image.symbols["patched"]
    beside = image.symbols["beside"]
    # The first round: `patched` is decoded (and stays so: the loop runs it again).
    while s.vm.cpus[0].vcpu.cpu.r[3] == 0:
        s.step_instruction()
    cpu = s.vm.cpus[0].vcpu.cpu
    frame = patched >> 12
    assert frame in cpu._code_frames
    smc: list = []
    s.events.subscribe(smc.append, ["smc"])
    mem = s.machine.mem
    assert mem is not cpu.mem  # QEMU's view of RAM, not kvm.ko's
    if how == "load":
        mem.load(beside, b"\xAA\xBB")  # data beside the code: nothing decoded changes
        assert frame in cpu._code_frames and smc == []
        mem.load(patched + 1, (2).to_bytes(4, "little"))  # mov eax, 2
    else:
        mem.write(beside, 4, 0xAABBCCDD)
        assert frame in cpu._code_frames and smc == []
        mem.write(patched + 1, 4, 2)
    assert frame not in cpu._code_frames
    assert [e.fields["frame"] for e in smc] == [frame << 12]
    out = s.run()
    assert out.exit_status == 1
    assert cpu.r[3] == 1 + 2 + 2  # the two later rounds ran the new bytes


def test_every_vcpu_hears_of_qemu_writes(tmp_path: Path) -> None:
    s = _session(tmp_path, smp=2)
    s.run()
    cpus = [c.vcpu.cpu for c in s.vm.cpus]
    decoded = [c for c in cpus if c._code_frames]
    assert decoded, "no vCPU decoded anything"
    frame = next(iter(decoded[0]._code_frames))
    at = (frame << 12) + decoded[0]._code_bytes[frame].find(1)
    s.machine.mem.load(at, bytes(s.machine.mem.ram[at:at + 1]))  # the same byte, rewritten
    assert all(frame not in c._code_frames for c in cpus)
    assert not cpus[0].mem.kind[frame] & 1  # nobody's code there: plain RAM again
