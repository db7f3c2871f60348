"""The history records where each VM exit and exit to userspace came through its own line
sink (History._exit_fire) where it alone hears them: no Event is built. The positions,
times and reasons it keeps, the event numbers and counts, and where steps back land must
be those it had from the Events (emit's path, events.DIRECT off)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from vmsim import events as events_mod
from vmsim.asm import assemble
from vmsim.session import Session
from vmsim.vmm.machine import MachineConfig

ROOT = Path(__file__).resolve().parents[2]
GUESTS = {
    # (COUNT shortened: 300 loops, more than events.COMPILE_AFTER)
    "out_loop": (ROOT / "benchmarks" / "guests" / "out_loop.asm", {}),
    "mmio_loop": (ROOT / "benchmarks" / "guests" / "mmio_loop.asm", {}),
    "hello-shadow": (ROOT / "sample_guests" / "hello.asm", {"paging": "shadow"}),
    "timer-userspace": (ROOT / "sample_guests" / "timer.asm", {"irqchip": "userspace"}),
    "smp2": (ROOT / "sample_guests" / "smp.asm", {"smp": 2}),
}


def _session(name: str) -> Session:
    path, opts = GUESTS[name]
    text = re.sub(r"^(COUNT\s+equ\s+)\d+", r"\g<1>300", path.read_text(), flags=re.M)
    config = MachineConfig(smp=opts.get("smp", 1), irqchip=opts.get("irqchip", "kernel"))
    return Session(assemble(text, str(path)), "sim", config, serial_out=lambda b: None,
                   paging=opts.get("paging", "ept"))


def _recorded(name: str, direct: bool, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setattr(events_mod, "DIRECT", direct)
    s = _session(name)
    s.run()
    h = s.history
    fire = s.events.tp["kvm_exit"].fire
    out = {"exit_pos": list(h.exit_pos), "exit_time": list(h.exit_time),
           "exit_reason": list(h.exit_reason), "uexit_pos": list(h.uexit_pos),
           "uexit_time": list(h.uexit_time), "seq": s.events.seq,
           "counted": s.events.counted, "nev": h.nev, "sink": "_exit_fire" in fire.__qualname__}
    # Steps back by exit land where the positions say, with the same events behind them.
    for step in (s.step_back_vmexit, s.step_back_userspace_exit, s.step_back_vmexit):
        o = step()
        out.setdefault("back", []).append((o.reason, h.pos, s.events.seq, s.cpus[0].eip))
    return out


@pytest.mark.parametrize("name", sorted(GUESTS))
def test_the_sink_records_what_the_events_did(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sunk = _recorded(name, True, monkeypatch)
    heard = _recorded(name, False, monkeypatch)
    assert sunk.pop("sink") and not heard.pop("sink")
    assert sunk["exit_pos"] and sunk["uexit_pos"]
    assert sunk == heard


def test_a_second_listener_gets_events_and_the_history_its_positions() -> None:
    s = _session("out_loop")
    seen: list[Any] = []
    s.events.subscribe(seen.append, ["kvm_exit"])
    s.run()
    h = s.history
    exits = [ev for ev in seen if ev.kind == "kvm_exit"]
    assert "_exit_fire" not in s.events.tp["kvm_exit"].fire.__qualname__
    assert list(h.exit_time) == [ev.time for ev in exits]
    assert list(h.exit_reason) == [ev["exit_reason"] for ev in exits]
