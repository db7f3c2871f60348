"""The VMCS write generations through the whole stack: every sample guest runs the same
with the processor's memos kept by generation as with a processor that reads every field
at every entry and exit (its memos' marks cleared after every step, so that no entry or
exit finds one, and every guest-state load reading every field). The oracle is that second
run: the VM-level trace, event for event, and the machine's state at the end must be the
same. The sample guests keep their segments;
SEGMENTS changes FS between exits, so that the exits store new segments and the entries
load them again."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from vmsim.asm import assemble
from vmsim.events import EventStream
from vmsim.hw.vmx import Vmx
from vmsim.session import Session
from vmsim.trace import TraceWriter
from vmsim.vmm.machine import MachineConfig

ROOT = Path(__file__).resolve().parents[2]
GUESTS = [*sorted(p.stem for p in (ROOT / "sample_guests").glob("*.asm")), "segments"]
SEGMENTS = """bits 32
org 0x100000
start:  mov bx, fs
        mov ecx, 200
.loop:  xor eax, eax
        mov fs, ax              ; null FS: the next exit stores it unusable
        out 0x80, al
        mov ax, fs              ; ... and the entry after it loads it again: 0 here
        out 0x80, al
        mov fs, bx              ; the flat data segment again
        out 0x80, al
        dec ecx
        jnz .loop
        mov dx, 0x501
        out dx, al              ; isa-debug-exit
"""
OPTIONS = {"ept": {}, "shadow": {"paging": "shadow"}, "userspace-irqchip": {"irqchip": "userspace"},
           "smp2": {"smp": 2}}
INSTRUCTIONS = 30_000


def _forget(s: Session) -> None:
    for c in s.vm.cpus:
        vmx = getattr(c.vcpu, "vmx", None)
        if vmx is not None:
            vmx._host_checked_at = vmx._host_values_at = vmx._seg_loaded_at = None
            vmx._loaded_at = vmx._stored_at = None
            vmx._guest_passed = None


def _run(guest: str, opts: dict, fresh: bool, tmp_path: Path) -> tuple[str, str]:
    src = ROOT / "sample_guests" / f"{guest}.asm"
    text = SEGMENTS if guest == "segments" else src.read_text()
    disk = tmp_path / f"{fresh}.img"
    disk.write_bytes(bytes(range(256)) * 64)
    config = MachineConfig(smp=opts.get("smp", 1), irqchip=opts.get("irqchip", "kernel"),
                           disk=str(disk) if guest == "virtio_blk" else None)
    ev = EventStream()
    out = io.StringIO()
    writer = TraceWriter(ev, out, "vm")
    s = Session(assemble(text, str(src)), "sim", config, events=ev,
                serial_out=lambda b: None, paging=opts.get("paging", "ept"), history=False)
    if fresh:
        hook = s.vm.after_step

        def after_step() -> None:
            if hook is not None:
                hook()
            _forget(s)
        s.vm.after_step = after_step
        s.vm.records_passes = True  # (every step passed in place comes here too)
        _forget(s)
    with pytest.MonkeyPatch.context() as mp:
        if fresh:
            # Every guest-state load reads every field, also those within one step (the
            # emulator's, then the entry's): none finds the state stored as current.
            load = Vmx.load_guest_state

            def load_every_field(vmx: Vmx, vmcs) -> None:
                vmx._stored_at = None
                load(vmx, vmcs)
            mp.setattr(Vmx, "load_guest_state", load_every_field)
        s.run_for(None, instructions=INSTRUCTIONS)
    writer.close()
    state = repr(s.vm.save_state(ram=True)) if s.vm.at_rebuildable_point() else "(mid-emulation)"
    return out.getvalue(), state


@pytest.mark.parametrize("options", sorted(OPTIONS))
@pytest.mark.parametrize("guest", GUESTS)
def test_generations_run_every_guest_as_reading_every_field(guest: str, options: str,
                                                            tmp_path: Path) -> None:
    kept = _run(guest, OPTIONS[options], False, tmp_path)
    fresh = _run(guest, OPTIONS[options], True, tmp_path)
    assert kept[0].count("\n") > 10, "the guest made no events"
    assert kept[0] == fresh[0]
    assert kept[1] == fresh[1]
