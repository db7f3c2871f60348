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
    "smp4": ("smp", {"smp": 4}, 150_000),
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
