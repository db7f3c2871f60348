"""vmsim.state.fields_state on models with __slots__: the same state as from their vars().

The models on the exit path declare __slots__ so that saving them (the history, at each
checkpoint) reads no __dict__ (tests/stack/test_no_instance_dicts.py says why). Their
state must stay what vars() gave: the same names, in the same order (the order the
constructor first sets them), so that snapshots and checkpoints are unchanged.
"""

from __future__ import annotations

from typing import Any

import pytest

from vmsim.asm import assemble
from vmsim.clock import Mutex
from vmsim.kvm.tdp_mmu import TdpMmu
from vmsim.session import Session
from vmsim.state import fields_state, load_fields
from vmsim.vmm.devices.debug_exit import DebugExit
from vmsim.vmm.devices.serial import Serial16550
from vmsim.vmm.devices.vga import VgaText
from vmsim.vmm.devices.virtio_mmio import VirtIOMMIOProxy
from vmsim.vmm.kvm_all import CPUState


class _Plain:
    def __init__(self) -> None:
        self.a = 1
        self.f = print  # structure: no plain form
        self.b = [2, (3, 4)]
        self.c = None


class _Base:
    __slots__ = ("a", "f")


class _Slotted(_Base):
    __slots__ = ("b", "c", "never_set")

    def __init__(self) -> None:
        self.a = 1
        self.f = print
        self.b = [2, (3, 4)]
        self.c = None


def test_slots_give_what_vars_gives() -> None:
    plain, slotted = fields_state(_Plain()), fields_state(_Slotted())
    assert slotted == plain == {"a": 1, "b": [2, {"__tuple__": [3, 4]}], "c": None}
    assert list(slotted) == list(plain)  # (the order too)
    assert fields_state(_Slotted(), skip=("b",)) == fields_state(_Plain(), skip=("b",))


def test_slots_load_back() -> None:
    s = _Slotted()
    s.b.append(5)
    s.c = "x"
    t = _Slotted()
    b = t.b
    load_fields(t, fields_state(s))
    assert (t.a, t.b, t.c) == (1, [2, (3, 4), 5], "x")
    assert t.b is b  # refilled in place
    assert not hasattr(t, "never_set")


def _session_vm() -> Any:
    return Session(assemble("hlt\n", "<hlt>")).vm.cpus[0].vcpu.vm


MODELS = {
    "Serial16550": lambda: Serial16550(),
    "Mutex": lambda: Mutex("bql"),
    "DebugExit": lambda: DebugExit(lambda status: None),
    "VgaText": lambda: VgaText(),
    "CPUState": lambda: CPUState(0, None, "vcpu0"),  # type: ignore[arg-type]
    "VirtIOMMIOProxy": lambda: VirtIOMMIOProxy(0, 0xD000_0000, 5, lambda level: None),
    "TdpMmu": lambda: TdpMmu(_session_vm()),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_slots_are_in_the_order_the_constructor_sets_them(name: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """What vars() listed, the order of first assignment, is what fields_state lists."""
    order: list[str] = []
    cls = type(MODELS[name]())
    assert cls.__dictoffset__ == 0, f"{name} has an instance __dict__"
    setattr_ = cls.__setattr__

    def recorded(self: Any, attr: str, value: Any) -> None:
        if attr not in order:
            order.append(attr)
        setattr_(self, attr, value)

    monkeypatch.setattr(cls, "__setattr__", recorded)
    obj = MODELS[name]()
    monkeypatch.undo()
    names = [n for n in order if hasattr(obj, n)]
    state = fields_state(obj)
    assert list(state) == [n for n in names if n in state]
    # Every slot the constructor set, and nothing else, is looked at.
    assert set(state) <= set(names)
