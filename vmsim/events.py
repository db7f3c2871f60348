"""The event stream every layer writes to (DESIGN.md "Events").

An event is a small immutable record: sequence number, virtual time, layer, source, kind
and typed fields. Kinds are declared once in CATALOGUE with their fields and a one-line
format. A kind nobody subscribes to costs one dict lookup at the emitting site
(`stream.wants(kind)`), which hot paths hoist out of their loops.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

LAYERS = ("guest", "hw", "kvm", "vmm")


@dataclass(frozen=True)
class EventKind:
    name: str
    layer: str
    fields: tuple[str, ...]
    fmt: str  # str.format template over the fields


CATALOGUE: dict[str, EventKind] = {}


def _declare(name: str, layer: str, fields: str, fmt: str) -> None:
    CATALOGUE[name] = EventKind(name, layer, tuple(fields.split()), fmt)


# Hardware: the CPU and its MMU.
_declare("exception", "hw", "vector name error_code eip",
         "{name} (vector {vector}) at {eip:#x}, error code {error_code}")
_declare("triple_fault", "hw", "eip", "triple fault at {eip:#x}: shutdown")
_declare("unsupported", "hw", "eip what", "unsupported at {eip:#x}: {what}")
_declare("not_in_subset", "hw", "eip text bytes",
         "{text} at {eip:#x} is not in vmsim's x86 subset: #UD")
_declare("tlb_hit", "hw", "linear physical access", "TLB hit {linear:#x} -> {physical:#x}")
_declare("tlb_miss", "hw", "linear access", "TLB miss {linear:#x} ({access})")
_declare("walk_step", "hw", "linear level table index entry_address entry outcome",
         "{level}[{index}] @ {entry_address:#x} = {entry:#010x}: {outcome}")
_declare("ept_step", "hw", "linear gpa level table index entry_address entry outcome",
         "EPT {level}[{index}] for {gpa:#x} @ {entry_address:#x} = {entry:#018x}: {outcome}")
_declare("tlb_flush", "hw", "scope linear", "TLB flush ({scope})")
_declare("smc", "hw", "frame", "self-modifying code: decoded instructions in frame {frame:#x} dropped")
_declare("io_unclaimed", "vmm", "space address size is_write",
         "unclaimed {space} {address:#x} size {size} {is_write}")
_declare("vmentry", "hw", "rip launch", "VM entry at {rip:#x} (launch={launch})")
_declare("vmentry_failed", "hw", "reason check", "VM entry failed ({reason:#x}): {check}")
_declare("vmexit", "hw", "reason reason_number qualification instruction_len "
         "guest_linear_address guest_physical_address intr_info rip",
         "VM exit {reason} ({reason_number}) at {rip:#x}, qualification {qualification:#x}")
_declare("event_injection", "hw", "vector type error_code", "inject vector {vector} type {type}")

# kvm.ko
_declare("kvm_handler", "kvm", "handler outcome", "{handler}: {outcome}")
_declare("emulate", "kvm", "instruction outcome", "emulate {instruction}: {outcome}")
_declare("hypercall", "kvm", "nr args ret", "hypercall {nr} -> {ret}")
_declare("shadow_page", "kvm", "action gfn level direct spt",
         "shadow page {action}: gfn {gfn:#x} level {level} direct={direct} at {spt:#x}")
_declare("mmu_fault", "kvm", "gva gpa action", "shadow MMU fault at {gva:#x}: {action}")
_declare("pte_write", "kvm", "gpa gfn index", "guest page-table write at {gpa:#x}: shadow zapped")
_declare("tdp_map", "kvm", "gfn hpa new_tables mmio",
         "EPT: gfn {gfn:#x} -> {hpa:#x} ({new_tables} new tables, mmio={mmio})")

# The VMM (QEMU side).
_declare("ioctl", "vmm", "name detail result", "ioctl {name} {detail} -> {result}")
_declare("kvm_exit", "vmm", "reason", "KVM_RUN returned {reason}")
_declare("bql", "vmm", "action", "BQL {action}")
_declare("device_access", "vmm", "space address size is_write value",
         "{space} {address:#x} size {size} is_write={is_write} value {value:#x}")
_declare("thread", "vmm", "state detail", "{state} {detail}")


@dataclass(frozen=True)
class Event:
    seq: int
    time: int
    layer: str
    source: str
    kind: str
    fields: MappingProxyType

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]

    def describe(self) -> str:
        return CATALOGUE[self.kind].fmt.format(**self.fields)

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "time": self.time, "layer": self.layer,
                "source": self.source, "kind": self.kind, **self.fields}


Listener = Callable[[Event], None]


class EventStream:
    """Fan-out of events to subscribers, by kind (or "*" for all)."""

    def __init__(self) -> None:
        self.seq = 0
        self.time = 0
        self._listeners: dict[str, list[Listener]] = {}
        self._all: list[Listener] = []
        self.on_change: list[Callable[[], None]] = []  # producers re-read wants() here

    def subscribe(self, listener: Listener, kinds: Iterable[str] | None = None) -> Callable[[], None]:
        """Call `listener` for events of `kinds` (all if None); returns an unsubscribe."""
        if kinds is None:
            self._all.append(listener)
            targets = [self._all]
        else:
            targets = []
            for k in kinds:
                if k not in CATALOGUE:
                    raise KeyError(f"unknown event kind {k!r}")
                targets.append(self._listeners.setdefault(k, []))
                targets[-1].append(listener)
        self._changed()

        def unsubscribe() -> None:
            for t in targets:
                if listener in t:
                    t.remove(listener)
            self._changed()

        return unsubscribe

    def _changed(self) -> None:
        for cb in self.on_change:
            cb()

    def wants(self, kind: str) -> bool:
        return bool(self._all) or bool(self._listeners.get(kind))

    def emit(self, kind: str, source: str, **fields: Any) -> None:
        listeners = self._listeners.get(kind)
        if not listeners and not self._all:
            return
        spec = CATALOGUE[kind]
        self.seq += 1
        ev = Event(self.seq, self.time, spec.layer, source, kind, MappingProxyType(fields))
        for fn in self._all:
            fn(ev)
        for fn in listeners or ():
            fn(ev)
