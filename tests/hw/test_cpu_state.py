"""The CPU's state as plain data (issue 12): a guest cut at instruction K, its CPU state
and RAM put into a fresh machine, runs on to the same end as the uncut run."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from vmsim.asm import assemble
from vmsim.bare import BareMetal
from vmsim.hw.vmcs import F, Vmcs
from vmsim.vmm.machine import Machine, MachineConfig

SAMPLES = Path(__file__).resolve().parents[2] / "sample_guests"
GUESTS = ["hello", "paging", "exceptions", "address_spaces", "cpuid", "ports"]
BUDGET = 2_000_000


def _through_json(d: dict) -> dict:
    """Plain data survives JSON (bytes as hex): no Python object is carried across."""
    text = json.dumps(d, default=lambda b: {"__hex__": b.hex()})
    return json.loads(text, object_hook=lambda o: bytes.fromhex(o["__hex__"])
                      if set(o) == {"__hex__"} else o)


def _machine(name: str, out: bytearray) -> Machine:
    m = Machine(MachineConfig(memory_mib=16), serial_out=out.extend)
    m.load_image(assemble((SAMPLES / f"{name}.asm").read_text(), f"{name}.asm"))
    return m


def _end(bare: BareMetal) -> tuple:
    res = bare.run(max_instructions=BUDGET)
    st = bare.cpu.state()
    st["mmu"].pop("walks")  # statistics of the TLB, a cache the load empties
    st["mmu"].pop("refs")
    return res.reason, res.exit_status, st, bytes(bare.machine.mem.ram)


@pytest.mark.parametrize("name", GUESTS)
def test_cut_and_resumed_run_ends_as_the_uncut_one(name: str) -> None:
    out = bytearray()
    whole = BareMetal(_machine(name, out))
    total = whole.run(max_instructions=BUDGET).instructions
    assert total > 10
    rng = random.Random(12)
    for k in sorted(rng.sample(range(1, total), min(6, total - 1))):
        out_a = bytearray()
        a = BareMetal(_machine(name, out_a))
        a.run(max_instructions=k)
        # Plain data: through JSON and back, no Python objects carried across.
        cpu_state = _through_json(a.cpu.state())
        ram = bytes(a.machine.mem.ram)
        cut = len(out_a)
        out_b = bytearray()
        b = BareMetal(_machine(name, out_b))
        b.machine.mem.ram[:] = ram
        b.cpu.load_state(cpu_state)
        assert b.cpu.state() == a.cpu.state() | {"mmu": b.cpu.state()["mmu"]}
        end_a, end_b = _end(a), _end(b)
        assert end_a[:2] == end_b[:2]
        assert end_a[2] == end_b[2], f"{name} cut at {k}"
        assert end_a[3] == end_b[3]
        assert bytes(out_a[cut:]) == bytes(out_b), f"{name} cut at {k}"


def test_vmcs_state_round_trips() -> None:
    v = Vmcs()
    v.write(F.GUEST_RIP, 0x100000)
    v.write(F.GUEST_RFLAGS, 0x202)
    v.launched = True
    v.io_bitmap = {0x3F8, 0x501}
    v.msr_bitmap = {(0x10, False), (0x1B, True)}
    w = Vmcs()
    w.load_state(json.loads(json.dumps(v.state())))
    assert (w.fields, w.launched, w.io_bitmap, w.msr_bitmap) == (
        v.fields, v.launched, v.io_bitmap, v.msr_bitmap)
