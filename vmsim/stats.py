"""Exit statistics in the spirit of `perf kvm stat report` (`vmsim run --stats`).

Built only from events, so it works the same on every backend (the host's KVM shows no
VM exits, only userspace exits). The time of a VM exit is the virtual time from the exit
to the next VM entry of that vCPU: handling in kvm.ko plus any trip to userspace.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from vmsim.events import CATALOGUE, Event, EventStream


class TraceFormatError(Exception):
    """A line of a saved trace that is not what vmsim writes; str() is `file:line: why`."""


@dataclass(frozen=True)
class TraceRecord:
    """An event read back from a JSON Lines trace: what ExitStats needs of an Event."""

    kind: str
    source: str
    time: int
    fields: dict[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]


# The fields each kind ExitStats reads must have, and their JSON types.
_NEEDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "kvm_exit": {"exit_reason": str, "exit_reason_number": int},
    "kvm_entry": {},
    "kvm_userspace_exit": {"reason": str},
    "run_end": {"instructions": int, "virtual_time": int},
}


@dataclass(slots=True)
class _Bucket:
    count: int = 0
    timed: int = 0  # exits whose vCPU went back into the guest (so their time is known)
    time: int = 0
    min_time: int | None = None
    max_time: int = 0

    def add(self, t: int | None) -> None:
        self.count += 1
        if t is not None:
            self.timed += 1
            self.time += t
            self.min_time = t if self.min_time is None else min(self.min_time, t)
            self.max_time = max(self.max_time, t)

    def copy(self) -> _Bucket:
        return _Bucket(self.count, self.timed, self.time, self.min_time, self.max_time)


# What ExitStats reads of an event it counts, in a plain tuple (a front end that must
# count them again, after a step back, keeps these rather than the events):
# (kind, source, time, reason, reason number): the exit reason and its number for
# kvm_exit, KVM_RUN's return reason for kvm_userspace_exit, None where the kind has none.
StatsRecord = tuple[str, str, int, str | None, int | None]


def stats_record(ev: Event | TraceRecord) -> StatsRecord:
    """The StatsRecord of an event of ExitStats.KINDS."""
    kind = ev.kind
    if kind == "kvm_exit":
        return (kind, ev.source, ev.time, ev["exit_reason"], ev["exit_reason_number"])
    return (kind, ev.source, ev.time, None if kind == "kvm_entry" else ev["reason"], None)


@dataclass
class ExitStats:
    vmexits: dict[str, _Bucket] = field(default_factory=dict)
    reason_numbers: dict[str, int] = field(default_factory=dict)
    userspace: dict[str, _Bucket] = field(default_factory=dict)
    vmentries: int = 0
    instructions: int = 0
    virtual_time: int = 0
    _open: dict[str, tuple[str, int]] = field(default_factory=dict)
    totals_known: bool = True  # false for a saved trace that lost its run_end line

    KINDS = ("kvm_exit", "kvm_entry", "kvm_userspace_exit")

    def attach(self, events: EventStream) -> None:
        events.subscribe(self._on_event, self.KINDS)

    def _on_event(self, ev: Event | TraceRecord) -> None:
        kind = ev.kind
        if kind == "kvm_exit":
            reason = ev["exit_reason"]
            self.reason_numbers[reason] = ev["exit_reason_number"]
            self._open[ev.source] = (reason, ev.time)
        elif kind == "kvm_entry":
            self.vmentries += 1
            pending = self._open.pop(ev.source, None)
            if pending is not None:
                reason, start = pending
                self.vmexits.setdefault(reason, _Bucket()).add(ev.time - start)
        else:
            self.userspace.setdefault(ev["reason"], _Bucket()).add(None)

    def count_record(self, rec: StatsRecord) -> None:
        """Count one event given as its StatsRecord (as _on_event counts the event)."""
        kind, source, t, reason, number = rec
        if kind == "kvm_exit":
            self.reason_numbers[reason] = number
            self._open[source] = (reason, t)
        elif kind == "kvm_entry":
            self.vmentries += 1
            pending = self._open.pop(source, None)
            if pending is not None:
                reason, start = pending
                self.vmexits.setdefault(reason, _Bucket()).add(t - start)
        else:
            self.userspace.setdefault(reason, _Bucket()).add(None)

    def count(self, events: Iterable[Event], records: list[StatsRecord] | None = None) -> None:
        """Count `events` (of KINDS, in the order emitted), as _on_event one at a time
        would, and append each one's StatsRecord to `records` if given. One loop with the
        work inlined: a front end that takes a batch of an exits-heavy guest's events
        counts thousands a second (ui/bridge.py)."""
        numbers, opened, vmexits, userspace = self.reason_numbers, self._open, self.vmexits, self.userspace
        keep = records.append if records is not None else None
        entries = 0
        for _seq, t, _layer, source, kind, names, values in events:
            if kind == "kvm_exit":
                reason = values[names.index("exit_reason")]
                number = numbers[reason] = values[names.index("exit_reason_number")]
                opened[source] = (reason, t)
                if keep is not None:
                    keep((kind, source, t, reason, number))
                continue
            if kind == "kvm_entry":
                entries += 1
                pending = opened.pop(source, None)
                if pending is not None:
                    reason, start = pending
                    d = t - start
                    b = vmexits.get(reason)
                    if b is None:
                        b = vmexits[reason] = _Bucket()
                    b.count += 1
                    b.timed += 1
                    b.time += d
                    low = b.min_time
                    if low is None or d < low:
                        b.min_time = d
                    if d > b.max_time:
                        b.max_time = d
                if keep is not None:
                    keep((kind, source, t, None, None))
                continue
            reason = values[names.index("reason")]
            b = userspace.get(reason)
            if b is None:
                b = userspace[reason] = _Bucket()
            b.count += 1
            if keep is not None:
                keep((kind, source, t, reason, None))
        self.vmentries += entries

    def copy(self) -> ExitStats:
        """A copy that counts on apart (copy.deepcopy's result, at a fraction of its cost)."""
        return ExitStats({r: b.copy() for r, b in self.vmexits.items()}, dict(self.reason_numbers),
                         {r: b.copy() for r, b in self.userspace.items()}, self.vmentries,
                         self.instructions, self.virtual_time, dict(self._open), self.totals_known)

    def finish(self, instructions: int, virtual_time: int) -> None:
        for reason, _start in self._open.values():  # exits that never re-entered the guest
            self.vmexits.setdefault(reason, _Bucket()).add(None)
        self._open.clear()
        self.instructions = instructions
        self.virtual_time = virtual_time

    def as_dict(self) -> dict[str, Any]:
        total = sum(b.count for b in self.vmexits.values())
        total_time = sum(b.time for b in self.vmexits.values())
        return {
            "vm_exits": [
                {"reason": r, "reason_number": self.reason_numbers.get(r), "count": b.count,
                 "share": b.count / total if total else 0.0, "time": b.time,
                 "time_share": b.time / total_time if total_time else 0.0,
                 "min_time": b.min_time, "max_time": b.max_time,
                 "avg_time": b.time / b.timed if b.timed else 0.0}
                for r, b in sorted(self.vmexits.items(), key=lambda kv: (-kv[1].count, kv[0]))],
            "userspace_exits": {r: b.count for r, b in sorted(self.userspace.items())},
            "vm_exits_total": total,
            "vm_entries": self.vmentries,
            "guest_instructions": self.instructions,
            "virtual_time": self.virtual_time,
        }

    def report(self, out: IO[str]) -> None:
        d = self.as_dict()
        out.write("\nAnalyze events for all VMs, all VCPUs (virtual cycles):\n\n")
        out.write(f"{'VM-EXIT':>22} {'Samples':>9} {'Samples%':>9} {'Time%':>8} "
                  f"{'Min Time':>10} {'Max Time':>10} {'Avg time':>10}\n")
        for row in d["vm_exits"]:
            out.write(f"{row['reason']:>22} {row['count']:>9} {100 * row['share']:>8.2f}% "
                      f"{100 * row['time_share']:>7.2f}% {row['min_time'] or 0:>10} "
                      f"{row['max_time']:>10} {row['avg_time']:>10.1f}\n")
        out.write(f"\nTotal Samples:{d['vm_exits_total']}, VM entries: {d['vm_entries']}\n")
        if d["userspace_exits"]:
            out.write("\nExits to userspace (KVM_RUN returns):\n")
            for reason, n in d["userspace_exits"].items():
                out.write(f"{reason:>26} {n:>9}\n")
        if not self.totals_known:
            out.write("\nGuest instructions and virtual time: not in the trace (it has no "
                      "run_end line: the run's trace was cut short)\n")
            return
        out.write(f"\nGuest instructions: {d['guest_instructions']}\n")
        out.write(f"Virtual time: {d['virtual_time']} cycles\n")

    def write_json(self, out: IO[str]) -> None:
        json.dump(self.as_dict(), out, indent=2)
        out.write("\n")


# The longest line vmsim writes is an insn_run line of 65 536 instructions (well under
# 1 MiB); anything much longer is not a trace, and is not read whole.
MAX_LINE = 16 << 20


def stats_from_trace(path: str, lines: IO[bytes]) -> ExitStats:
    """The statistics of a saved JSON Lines trace (`vmsim stats FILE`): the same numbers
    `--stats` gave for the run that wrote it. A line vmsim would not have written raises
    TraceFormatError naming `path` and the line."""
    stats = ExitStats()
    seen = False
    totals: tuple[int, int] | None = None
    n = 0
    while True:
        raw = lines.readline(MAX_LINE + 1)
        if not raw:
            break
        n += 1
        where = f"{path}:{n}"
        if len(raw) > MAX_LINE:
            raise TraceFormatError(f"{where}: a line longer than {MAX_LINE} bytes: not a "
                                   "vmsim trace")
        try:
            rec = json.loads(raw.decode("utf-8"))
        except ValueError:  # UnicodeDecodeError too
            raise TraceFormatError(f"{where}: not a JSON object: not a vmsim trace") from None
        if not isinstance(rec, dict):
            raise TraceFormatError(f"{where}: not a JSON object: not a vmsim trace")
        kind = rec.get("kind")
        if kind == "insn_run":
            continue
        if kind not in CATALOGUE:
            raise TraceFormatError(f"{where}: unknown event kind {kind!r}: not a vmsim trace "
                                   "(or one from another version)")
        for key, typ in (("seq", int), ("time", int), ("source", str), *_NEEDS.get(kind, {}).items()):
            value = rec.get(key)
            if not isinstance(value, typ) or isinstance(value, bool):
                raise TraceFormatError(f"{where}: {kind} without a valid {key!r}")
        seen = True
        if kind == "run_end":
            totals = (rec["instructions"], rec["virtual_time"])
        elif kind in ExitStats.KINDS:
            stats._on_event(TraceRecord(kind, rec["source"], rec["time"], rec))
    if not seen:
        raise TraceFormatError(f"{path}:1: no events: not a vmsim trace")
    stats.finish(*(totals or (0, 0)))
    stats.totals_known = totals is not None
    return stats
