"""Time passed in place is the schedule the scheduler makes (Scheduler.pass_time).

VirtualMachine.run lets a vCPU that the scheduler would resume at once pass the cycles of
its next yield in place, without handing the step back. The oracle is the same run
stepped the long way (an after_step hook that cannot be told of passed steps turns
passing in place off; the history's can: tests/stack/test_pass_time_history.py): every
event with its number and virtual time, the serial output, RAM, registers, VMCS fields
and each simulated thread's clock must be the same, on guests where other threads are
woken, timers fire, vCPUs interleave and a budget stops the run in the middle.
"""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import pytest

from vmsim.events import CATALOGUE
from vmsim.session import Session
from vmsim.vmm.machine import MachineConfig

SAMPLES = Path(__file__).resolve().parents[2] / "sample_guests"
BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "guests"
HIGH_RATE = {"walk_step", "tlb_hit", "tlb_miss", "ept_step"}
VM_KINDS = sorted(set(CATALOGUE) - HIGH_RATE)
# name: (guest, machine options, paging, instruction budget or None, every event kind)
CASES = {f"{p.stem}": (p, {}, "ept", None, False) for p in sorted(SAMPLES.glob("*.asm"))}
CASES.update({
    "hello-shadow": (SAMPLES / "hello.asm", {}, "shadow", None, False),
    "address_spaces-shadow": (SAMPLES / "address_spaces.asm", {}, "shadow", None, False),
    "paging-all-events": (SAMPLES / "paging.asm", {}, "ept", None, True),
    "timer-userspace": (SAMPLES / "timer.asm", {"irqchip": "userspace"}, "ept", None, False),
    "timer-smp2": (SAMPLES / "timer.asm", {"smp": 2}, "ept", 60_000, False),
    "apic-smp2": (SAMPLES / "apic.asm", {"smp": 2}, "ept", None, False),
    "smp4": (SAMPLES / "smp.asm", {"smp": 4}, "ept", None, False),
    "virtio_blk-iothread": (SAMPLES / "virtio_blk.asm", {"disk": True}, "ept", None, False),
    "out_loop-cut": (BENCH / "out_loop.asm", {}, "ept", 1_234, False),
    "mmio_loop-shadow": (BENCH / "mmio_loop.asm", {}, "shadow", None, False),
    # Cut while it computes: the budget ends a batch, not an exit.
    "crc32-cut": (BENCH / "crc32.asm", {}, "ept", 123_457, False),
    # Cut right after exits kvm.ko handles itself (CPUID; CR3 loads under shadow
    # paging), where the budget ends the run before the next VM entry.
    **{f"{g}-cut-{n}": (SAMPLES / f"{g}.asm", {}, paging, n, False)
       for g, paging in (("cpuid", "ept"), ("address_spaces", "shadow"), ("exceptions", "ept"))
       for n in (1, 13, 14, 40)},
    # The PIT fires while the guest computes, with the IRQ masked, or open with IF=0
    # (kvm.ko asks for interrupt windows); in kvm.ko, and in QEMU on a main-loop timer
    # whose thread wakes and takes the BQL between the vCPU's exits.
    "pit-masked": ("masked", {}, "ept", 400_000, False),
    "pit-open": ("open", {}, "ept", 60_000, False),
    "pit-userspace": ("masked", {"irqchip": "userspace"}, "ept", 400_000, False),
})


def _pit_guest(pit: str):
    """benchmarks/irq_bench.py's CRC guest with the PIT programmed (mode 2)."""
    spec = importlib.util.spec_from_file_location("irq_bench", BENCH.parent / "irq_bench.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    # Reload 12 (about 100 kHz) rather than 119: many firings in a short run.
    assert "mov al, 119" in mod.PIT_PROLOGUE
    mod.PIT_PROLOGUE = mod.PIT_PROLOGUE.replace("mov al, 119", "mov al, 12")
    return mod.image(pit)


def _run(case: str, tmp_path: Path, step_by_step: bool) -> tuple[list[str], dict, int]:
    guest, opts, paging, budget, every = CASES[case]
    opts = dict(opts)
    if opts.pop("disk", False):
        disk = tmp_path / f"{step_by_step}.img"
        disk.write_bytes(random.Random(7).randbytes(64 * 512))
        opts["disk"] = str(disk)
    image = _pit_guest(guest) if isinstance(guest, str) else str(guest)
    s = Session(image, "sim", MachineConfig(**opts), max_instructions=budget, paging=paging,
                history=False)
    trace: list[str] = []
    s.events.subscribe(lambda ev: trace.append(json.dumps(ev.to_dict(), sort_keys=True,
                                                          default=str)),
                       sorted(CATALOGUE) if every else VM_KINDS)
    vm = s.vm
    steps = [0]
    step = vm._step

    def counted() -> bool:
        steps[0] += 1
        return step()

    vm._step = counted
    if step_by_step:
        vm.after_step = lambda: None
    o = s.run()
    end = {"outcome": (o.exit_status, o.halted, o.limit_reached, o.reason),
           "serial": bytes(s.serial), "ram": bytes(s.machine.ram), "time": s.virtual_time,
           "regs": [s.registers(i) for i in range(len(vm.cpus))],
           "vmcs": [sorted(c.vcpu.vmcs.fields.items()) for c in vm.cpus],
           "threads": [(t.name, t.time, t.steps, t.done) for t in vm.sched.threads],
           "vcpus": [(c.vcpu.run_point, c.vcpu.mode, c.vcpu.mp_state) for c in vm.cpus],
           "timers": vm.sched.timers_fired, "last_time": vm.sched.last_time,
           "seq": s.events.seq}
    s.machine.close()
    return trace, end, steps[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_passing_time_in_place_changes_nothing(case: str, tmp_path: Path) -> None:
    fast, end_fast, steps_fast = _run(case, tmp_path, step_by_step=False)
    slow, end_slow, steps_slow = _run(case, tmp_path, step_by_step=True)
    assert len(slow) > (3 if "-cut-" in case else 20)
    first = next((i for i, (a, b) in enumerate(zip(slow, fast, strict=False)) if a != b), None)
    assert first is None, f"event {first} differs: {slow[first]} vs {fast[first]}"
    assert len(fast) == len(slow)
    for key in end_slow:
        assert end_fast[key] == end_slow[key], f"{key} differs"
    # The passing happened: fewer steps came back to VirtualMachine.run.
    assert steps_fast < steps_slow
    if case.startswith("pit"):
        # The PIT did fire while the guest computed (QEMU's on each period; kvm.ko's
        # reinjects nothing while the first tick is not taken).
        fired = sum('"kind": "qemu_timer"' in e or '"kind": "kvm_pic_set_irq"' in e
                    for e in slow)
        assert fired > (10 if "userspace" in case else 0)


def test_nested_passing_gives_the_outer_rule_back(tmp_path: Path) -> None:
    """run_for finishes a VM with run(): its passing() nests in run_for's. When the inner
    one ends, the outer one's rule (its own stop checks) and its hook must hold again."""
    s = Session(str(SAMPLES / "hello.asm"), "sim", MachineConfig(), history=True)
    vm, sched = s.vm, s.vm.sched
    stops: list[int] = []
    try:
        with vm.passing(lambda: stops.append(1)):
            outer = sched.in_place, sched.on_pass
            assert outer[0] is not None and outer[1] is not None
            with vm.passing():
                assert sched.in_place is not outer[0]
            assert (sched.in_place, sched.on_pass) == outer
            assert sched.in_place() is True and stops == [1]  # the outer stop is asked
        assert sched.in_place is None and sched.on_pass is None
    finally:
        s.machine.close()
