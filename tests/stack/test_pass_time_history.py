"""Steps passed in place are recorded as the steps they are (VirtualMachine.passing).

Session.run_for (the GUI's slices) and run() with a history let a vCPU's step pass in
place (Scheduler.pass_time); the history records each such step's end (its recorder via
on_pass) as it would a step handed back to the loop. The oracle is the same session with
passing turned off (Scheduler.pass_time never passes): every step must end with the same
clock, threads, registers and event counters (seen from an after_step hook, as the
history sees it), every slice must stop at the same position for the same reason
(instruction budget, breakpoint by address, exit reason, port or event, the end), with
the same state (Session.state_dump), the history's record
of every position must be the same (batch, virtual time, instructions, event numbers,
exits, checkpoints), every event the same, and going back to a position must find the
same state.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from vmsim.clock import Scheduler
from vmsim.events import CATALOGUE
from vmsim.session import Session
from vmsim.vmm.machine import MachineConfig

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_guests"
BENCH = ROOT / "benchmarks" / "guests"
KINDS = sorted(set(CATALOGUE) - {"walk_step", "tlb_hit", "tlb_miss", "ept_step"})
# name: (guest, machine options, paging, instruction budget)
CASES = {
    "hello": (SAMPLES / "hello.asm", {}, "ept", None),
    "out_loop": (BENCH / "out_loop.asm", {}, "ept", None),
    "mmio_loop-shadow": (BENCH / "mmio_loop.asm", {}, "shadow", None),
    "timer-kernel": (SAMPLES / "timer.asm", {}, "ept", 300_000),
    "timer-userspace": (SAMPLES / "timer.asm", {"irqchip": "userspace"}, "ept", 300_000),
    "smp4": (SAMPLES / "smp.asm", {"smp": 4}, "ept", None),
    "apic2": (SAMPLES / "apic.asm", {"smp": 2}, "ept", None),
    "virtio_blk": (SAMPLES / "virtio_blk.asm", {"disk": True}, "ept", None),
    "address_spaces-shadow": (SAMPLES / "address_spaces.asm", {}, "shadow", 40_000),
}
SLICES = [1, 7, 50, 120, 400, 1500, Session.RUN_BATCH]


def _session(case: str, tmp: Path, tag: str) -> Session:
    guest, opts, paging, budget = CASES[case]
    o = dict(opts, memory_mib=4)
    if o.pop("disk", False):
        path = tmp / f"disk-{tag}.img"
        path.write_bytes(random.Random(3).randbytes(64 * 512))
        o["disk"] = str(path)
    return Session(str(guest), "sim", config=MachineConfig(**o), max_instructions=budget,
                   paging=paging)


def _breakpoints(s: Session, rng: random.Random) -> None:
    """Now and then a breakpoint of each kind, else none."""
    bp = s.breakpoints
    bp.addresses.clear(), bp.exit_reasons.clear(), bp.ports.clear(), bp.events.clear()
    kind = rng.choice(["none", "none", "address", "exit", "port", "event"])
    if kind == "address":
        bp.addresses.add(s.cpus[0].eip + rng.choice([0, 1, 2, 3, 5]))
    elif kind == "exit":
        bp.exit_reasons.add(rng.choice(["IO_INSTRUCTION", "EPT_MISCONFIG", "HLT",
                                        "CR_ACCESS", "EXTERNAL_INTERRUPT"]))
    elif kind == "port":
        bp.ports.add(rng.choice([0x3F8, 0x3FD, 0x3FF, 0x40]))
    elif kind == "event":
        bp.events.add(rng.choice(["kvm_inj_virq", "kvm_userspace_exit", "bql:action=wait",
                                  "kvm_pio"]))


def _at_step(s: Session) -> tuple:
    """What a step's end shows, lighter than state_dump (taken after every step): the
    clock and the threads, where each stands, the VM's idle count, every vCPU's registers
    and run point, the event counters and digest, COM1's output."""
    vm = s.vm
    ev = s.events
    return (s.history.pos, vm.sched.now, vm.sched.state(), vm.positions(),
            (vm._idle_from, vm._idle_steps), [s.registers(i) for i in range(len(vm.cpus))],
            [(c.vcpu.run_point, c.vcpu.mode, c.vcpu.mp_state) for c in vm.cpus],
            (ev.seq, ev.time, ev.thread, s.history.digest), s.serial_total)


def _drive(case: str, tmp: Path, passing: bool, monkeypatch) -> dict:
    with monkeypatch.context() as mp:
        passes = [0]
        inner = Scheduler.pass_time

        def counted(self, cycles: int) -> bool:
            if not passing:
                return False
            done = inner(self, cycles)
            passes[0] += done
            return done
        mp.setattr(Scheduler, "pass_time", counted)
        s = _session(case, tmp, str(passing))
        s.history.digest_events = True
        trace: list[str] = []
        s.events.subscribe(lambda ev: trace.append(json.dumps(ev.to_dict(), sort_keys=True,
                                                              default=str)), KINDS)
        steps: list[tuple] = []
        inner_after = s.vm.after_step

        def after() -> None:
            inner_after()
            steps.append(_at_step(s))
        s.vm.after_step = after
        rng = random.Random(f"pass {case}")
        stops = []
        for i in range(30):
            _breakpoints(s, rng)
            o = s.run_for(None, instructions=rng.choice(SLICES[:4] if i < 6 else SLICES))
            stops.append((o.finished, o.reason, o.breakpoint, s.history.pos, s.state_dump()))
            if o.finished:
                break
        if s.outcome is None:
            o = s.run()
            stops.append((o.finished, o.reason, o.breakpoint, s.history.pos, s.state_dump()))
        h = s.history
        record = {name: list(getattr(h, name)) for name in (
            "batch", "time", "instr", "seq", "evc", "exit_pos", "exit_time", "exit_reason",
            "uexit_pos", "uexit_time")}
        record["checkpoints"] = [(c.pos, c.work) for c in h.checkpoints]
        s.vm.after_step = inner_after
        # Back to a few positions (replays never pass: the record and its checkpoints).
        back = []
        for p in sorted(rng.sample(range(h.last + 1), min(4, h.last + 1)), reverse=True):
            h.goto(p)
            back.append((p, s.state_dump()))
        s.machine.close()
        return {"stops": stops, "record": record, "trace": trace, "back": back,
                "passes": passes[0], "steps": steps}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_run_with_steps_passed_in_place_records_the_same_history(
        case: str, tmp_path: Path, monkeypatch) -> None:
    fast = _drive(case, tmp_path, True, monkeypatch)
    slow = _drive(case, tmp_path, False, monkeypatch)
    assert fast["passes"] > 20, f"{case}: only {fast['passes']} steps passed in place"
    assert len(slow["stops"]) > 3
    for i, (a, b) in enumerate(zip(slow["stops"], fast["stops"], strict=False)):
        assert a[:4] == b[:4], f"{case}: slice {i} stopped differently: {b[:4]}, not {a[:4]}"
        for key in a[4]:
            assert a[4][key] == b[4][key], f"{case}: slice {i} ({a[:4]}): {key} differs"
    assert len(fast["stops"]) == len(slow["stops"])
    # At the end of every step, passed in place or not.
    for a, b in zip(slow["steps"], fast["steps"], strict=True):
        assert a == b, f"{case}: at the end of step {a[0]}: parts " \
            f"{[i for i in range(len(a)) if a[i] != b[i]]} differ"
    for key, want in slow["record"].items():
        assert fast["record"][key] == want, f"{case}: the history's {key} differs"
    first = next((i for i, (a, b) in enumerate(zip(slow["trace"], fast["trace"], strict=False))
                  if a != b), None)
    assert first is None, f"{case}: event {first} differs"
    assert len(fast["trace"]) == len(slow["trace"])
    for (p, a), (q, b) in zip(slow["back"], fast["back"], strict=True):
        assert p == q
        for key in a:
            assert a[key] == b[key], f"{case}: back at {p}: {key} differs"


def test_run_for_keeps_its_wall_time_bound_while_steps_pass(monkeypatch) -> None:
    # A guest that computes for millions of instructions without an exit: its batches
    # pass in place one after another, and the slice must still end on time (a GUI's
    # pause is answered between slices). The wall clock is a fake: 1 ms per reading.
    import time

    s = Session(str(BENCH / "crc32.asm"), "sim", config=MachineConfig(memory_mib=4))
    passes = [0]
    inner = Scheduler.pass_time

    def counted(self, cycles: int) -> bool:
        done = inner(self, cycles)
        passes[0] += done
        return done
    monkeypatch.setattr(Scheduler, "pass_time", counted)
    ticks = [0.0]

    def perf_counter() -> float:
        ticks[0] += 0.001
        return ticks[0]
    monkeypatch.setattr(time, "perf_counter", perf_counter)
    o = s.run_for(0.015)
    assert (o.finished, o.reason) == (False, "time")
    assert passes[0] > 0
    # One reading per step or pass, a batch each: the slice ends within 16 readings.
    assert 0 < s.instructions <= 16 * Session.RUN_BATCH
    s.machine.close()
