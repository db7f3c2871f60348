"""The JSON Lines trace (`vmsim run --trace FILE`): one event per line.

A public contract (docs/trace-format.md): each line is a JSON object with "seq", "time",
"layer", "source", "kind" and the event's fields.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Iterable
from typing import IO

from vmsim.events import CATALOGUE, Event, EventStream

# High-rate hardware events: in the trace only at level "all" (they slow the run down).
HIGH_RATE = {"tlb_hit", "tlb_miss", "walk_step"}
LEVELS = ("vm", "insn", "all")


class InstructionColumn:
    """One CPU's executed instructions as a compact column: 4 bytes (the EIP) each.

    The CPU's loop appends to `eips` (Cpu.recorder); the trace writer drains it in order
    with the other events.
    """

    def __init__(self, source: str):
        self.source = source
        self.eips = array("I")
        self.count = 0


class TraceWriter:
    """Writes events (and, at level "insn", instruction records) as JSON Lines."""

    def __init__(self, events: EventStream, out: IO[str], level: str = "vm",
                 columns: Iterable[InstructionColumn] = ()):
        self.out = out
        self.lines = 0
        self.columns = list(columns) if level in ("insn", "all") else []
        kinds = None if level == "all" else [k for k in CATALOGUE if k not in HIGH_RATE]
        self._unsubscribe = events.subscribe(self._write, kinds)

    def _drain(self) -> None:
        for col in self.columns:
            if not col.eips:
                continue
            src = col.source
            write = self.out.write
            n = col.count
            for eip in col.eips:
                n += 1
                write(f'{{"kind":"insn","source":"{src}","n":{n},"eip":{eip}}}\n')
            self.lines += n - col.count
            col.count = n
            del col.eips[:]

    def _write(self, ev: Event) -> None:
        if self.columns:
            self._drain()
        self.out.write(json.dumps(ev.to_dict(), separators=(",", ":")) + "\n")
        self.lines += 1

    def close(self) -> None:
        self._drain()
        self._unsubscribe()
        self.out.flush()
