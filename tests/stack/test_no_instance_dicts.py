"""Hot objects keep CPython's inline attribute values: reading an object's __dict__ gives it
a real dict for the rest of its life, and every attribute access on it gets slower
(EventStream.build took twice the time; an exit with its events written 4% more). These
objects are read at every exit and start with their values inline, so no way of driving a
session may give them a dict. (The devices, the BQL and QEMU's CPUState get one when the
history saves them: vmsim.state.fields_state reads vars(). SimVcpu and Cpu have more
attributes than CPython keeps inline, and a dict from the start.)"""

from __future__ import annotations

import gc
import re
from pathlib import Path

import pytest

from vmsim.asm import assemble
from vmsim.events import EventStream
from vmsim.session import Session

ROOT = Path(__file__).resolve().parents[2]


def _has_real_dict(obj: object) -> bool:
    # (An object with inline values hands the collector each value; one with a real dict
    # hands it the dict and its class.)
    refs = gc.get_referents(obj)
    return len(refs) == 2 and type(refs[0]) is dict and refs[1] is type(obj)


def _probe_works() -> bool:
    fresh, read = EventStream(), EventStream()
    read.__dict__.get("seq")
    return not _has_real_dict(fresh) and _has_real_dict(read)


pytestmark = pytest.mark.skipif(not _probe_works(),
                                reason="this Python does not keep attribute values inline")


def test_no_way_of_driving_a_session_gives_hot_objects_a_dict() -> None:
    fresh = Session(str(ROOT / "sample_guests" / "hello.asm"))
    assert not _has_real_dict(fresh.events)
    path = ROOT / "benchmarks" / "guests" / "out_loop.asm"  # an exit per loop
    text = re.sub(r"^(COUNT\s+equ\s+)\d+", r"\g<1>3000", path.read_text(), flags=re.M)
    s = Session(assemble(text, str(path)))
    for _ in range(3):
        s.run_for(None, instructions=2000)  # as the GUI runs
    for _ in range(30):
        s.step_event()  # emit and build wrapped, and unwrapped
    s.step_back_event()  # a replay: the stream muted, the vCPUs' batches set
    s.step_instruction()
    s.save_state()
    assert s.run().exit_status == 1
    v = s.vm.cpus[0].vcpu
    hot = {"the event stream": s.events, "guest memory": s.machine.mem,
           "the machine": s.machine, "the VM": s.vm, "the scheduler": s.vm.sched,
           "VMX": v.vmx, "the VMCS": v.vmcs, "kvm_run": v.kvm_run, "the MMU": v.cpu.mmu,
           "kvm.ko's VM": v.vm}
    assert [name for name, obj in hot.items() if _has_real_dict(obj)] == []
