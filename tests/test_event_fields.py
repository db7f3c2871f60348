"""An Event keeps its fields as names and values; `fields` is the read-only mapping of them,
made when asked. Whatever built it (emit, a tracepoint, Event(...) with a mapping, copy),
an event reads the same."""

from __future__ import annotations

import copy

import pytest

from vmsim.events import CATALOGUE, Event, EventStream


def _event() -> Event:
    return Event(7, 123, "kvm", "vcpu0", "kvm_pio",
                 {"rw": 1, "port": 0x3F8, "size": 1, "count": 1, "val": 0x41})


def test_fields_read_as_the_mapping_they_were_given() -> None:
    ev = _event()
    assert dict(ev.fields) == {"rw": 1, "port": 0x3F8, "size": 1, "count": 1, "val": 0x41}
    assert list(ev.fields) == ["rw", "port", "size", "count", "val"]
    assert ev["port"] == 0x3F8 and ev.get("val") == 0x41 and ev.get("nope", 5) == 5
    with pytest.raises(KeyError):
        ev["nope"]
    with pytest.raises(TypeError):
        ev.fields["port"] = 0  # type: ignore[index]
    assert ev.describe() == CATALOGUE["kvm_pio"].fmt.format(**ev.fields)
    assert list(ev.to_dict()) == ["seq", "time", "layer", "source", "kind",
                                  "rw", "port", "size", "count", "val"]


def test_copies_are_equal() -> None:
    ev = _event()
    assert copy.copy(ev) == ev and copy.deepcopy(ev) == ev
    assert copy.deepcopy(ev).fields == ev.fields


def test_emit_and_a_tracepoint_give_the_same_event() -> None:
    heard: list[Event] = []
    s = EventStream()
    s.subscribe(heard.append, ["kvm_pio"])
    s.time = 123
    s.seq = 6
    s.emit("kvm_pio", "vcpu0", rw=1, port=0x3F8, size=1, count=1, val=0x41)
    s.seq = 6
    s.tp["kvm_pio"].fire("vcpu0", 1, 0x3F8, 1, 1, 0x41)
    assert heard[0] == heard[1] == _event()
    assert heard[1].fields == _event().fields
