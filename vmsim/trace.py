"""The JSON Lines trace (`vmsim run --trace FILE`): one event per line.

A public contract (docs/trace-format.md): each line is a JSON object with "seq", "time",
"layer", "source", "kind" and the event's fields.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import IO

from vmsim.events import Event, EventStream


class TraceWriter:
    def __init__(self, events: EventStream, out: IO[str], kinds: Iterable[str] | None = None):
        self.out = out
        self.lines = 0
        self._unsubscribe = events.subscribe(self._write, kinds)

    def _write(self, ev: Event) -> None:
        self.out.write(json.dumps(ev.to_dict(), separators=(",", ":")) + "\n")
        self.lines += 1

    def close(self) -> None:
        self._unsubscribe()
        self.out.flush()
