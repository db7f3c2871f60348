"""A VM saved as plain data and rebuilt in a fresh session runs on exactly (issue 12).

For each sample guest, the run is cut at a rebuildable point after K scheduler steps (K
random, fixed seed), saved with VirtualMachine.save_state, and a new Session is built from
the state alone (Session.from_state: every model's fields put back, each simulated thread
re-entering its function at its position). Both then run to the end: the serial output,
the exit status, every vCPU's final registers, RAM, the VMCS, and the trace after the cut
(event numbers and virtual times included) must be the same.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from vmsim.events import CATALOGUE
from vmsim.session import Session
from vmsim.vmm.machine import MachineConfig
from vmsim.vmm.vm import REBUILDABLE

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_guests"
BUDGET = 3_000_000
CUTS = 4  # random cut points per case
# Every event except the per-access MMU ones (the TLB and walk events of every access
# would make the trace huge; their effect, the cost of the walks, is in the times).
KINDS = sorted(set(CATALOGUE) - {"walk_step", "tlb_hit", "tlb_miss", "ept_step"})

CASES = {
    "hello": ("hello", {}, "ept"),
    "timer-kernel": ("timer", {"irqchip": "kernel"}, "ept"),
    "timer-userspace": ("timer", {"irqchip": "userspace"}, "ept"),
    "smp4": ("smp", {"smp": 4}, "ept"),
    "apic2": ("apic", {"smp": 2}, "ept"),
    "virtio_blk": ("virtio_blk", {"disk": True}, "ept"),
    "virtio_blk-no-ioeventfd": ("virtio_blk", {"disk": True, "ioeventfd": False}, "ept"),
    "paging-ept": ("paging", {}, "ept"),
    "paging-shadow": ("paging", {}, "shadow"),
}


def _config(opts: dict, disk: Path | None) -> MachineConfig:
    o = dict(opts)
    if o.pop("disk", False):
        o["disk"] = str(disk)
    return MachineConfig(**o)


def _session(name: str, opts: dict, paging: str, disk: Path | None,
             state: dict | None = None) -> Session:
    kw = {"backend": "sim", "config": _config(opts, disk), "max_instructions": BUDGET,
          "paging": paging}
    guest = str(SAMPLES / f"{name}.asm")
    if state is None:
        return Session(guest, **kw)
    return Session.from_state(guest, state, **kw)


def _record(s: Session) -> list[str]:
    out: list[str] = []
    s.events.subscribe(lambda ev: out.append(json.dumps(ev.to_dict(), sort_keys=True,
                                                        default=str)), KINDS)
    return out


def _end(s: Session) -> dict:
    o = s.run()
    vm = s.vm
    end = {
        "outcome": (o.exit_status, o.halted, o.limit_reached, o.reason),
        "serial": bytes(s.serial), "serial_total": s.serial_total,
        "ram": bytes(s.machine.ram),
        "time": vm.sched.now,
        "regs": [s.registers(i) for i in range(len(vm.cpus))],
        "vmcs": [sorted(c.vcpu.vmcs.fields.items()) for c in vm.cpus],
        "stat": [dict(c.vcpu.stat) for c in vm.cpus],
    }
    s.machine.close()
    return end


def _disk(tmp: Path, tag: str) -> Path:
    path = tmp / f"disk-{tag}.img"
    path.write_bytes(random.Random(11).randbytes(64 * 512))
    return path


def _steps_to_end(name: str, opts: dict, paging: str, tmp: Path) -> int:
    s = _session(name, opts, paging, _disk(tmp, "count") if opts.get("disk") else None)
    n = 0
    while not s.machine.stop_requested and not s.vm.budget_ended() and s.vm.step():
        n += 1
    s.machine.close()
    return n


@pytest.mark.parametrize("case", sorted(CASES))
def test_saved_and_rebuilt_vm_runs_on_exactly(case: str, tmp_path: Path) -> None:
    name, opts, paging = CASES[case]
    total = _steps_to_end(name, opts, paging, tmp_path)
    assert total > 10
    rng = random.Random(f"issue12 {case}")
    for k in sorted(rng.sample(range(1, total), min(CUTS, total - 1))):
        disk_a = _disk(tmp_path, f"a{k}") if opts.get("disk") else None
        a = _session(name, opts, paging, disk_a)
        trace_a = _record(a)
        for _ in range(k):
            a.vm.step()
        assert a.advance_to_rebuildable_point(), f"{case}: no rebuildable point after {k}"
        assert a.vm.at_rebuildable_point()
        assert set(a.vm.positions().values()) <= REBUILDABLE
        state = a.save_state()
        cut = len(trace_a)
        disk_b = None
        if disk_a is not None:  # the image as it stands at the cut: a file of its own
            disk_b = tmp_path / f"disk-b{k}.img"
            shutil.copyfile(disk_a, disk_b)
        b = _session(name, opts, paging, disk_b, state)
        trace_b = _record(b)
        assert b.vm.positions() == a.vm.positions()
        end_a, end_b = _end(a), _end(b)
        for key in end_a:
            assert end_a[key] == end_b[key], f"{case} cut at step {k}: {key} differs"
        tail = trace_a[cut:]
        assert tail, f"{case} cut at step {k}: nothing happened after the cut"
        assert len(tail) == len(trace_b), f"{case} cut at step {k}: trace lengths differ"
        for i, (x, y) in enumerate(zip(tail, trace_b, strict=True)):
            assert x == y, f"{case} cut at step {k}: event {i} after the cut differs"
        if disk_a is not None:
            assert disk_a.read_bytes() == disk_b.read_bytes()


def test_save_state_is_refused_away_from_a_rebuildable_point() -> None:
    s = Session(str(SAMPLES / "hello.asm"), "sim", max_instructions=BUDGET)
    for _ in range(100):
        if not s.vm.at_rebuildable_point():
            break
        s.vm.step()
    assert not s.vm.at_rebuildable_point()
    with pytest.raises(ValueError, match="not at a rebuildable point"):
        s.save_state()
    s.machine.close()


def test_state_is_plain_data() -> None:
    s = Session(str(SAMPLES / "timer.asm"), "sim", max_instructions=BUDGET, paging="shadow")
    for _ in range(50):
        s.vm.step()
    assert s.advance_to_rebuildable_point()
    state = s.save_state()
    ram = state["vm"].pop("ram")
    assert isinstance(ram, bytes)

    def check(x, where="state"):
        if isinstance(x, dict):
            for k, v in x.items():
                assert isinstance(k, str), f"{where}: key {k!r}"
                check(v, f"{where}.{k}")
        elif isinstance(x, list):
            for i, v in enumerate(x):
                check(v, f"{where}[{i}]")
        else:
            assert x is None or isinstance(x, (bool, int, str, bytes)), f"{where}: {x!r}"
    check(state)
    s.machine.close()
