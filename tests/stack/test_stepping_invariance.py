"""How a run is stepped never changes what it does (DESIGN.md: deterministic).

The same guest run three ways — `Session.run()` in one go, `run_for` in slices of an odd
number of instructions, and one instruction at a time for a while before running on —
gives the same trace (every VM-level event, numbers and virtual times included), serial
output and end state. With several vCPUs and timers this needs the scheduler to resume a
vCPU whose sub-batch stopped short of its horizon before anything else
(Scheduler.sticky); without it the vCPUs interleave differently when stepped.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vmsim.events import CATALOGUE
from vmsim.session import Session
from vmsim.vmm.machine import MachineConfig

SAMPLES = Path(__file__).resolve().parents[2] / "sample_guests"
KINDS = sorted(set(CATALOGUE) - {"walk_step", "tlb_hit", "tlb_miss", "ept_step"})
CASES = {  # guest, machine, instruction budget (enough for many interleavings)
    "timer-smp2": ("timer", {"smp": 2}, 40_000),
    "timer-userspace": ("timer", {"irqchip": "userspace"}, 400_000),
    "apic-smp2": ("apic", {"smp": 2}, 400_000),
    "smp4": ("smp", {"smp": 4}, 400_000),  # to the end: the counters printed
}


def _session(name: str, opts: dict, budget: int) -> tuple[Session, list[str]]:
    s = Session(str(SAMPLES / f"{name}.asm"), "sim", MachineConfig(**opts),
                max_instructions=budget)
    trace: list[str] = []
    s.events.subscribe(lambda ev: trace.append(json.dumps(ev.to_dict(), sort_keys=True,
                                                          default=str)), KINDS)
    return s, trace


def _end(s: Session) -> tuple:
    o = s.run()
    out = (o.exit_status, o.reason, bytes(s.serial), s.virtual_time,
           [s.registers(i) for i in range(len(s.vm.cpus))], bytes(s.machine.ram))
    s.machine.close()
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_stepping_does_not_change_the_run(case: str) -> None:
    name, opts, budget = CASES[case]
    whole, t_whole = _session(name, opts, budget)
    end_whole = _end(whole)

    sliced, t_sliced = _session(name, opts, budget)
    for _ in range(100_000):
        if sliced.run_for(seconds=None, instructions=777).finished:
            break
    end_sliced = _end(sliced)

    stepped, t_stepped = _session(name, opts, budget)
    for _ in range(3000):
        if stepped.step_instruction().finished:
            break
    end_stepped = _end(stepped)

    assert len(t_whole) > 100
    for label, trace, end in (("run_for slices", t_sliced, end_sliced),
                              ("single steps", t_stepped, end_stepped)):
        first = next((i for i, (a, b) in enumerate(zip(t_whole, trace, strict=False)) if a != b), None)
        assert first is None, f"{label}: event {first} differs: {t_whole[first]} vs {trace[first]}"
        assert len(trace) == len(t_whole), f"{label}: trace length differs"
        assert end == end_whole, f"{label}: the end state differs"


@pytest.mark.parametrize("case", sorted(CASES))
def test_stepping_event_by_event_does_not_change_the_run(case: str) -> None:
    """Session.step_event pauses a scheduler step right after each event and resumes it
    there; walked event by event, with steps back (to the middle of steps) and forward
    again on the way, then run to the end, the run is the one run() makes in one go: the
    same trace (a front end drops what a step back undid, as the GUI does), the same end."""
    import random

    name, opts, budget = CASES[case]
    whole, t_whole = _session(name, opts, budget)
    end_whole = _end(whole)

    stepped, trace = _session(name, opts, budget)

    def on_rewind(seq: int) -> None:
        while trace and json.loads(trace[-1])["seq"] > seq:
            trace.pop()
    stepped.on_rewind.append(on_rewind)
    rng = random.Random(case)
    events = 0
    for i in range(1000):
        if i % 97 == 96:  # back a few events, then on again
            for _ in range(rng.randrange(1, 5)):
                stepped.step_back_event()
            continue
        o = stepped.step_event()
        if o.finished:
            break
        assert len(o.events) == 1 and stepped.events.seq == o.events[0].seq
        events += 1
    assert events > 800 and stepped.mid_step
    end_stepped = _end(stepped)
    first = next((i for i, (a, b) in enumerate(zip(t_whole, trace, strict=False)) if a != b), None)
    assert first is None, f"event {first} differs: {t_whole[first]} vs {trace[first]}"
    assert len(trace) == len(t_whole)
    assert end_stepped == end_whole
