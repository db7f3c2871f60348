"""Deterministic virtual time and the scheduler of the simulated host threads.

QEMU's host threads (one per vCPU, plus the main loop / iothread) are Python generators
run cooperatively on one virtual clock. A thread yields at every point where the real
one could be interrupted or would take time:

- `yield n` (an int): it spent n virtual cycles;
- `yield Block(reason, ready)`: it cannot go on until `ready()` is true (a lock, an
  event to wait for).

The scheduler always resumes the runnable thread with the smallest virtual time, ties
broken by creation order, so a run is the same every time. No OS threads are involved.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

ThreadBody = Generator[Any, None, Any]


@dataclass(frozen=True)
class Block:
    reason: str
    ready: Callable[[], bool]


@dataclass
class SimThread:
    name: str
    body: ThreadBody
    order: int
    time: int = 0
    blocked: Block | None = None
    done: bool = False
    result: Any = None
    steps: int = 0


@dataclass
class Scheduler:
    threads: list[SimThread] = field(default_factory=list)
    current: SimThread | None = None
    last_time: int = 0  # where the last thread to run had got to
    on_resume: Callable[[SimThread], None] | None = None  # e.g. to stamp events with its time

    def spawn(self, name: str, body: ThreadBody, time: int = 0) -> SimThread:
        t = SimThread(name, body, len(self.threads), time)
        self.threads.append(t)
        return t

    @property
    def now(self) -> int:
        """Virtual time: that of the thread running, or the latest any thread reached."""
        if self.current is not None:
            return self.current.time
        return max((t.time for t in self.threads), default=0)

    def runnable(self) -> list[SimThread]:
        out = []
        for t in self.threads:
            if t.done:
                continue
            if t.blocked is not None:
                if not t.blocked.ready():
                    continue
                # Woken by what another thread did: not before that thread's time.
                t.blocked = None
                t.time = max(t.time, self.last_time)
            out.append(t)
        return out

    def pick(self) -> SimThread | None:
        ready = self.runnable()
        if not ready:
            return None
        return min(ready, key=lambda x: (x.time, x.order))

    def step(self) -> SimThread | None:
        """Resume one thread until its next yield. None when no thread can run."""
        t = self.pick()
        if t is None:
            return None
        self.current = t
        if self.on_resume is not None:
            self.on_resume(t)
        try:
            value = next(t.body)
        except StopIteration as stop:
            t.done = True
            t.result = stop.value
            self.last_time = t.time
            return t
        finally:
            self.current = None
        t.steps += 1
        if isinstance(value, int):
            t.time += value
        elif isinstance(value, Block):
            t.blocked = value
        self.last_time = t.time
        return t

    def all_blocked_or_done(self) -> bool:
        return not self.runnable()


class Mutex:
    """A simulated host mutex (QEMU's QemuMutex): hand-offs are visible events."""

    def __init__(self, name: str, on_change: Callable[[str, str], None] | None = None):
        self.name = name
        self.owner: str | None = None
        self.on_change = on_change

    def lock(self, who: str) -> Generator[Any, None, None]:
        if self.owner is not None and self.on_change:
            self.on_change("wait", who)  # contended: the wait is visible too
        while self.owner is not None:
            yield Block(f"{self.name} held by {self.owner}", lambda: self.owner is None)
        self.owner = who
        if self.on_change:
            self.on_change("lock", who)

    def unlock(self, who: str) -> None:
        if self.owner != who:
            raise RuntimeError(f"{who} unlocks {self.name} held by {self.owner}")
        self.owner = None
        if self.on_change:
            self.on_change("unlock", who)


# -- budgets that bound every run, counted in work, never in wall time ----------------------------
# A guest can loop without retiring an instruction: a handler that faults at once (each
# delivery faults again), a VM exit that kvm.ko resumes without completing the instruction
# (a fault loop through EPT or the shadow MMU, a re-injected event). vmsim's watchdog (not
# something KVM or QEMU has: they would spin) stops a run after this many VM exits and
# exception deliveries in a row with no instruction retired.
NO_PROGRESS_LIMIT = 100_000


def no_progress_message(exits: int, deliveries: int, eip: int) -> str:
    """The one-line reason a run stopped for making no progress."""
    what = " and ".join(f"{n} {word}" for n, word in ((exits, "VM exits"),
                                                     (deliveries, "exception deliveries"))
                        if n) or "no work"
    return f"the guest made {what} without retiring an instruction at eip {eip:#010x}"
