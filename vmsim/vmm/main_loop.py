"""QEMU's main loop thread (util/main-loop.c, util/qemu-timer.c, util/async.c): the
"iothread" of the seed's picture.

`main_loop_wait` sleeps in ppoll (with the BQL released) until a file descriptor is ready,
the earliest QEMU_CLOCK_VIRTUAL timer is due, or someone notifies it (qemu_notify_event);
then it takes the BQL and runs fd handlers, bottom halves and expired timers, which is
where device models that are not driven by a vCPU run: the PIT in userspace irqchip mode
fires from a timer here, and serial input arrives through an fd handler.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vmsim.clock import Block
from vmsim.costs import COSTS

if TYPE_CHECKING:
    from vmsim.vmm.machine import Machine

THREAD = "main-loop"


class QEMUTimer:
    """A timer on QEMU_CLOCK_VIRTUAL (virtual cycles here): its callback runs in the main
    loop thread, under the BQL, once the clock reaches `expire_time`."""

    def __init__(self, loop: MainLoop, name: str, cb: Callable[[], None]):
        self.loop = loop
        self.name = name
        self.cb = cb
        self.expire_time: int | None = None

    def mod(self, deadline: int) -> None:
        """timer_mod: (re)arm; an earlier deadline than the poll's wakes the main loop."""
        self.expire_time = max(0, int(deadline))
        if self not in self.loop.timers:
            self.loop.timers.append(self)
        self.loop.notify()  # timerlist_notify -> qemu_notify_event

    def delete(self) -> None:
        """timer_del."""
        self.expire_time = None
        if self in self.loop.timers:
            self.loop.timers.remove(self)

    @property
    def pending(self) -> bool:
        return self.expire_time is not None


@dataclass
class FdHandler:
    """qemu_set_fd_handler: `can_read()` is how many bytes the consumer takes now (QEMU's
    chardev asks the frontend, e.g. serial_can_receive, before polling the fd), `ready()`
    whether the fd has data; `read(n)` consumes up to n bytes and returns how many."""

    name: str
    ready: Callable[[], bool]
    can_read: Callable[[], int]
    read: Callable[[int], int]


class MainLoop:
    def __init__(self, machine: Machine):
        self.machine = machine
        self.timers: list[QEMUTimer] = []
        self.fd_handlers: list[FdHandler] = []
        self.bottom_halves: list[tuple[str, Callable[[], None]]] = []
        self.notified = False
        self.now: Callable[[], int] = lambda: 0  # QEMU_CLOCK_VIRTUAL, set by the VM
        self.running = False  # in dispatch (not polling): the diagram lights the box
        self.named_timers: dict[str, QEMUTimer] = {}  # every timer by name (snapshots)

    def new_timer(self, name: str, cb: Callable[[], None]) -> QEMUTimer:
        """timer_new_ns(QEMU_CLOCK_VIRTUAL, cb, opaque)."""
        timer = self.named_timers[name] = QEMUTimer(self, name, cb)
        return timer

    # -- state as plain data (issue 12) ----------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The armed timers by name and expiry (in the list's order), the notification,
        and whether it is dispatching. The fd handlers' data is their device's (COM1's
        input queue is in the serial state). A bottom half is a callable: snapshots wait
        until none is scheduled (VirtualMachine.at_rebuildable_point)."""
        if self.bottom_halves:
            raise ValueError("a bottom half is scheduled: not a point a snapshot can hold")
        if any(self.named_timers.get(t.name) is not t for t in self.timers):
            raise ValueError("two QEMU timers share a name")
        return {"timers": [[t.name, t.expire_time] for t in self.timers],
                "notified": self.notified, "running": self.running}

    def load_state(self, d: dict[str, Any]) -> None:
        for t in self.named_timers.values():
            t.expire_time = None
        self.timers = []
        for name, when in d["timers"]:
            t = self.named_timers[name]
            t.expire_time = when
            self.timers.append(t)
        self.notified, self.running = d["notified"], d["running"]

    def set_fd_handler(self, handler: FdHandler) -> None:
        self.fd_handlers.append(handler)

    def bh_schedule(self, name: str, fn: Callable[[], None]) -> None:
        """qemu_bh_schedule: run `fn` in the main loop soon."""
        self.bottom_halves.append((name, fn))
        self.notify()

    def notify(self) -> None:
        """qemu_notify_event: wake the poll."""
        self.notified = True

    def deadline(self) -> int | None:
        """timerlistgroup_deadline_ns: the earliest armed timer."""
        times = [t.expire_time for t in self.timers if t.expire_time is not None]
        return min(times) if times else None

    def _fds_ready(self) -> list[FdHandler]:
        return [h for h in self.fd_handlers if h.ready() and h.can_read() > 0]

    def _wake(self) -> bool:
        if self.notified or self.machine.stop_requested:
            return True
        for h in self.fd_handlers:  # any of _fds_ready() (asked at every scheduler step)
            if h.ready() and h.can_read() > 0:
                return True
        return False


def ppoll_wait(loop: MainLoop, deadline: int | None) -> Block:
    """The main loop's ppoll: until notified, an fd is ready, or the timers' deadline."""
    return Block("main_loop_wait: ppoll", loop._wake, until=deadline)


def main_loop_wait(loop: MainLoop, resume: str | None = None) -> Generator[Any, None, None]:
    """The main loop thread (qemu_main_loop -> main_loop_wait, over and over). It holds the
    BQL except while it polls, as QEMU's does (os_host_main_loop_wait). `resume` "ppoll":
    rebuilt from a snapshot asleep in the poll (the scheduler holds its Block)."""
    m = loop.machine
    ev = m.events
    if resume is None:
        _thread(m, "started", "qemu_main_loop")
        yield from m.bql_lock(THREAD)
    while resume is not None or not m.stop_requested:  # (a rebuilt one is past the test)
        # Nothing to wait for at all (no timer, no fd with data, nobody to notify it): the
        # poll blocks until another thread notifies.
        if resume is None:
            m.bql_unlock(THREAD)
            loop.running = False
            loop.notified = False
            deadline = loop.deadline()
            if not loop._wake() and (deadline is None or deadline > loop.now()):
                yield ppoll_wait(loop, deadline)
        resume = None
        yield from m.bql_lock(THREAD)
        loop.running = True
        now = loop.now()
        fds = loop._fds_ready()
        due = sorted((t for t in loop.timers if t.expire_time is not None
                      and t.expire_time <= now), key=lambda t: (t.expire_time, t.name))
        woken_by = ", ".join(filter(None, ("fd" if fds else "", "timer" if due else "",
                                           "bh" if loop.bottom_halves else "",
                                           "notify" if loop.notified else ""))) or "poll"
        if ev is not None and ev.build("main_loop_wait"):
            ev.emit("main_loop_wait", THREAD, woken_by=woken_by, timers=len(due),
                    fds=len(fds))
        work = 0
        for h in fds:  # glib_pollfds_poll -> the fd's handler
            n = h.read(h.can_read())
            if ev is not None and ev.build("qemu_fd_handler"):
                ev.emit("qemu_fd_handler", THREAD, name=h.name, bytes=n)
            work += 1
        while loop.bottom_halves:  # aio_bh_poll
            _, fn = loop.bottom_halves.pop(0)
            fn()
            work += 1
        for t in due:  # qemu_clock_run_all_timers
            if t.expire_time is None or t.expire_time > now:
                continue  # another callback moved or deleted it
            t.expire_time = None
            if t in loop.timers:
                loop.timers.remove(t)
            if ev is not None and ev.build("qemu_timer"):
                ev.emit("qemu_timer", THREAD, name=t.name, expire_time=now)
            t.cb()
            work += 1
        # The device work takes time, and the BQL is held all along: a vCPU that exits
        # to a device meanwhile waits for it.
        yield COSTS["device_access"] * max(1, work)
    m.bql_unlock(THREAD)
    loop.running = False
    _thread(m, "stopped", m.stop_reason)


def _thread(m: Machine, state: str, detail: str) -> None:
    if m.events is not None and m.events.build("thread"):
        m.events.emit("thread", THREAD, state=state, detail=detail)
