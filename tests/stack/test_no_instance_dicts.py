"""Hot objects keep CPython's inline attribute values: reading an object's __dict__ gives it
a real dict for the rest of its life, and every attribute access on it gets slower
(EventStream.build took twice the time; an exit with its events written 4% more). These
objects are read at every exit and start with their values inline, so no way of driving a
session may give them a dict. The models whose state the history saves at each checkpoint
by their attributes (vmsim.state.fields_state: the UART, the BQL, QEMU's CPUState, the TDP
MMU ...) declare __slots__, so that saving them reads no __dict__. (SimVcpu and Cpu have
more attributes than CPython keeps inline, and a dict from the start.)

The session is driven in a process of its own: which attributes a class's instances keep
inline depends on every instance made before in the process (CPython shares their keys),
and other tests set attributes of their own on event streams."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_DRIVE = r"""
import gc, json, re, sys
from pathlib import Path
from vmsim.asm import assemble
from vmsim.events import EventStream
from vmsim.session import Session

def real_dict(obj):
    # (An object with inline values hands the collector each value; one with a real dict
    # hands it the dict and its class.)
    refs = gc.get_referents(obj)
    return len(refs) == 2 and type(refs[0]) is dict and refs[1] is type(obj)

fresh, read = EventStream(), EventStream()
read.__dict__.get("seq")
if real_dict(fresh) or not real_dict(read):
    print(json.dumps(None))  # this Python keeps no inline values
    sys.exit()
root = Path(sys.argv[1])
path = root / "benchmarks" / "guests" / "out_loop.asm"  # an exit per loop
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
       "kvm.ko's VM": v.vm, "the UART": s.machine.serial, "the BQL": s.machine.bql,
       "QEMU's CPUState": s.vm.cpus[0], "the TDP MMU": v.vm.tdp, "the VGA buffer": s.machine.vga,
       "isa-debug-exit": s.machine.debug_exit}
print(json.dumps([name for name, obj in hot.items() if real_dict(obj)]))
"""


def test_no_way_of_driving_a_session_gives_hot_objects_a_dict() -> None:
    done = subprocess.run([sys.executable, "-c", _DRIVE, str(ROOT)], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    given = json.loads(done.stdout)
    if given is None:
        pytest.skip("this Python does not keep attribute values inline")
    assert given == []
