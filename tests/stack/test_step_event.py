"""Session.step_event moves exactly one event (issue 13), with the state at that event.

A scheduler step emits several events; step_event pauses it right after each one
(vmsim.session._PartialStep) and resumes it there, so the events come one per call, in
the run's order, none skipped, each with the machine as it is at that event; the other
ways of moving finish a paused step first and still see what is left of it.
"""

from __future__ import annotations

from pathlib import Path

from vmsim.session import STEP_KINDS, Session
from vmsim.vmm.machine import MachineConfig

SAMPLES = Path(__file__).resolve().parents[2] / "sample_guests"


def test_one_event_per_step_event_in_the_runs_order() -> None:
    s = Session(str(SAMPLES / "timer.asm"), config=MachineConfig(smp=2))
    heard: list = []
    s.events.subscribe(heard.append, STEP_KINDS)
    got = []
    for _ in range(400):
        o = s.step_event()
        assert not o.finished and len(o.events) == 1
        ev = o.events[0]
        assert s.events.seq == ev.seq and heard[-1] is ev  # nothing after it has happened
        got.append(ev)
        if ev.kind == "kvm_entry":  # the state at the entry: the guest's EIP is its rip
            assert s.registers(ev["vcpu_id"])["EIP"] == ev["rip"]
        elif ev.kind == "kvm_exit":  # ... at the exit: the VMCS holds that exit
            assert s.last_exit(ev["vcpu_id"])["reason"] == ev["exit_reason"]
    assert got == heard  # every event, once, in order
    assert s.mid_step and s.event_position[1] >= 1
    s.machine.close()


def test_the_other_steps_finish_a_paused_step_and_see_its_rest() -> None:
    s = Session(str(SAMPLES / "hello.asm"))
    assert s.finish_step() is None and not s.mid_step
    # Pause on the first exit to userspace: its step still has kvm_run_exit to come.
    while s.step_event().events[0].kind != "kvm_userspace_exit":
        pass
    assert s.mid_step
    seq = s.events.seq
    o = s.step_userspace_exit()  # the next one, not the one it stands on
    assert not s.mid_step and o.events[0].seq == seq + 1 and o.events[0].kind == "kvm_run_exit"
    assert [e.kind for e in o.events].count("kvm_userspace_exit") == 1
    # Back one event and on again: the same event, the same state.
    s.step_event()
    s.step_event()
    ev = s.step_event().events[0]
    regs = s.registers()
    s.step_back_event()
    s.step_back_event()
    s.step_event()
    again = s.step_event().events[0]
    assert (again.seq, again.kind, again.time) == (ev.seq, ev.kind, ev.time)
    assert s.registers() == regs
    s.machine.close()
