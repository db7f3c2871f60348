"""vmsim.events.event_json is the trace's JSON record: exactly json.dumps(ev.to_dict(),
separators=(",", ":")), for every event a run makes and for awkward field values."""

from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType

import pytest

from vmsim.events import Event, EventStream, event_json
from vmsim.session import Session

ROOT = Path(__file__).resolve().parents[1]


def _dumps(ev: Event) -> str:
    return json.dumps(ev.to_dict(), separators=(",", ":"))


def test_every_event_of_a_run_encodes_as_json_dumps() -> None:
    events = EventStream()
    seen: list[Event] = []
    events.subscribe(seen.append)
    Session(str(ROOT / "sample_guests" / "vga.asm"), events=events, history=False).run()
    assert len({ev.kind for ev in seen}) > 10
    for ev in seen:
        assert event_json(ev) == _dumps(ev)


def test_awkward_values_encode_as_json_dumps() -> None:
    fields = {"text": 'quote " back\\slash \n \u00e9 \u4e2d \U0001f600', "t": True, "f": False,
              "none": None, "big": 1 << 70, "neg": -5, "float": 0.1, "inf": float("inf"),
              "list": [1, "a", None, [2.5]], "nested": {"k": [True]}}
    ev = Event(7, 123, "kvm", "vcpu0", "kvm_handler", MappingProxyType(fields))
    assert event_json(ev) == _dumps(ev)
    with pytest.raises(TypeError):
        event_json(Event(1, 0, "hw", "x", "smc", MappingProxyType({"o": object()})))
