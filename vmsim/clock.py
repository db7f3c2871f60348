"""Deterministic virtual time and the scheduler of the simulated host threads.

QEMU's host threads (one per vCPU, plus the main loop / iothread) are Python generators
run cooperatively on one virtual clock. A thread yields at every point where the real
one could be interrupted or would take time:

- `yield n` (an int): it spent n virtual cycles;
- `yield Block(reason, ready, until)`: it cannot go on until `ready()` is true (a lock, an
  event to wait for) or, if `until` is given, until virtual time reaches it (a timed wait:
  QEMU's poll with a timeout, a sleeping thread).

Host timers (`Timer`: Linux's hrtimers, which fire in interrupt context on a CPU, not in a
thread) run their callback at their deadline, before any thread runs past it.

The scheduler always resumes the runnable thread with the smallest virtual time, ties
broken by creation order, so a run is the same every time. No OS threads are involved:
a thread that runs ahead (a vCPU running a batch of guest instructions) asks `horizon()`
how far it may go before something else is due, so nothing happens late.

Where a simulated thread stands is kept as plain data in `SimThread.where` (a label from
the thread's own small set, e.g. "kvm_vcpu_block" or "in guest"): snapshots are taken
only where every thread stands at a point it can be rebuilt from that label and the
machine's plain state (docs/ARCHITECTURE.md, "Simulated threads and snapshots").
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

ThreadBody = Generator[Any, None, Any]

# How far a thread may run ahead of another runnable thread: the scheduling quantum of
# several vCPUs (virtual cycles). Smaller interleaves guest instructions more finely
# (a spinning vCPU sees the other's store sooner) at the cost of more switches.
QUANTUM = 2_000


@dataclass(frozen=True)
class Block:
    reason: str
    ready: Callable[[], bool]
    until: int | None = None  # wake at this virtual time even if ready() is still false


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
    where: str = "started"  # plain-data position (see the module docstring)
    blocked_since: int = 0


def _never() -> ThreadBody:
    yield 0


# What Scheduler.step returns when it only ran timers (every thread asleep).
TIMERS = SimThread("(timers)", _never(), -1)


class Timer:
    """A host timer: `callback()` runs at virtual time `expire_time` (Linux's hrtimer)."""

    def __init__(self, sched: Scheduler, name: str, callback: Callable[[], None]):
        self.sched = sched
        self.name = name
        self.callback = callback
        self.expire_time: int | None = None
        self._seq = 0

    def mod(self, deadline: int) -> None:
        """Arm (or re-arm) the timer for `deadline` (hrtimer_start)."""
        self.expire_time = max(0, int(deadline))
        self._seq = self.sched._arm(self)

    def delete(self) -> None:
        """Disarm it (hrtimer_cancel)."""
        self.expire_time = None
        self._seq = 0

    @property
    def pending(self) -> bool:
        return self.expire_time is not None


@dataclass
class Scheduler:
    threads: list[SimThread] = field(default_factory=list)
    current: SimThread | None = None
    last_time: int = 0  # where the last thread (or timer) to run had got to
    on_resume: Callable[[SimThread], None] | None = None  # e.g. to stamp events with its time
    # An object whose `time` and `thread` are set to those of each thread resumed (or
    # passed in place), as on_resume would set them, with no call: the VM's event stream,
    # which stamps every event with them. Six steps an exit to userspace set it.
    stamp: Any = None
    # The host backend (vmsim.hostkvm) runs KVM_RUN on real threads. host_busy(): some are
    # in flight; host_wait(cycles or None): wait in real time (as long as that many virtual
    # cycles take at the nominal clock) until one returns, True if one did. A thread or
    # timer due later in virtual time waits for them that long, so QEMU's timers keep
    # roughly real time on the host's KVM.
    host_busy: Callable[[], bool] | None = None
    host_wait: Callable[[int | None], bool] | None = None
    _timers: list[tuple[int, int, Timer]] = field(default_factory=list)
    _timer_seq: int = 0
    timer_time: int | None = None  # the deadline of the timer whose callback is running
    timers_fired: int = 0
    on_timer: Callable[[Timer], None] | None = None  # e.g. to trace a host timer firing
    timers_stopped: bool = False  # vm_stop: the clock no longer fires timers
    # Every timer by name (the names are unique per VM): how a snapshot finds them again.
    named_timers: dict[str, Timer] = field(default_factory=dict)
    # A thread that stopped short of its horizon only to give the caller control (a vCPU's
    # sub-batch, vmsim.kvm.x86.vcpu_enter_guest) resumes next, before anything else: how
    # finely a run is stepped then never changes the schedule.
    sticky: SimThread | None = None
    # Set by a caller that runs steps back to back and looks at nothing between them but
    # this (VirtualMachine.run without a history): True while the run may go on. Lets
    # pass_time run the step that would resume the same thread at once in place.
    in_place: Callable[[], bool] | None = None
    # Called at the end of each step passed in place, as the caller's loop would be after
    # a step (VirtualMachine._passed: the session's history records the position).
    on_pass: Callable[[], None] | None = None
    _resumed_at: int = 0  # the running thread's time when its step began

    def spawn(self, name: str, body: ThreadBody, time: int = 0) -> SimThread:
        t = SimThread(name, body, len(self.threads), time)
        self.threads.append(t)
        return t

    def new_timer(self, name: str, callback: Callable[[], None]) -> Timer:
        timer = self.named_timers[name] = Timer(self, name, callback)
        return timer

    # -- state as plain data (issue 12) ----------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The clock: each thread's time and wait (its position is the VM's to name), the
        armed timers by name with their expiry and arming order, and the counters. Between
        two steps (never while a thread or a timer callback runs)."""
        if self.current is not None or self.timer_time is not None:
            raise RuntimeError("the scheduler's state is taken between two steps")
        live = [(seq, when, t) for when, seq, t in self._timers
                if t._seq == seq and t.expire_time == when]
        if any(self.named_timers.get(t.name) is not t for _, _, t in live):
            raise ValueError("two host timers share a name")
        armed = sorted((seq, when, t.name) for seq, when, t in live)
        return {
            "threads": [{"name": t.name, "time": t.time, "done": t.done, "steps": t.steps,
                         "where": t.where, "blocked_since": t.blocked_since,
                         "blocked": None if t.blocked is None else
                         {"reason": t.blocked.reason, "until": t.blocked.until}}
                        for t in self.threads],
            "timers": [[name, when, seq] for seq, when, name in armed],
            "timer_seq": self._timer_seq, "last_time": self.last_time,
            "timers_fired": self.timers_fired, "timers_stopped": self.timers_stopped,
            "sticky": None if self.sticky is None else self.sticky.name,
        }

    def load_state(self, d: dict[str, Any]) -> None:
        """Put back state(): the threads' times and counters (their bodies and waits are
        rebuilt by their owner), every timer re-armed in its old order."""
        by_name = {t.name: t for t in self.threads}
        for td in d["threads"]:
            t = by_name[td["name"]]
            t.time, t.done, t.steps = td["time"], td["done"], td["steps"]
            t.where, t.blocked_since = td["where"], td["blocked_since"]
        for timer in self.named_timers.values():
            timer.expire_time, timer._seq = None, 0
        self._timers = []
        for name, when, seq in d["timers"]:
            timer = self.named_timers[name]
            timer.expire_time, timer._seq = when, seq
            heapq.heappush(self._timers, (when, seq, timer))
        self._timer_seq = d["timer_seq"]
        self.last_time, self.timers_fired = d["last_time"], d["timers_fired"]
        self.timers_stopped = d["timers_stopped"]
        self.sticky = None if d["sticky"] is None else by_name[d["sticky"]]

    def _arm(self, timer: Timer) -> int:
        self._timer_seq += 1
        heapq.heappush(self._timers, (timer.expire_time, self._timer_seq, timer))
        return self._timer_seq

    def _next_timer(self) -> tuple[int, Timer] | None:
        """The earliest armed timer (stale heap entries, re-armed or deleted, dropped)."""
        if self.timers_stopped:
            return None
        heap = self._timers
        while heap:
            when, seq, timer = heap[0]
            if timer._seq == seq and timer.expire_time == when:
                return when, timer
            heapq.heappop(heap)
        return None

    def time_now(self) -> int:
        """Virtual time: that of the thread running (or timer firing), else the latest
        any thread reached. (Also the property `now`; asked several times an exit, the
        method's bound form is cheaper: CPython 3.11 does not specialize a property's
        look-up, and a lambda around it is another call.)"""
        if self.timer_time is not None:
            return self.timer_time
        if self.current is not None:
            return self.current.time
        now = self.last_time
        for t in self.threads:
            if t.time > now:
                now = t.time
        return now

    now = property(time_now)

    def _wake_time(self, t: SimThread) -> int | None:
        """When `t` can next run, or None if only another thread or a timer can wake it."""
        if t.done:
            return None
        b = t.blocked
        if b is None:
            return t.time
        if b.ready():
            # Woken by what another thread did: not before that thread's time.
            return max(t.time, self.last_time)
        if b.until is not None:
            return max(t.time, b.until)
        return None

    def pick(self) -> SimThread | None:
        """The thread to resume next (_peek), woken if it was waiting."""
        best = self._peek()
        if best is not None and best.blocked is not None:
            best.time = self._wake_time(best)
            best.blocked = None
        return best

    def runnable(self) -> list[SimThread]:
        return [t for t in self.threads if self._wake_time(t) is not None]

    def horizon(self, me: SimThread | None = None) -> int | None:
        """How far (virtual time) `me` may run before something else is due: the next
        timer, a timed wait ending, or another runnable thread's time plus QUANTUM."""
        nt = self._next_timer()
        best = None if nt is None else nt[0]
        for t in self.threads:  # (the smallest of those limits, without a list: every batch)
            if t is me or t.done:
                continue
            b = t.blocked
            if b is None:
                x = t.time + QUANTUM
            elif b.until is not None:
                x = t.time if t.time > b.until else b.until
            else:
                continue
            if best is None or x < best:
                best = x
        return best

    def _fire_timers(self, upto: int | None) -> bool:
        """Run every timer due at or before `upto` (all due ones if None: nothing else
        can run). True if one ran."""
        fired = False
        while True:
            nt = self._next_timer()
            if nt is None:
                return fired
            when, timer = nt
            if upto is not None and when > upto:
                return fired
            heapq.heappop(self._timers)
            timer.expire_time = None
            when = max(when, self.last_time if upto is None else 0)
            self.timer_time = when
            self.timers_fired += 1
            # What the callback emits is stamped with the timer's time, not with that of
            # the thread that ran last.
            TIMERS.time = when
            if self.stamp is not None:
                self.stamp.time, self.stamp.thread = when, TIMERS.name
            if self.on_resume is not None:
                self.on_resume(TIMERS)
            if self.on_timer is not None:
                self.on_timer(timer)
            try:
                timer.callback()
            finally:
                self.timer_time = None
            self.last_time = max(self.last_time, when)
            self._wake_ready(when)
            fired = True
            if upto is None:
                return True

    def step(self) -> SimThread | None:
        """Resume one thread until its next yield (after any timer due before it). None
        when no thread can run and no timer is armed."""
        t = self.sticky
        self.sticky = None
        if t is not None and not t.done and t.blocked is None:
            # Continuing: nothing is due before its horizon, and what it emits keeps the
            # time its batch began at, as in one unbroken batch.
            return self._resume(t, continuing=True)
        while True:
            t, when = self._peek_when()
            if self.host_busy is not None and self.host_busy() and self._waits_for_host(t):
                continue
            if t is None:
                if self._fire_timers(None):
                    # Time moved on to a timer with every thread asleep: hand control back
                    # (the caller may decide that nothing will ever wake again).
                    return TIMERS if self._peek() is None else self.step()
                return None
            nt = self._next_timer()  # (_fire_timers(when) does nothing unless one is due)
            if nt is not None and nt[0] <= when and self._fire_timers(when):
                continue  # a timer may have woken someone earlier
            break
        # pick(): nothing has run since _peek chose `t` (a wait's ready() only looks), so
        # it is still the one, due at `when`.
        if t.blocked is not None:
            t.time = when
            t.blocked = None
        return self._resume(t)

    def pass_time(self, cycles: int) -> bool:
        """For the running thread about to yield `cycles`: if the scheduler would resume it
        at once (what it did woke nobody, nothing else is due first, no timer, and the
        caller's run goes on: `in_place`), pass that time here as that step would and give
        True; False: yield it. The schedule, the clock and every event's time are the same
        either way; only the steps between are not handed back to the caller (`on_pass`
        is told of each instead)."""
        t = self.current
        if self.in_place is None or t is None or self.sticky is not None \
                or self.timer_time is not None or self.host_busy is not None:
            return False
        # The yield's end as _resume makes it: the thread's time moves on, and the waits
        # are asked (_wake_ready) with no thread running, as the next step asks them.
        was, last = t.time, self.last_time
        when = t.time = self.last_time = was + cycles
        self.current = None
        order = t.order
        for o in self.threads:
            if o is t or o.done:
                continue
            b = o.blocked
            if b is None:
                w = o.time
            elif b.ready():
                break  # woken by what the thread did: the step gives it its time
            elif b.until is not None:
                w = o.time if o.time > b.until else b.until
            else:
                continue
            if w < when or (w == when and o.order < order):
                break  # it comes first (_peek_when)
        else:
            # (_next_timer() inline where the heap's top is live: asked at every step)
            heap = self._timers
            if not heap or self.timers_stopped:
                due = None
            else:
                due, seq, timer = heap[0]
                if timer._seq != seq or timer.expire_time != due:
                    nt = self._next_timer()
                    due = None if nt is None else nt[0]
            if (due is None or due > when) and self.in_place():
                t.steps += 1
                if self.on_pass is not None:
                    self.on_pass()  # between the two steps: no thread running
                self.current = t
                self._resumed_at = when
                stamp = self.stamp
                if stamp is not None:
                    stamp.time, stamp.thread = when, t.name
                if self.on_resume is not None:
                    self.on_resume(t)
                return True
        t.time, self.last_time, self.current = was, last, t
        return False

    def _resume(self, t: SimThread, continuing: bool = False) -> SimThread:
        self.current = t
        if not continuing:
            if self.stamp is not None:
                self.stamp.time, self.stamp.thread = t.time, t.name
            if self.on_resume is not None:
                self.on_resume(t)
        # All it does until it yields happens at this time (pass_time moves it on).
        self._resumed_at = t.time
        try:
            value = next(t.body)
        except StopIteration as stop:
            t.done = True
            t.result = stop.value
            self.last_time = t.time
            self._wake_ready(t.time)
            return t
        finally:
            self.current = None
        t.steps += 1
        if isinstance(value, int):
            t.time += value
        elif isinstance(value, Block):
            t.blocked = value
            t.blocked_since = t.time
        self.last_time = t.time
        # A lock released, an event set: at _resumed_at, not after the work yielded since.
        self._wake_ready(self._resumed_at)
        return t

    def _wake_ready(self, at: int) -> None:
        """Threads whose wait what just ran has ended become runnable now, at `at`: their
        time is fixed there (plain data), so a waker that keeps running cannot starve
        them by winning every tie."""
        for o in self.threads:
            b = o.blocked
            if b is not None and not o.done and b.ready():
                o.blocked = None
                o.time = max(o.time, at)

    def _waits_for_host(self, t: SimThread | None) -> bool:
        """Host KVM_RUNs are in flight and the next thing due is a timed wait or a timer
        (not a thread ready now): wait for a run to return for as long as that is in the
        future. True if one returned (look again), False to go on with `t` or the timer."""
        if t is not None and (t.blocked is None or t.blocked.ready()):
            return False
        due = self._wake_time(t) if t is not None else None
        nt = self._next_timer()
        if nt is not None and (due is None or nt[0] < due):
            due = nt[0]
        timeout = None if due is None else max(0, due - self.last_time)
        return self.host_wait(timeout)

    def _peek(self) -> SimThread | None:
        return self._peek_when()[0]

    def _peek_when(self) -> tuple[SimThread | None, int]:
        """The thread to resume next, the smallest wake time (_wake_time; ties by order),
        and that time."""
        best, best_when = None, 0
        last = self.last_time
        for t in self.threads:  # (_wake_time, inline: this runs at every step)
            if t.done:
                continue
            b = t.blocked
            if b is None:
                when = t.time
            elif b.ready():
                when = t.time if t.time > last else last
            elif b.until is not None:
                when = t.time if t.time > b.until else b.until
            else:
                continue
            if best is None or when < best_when or (when == best_when and t.order < best.order):
                best, best_when = t, when
        return best, best_when

    def all_blocked_or_done(self) -> bool:
        return not self.runnable()


class Mutex:
    """A simulated host mutex (QEMU's QemuMutex): hand-offs are visible events.

    Waiters queue in arrival order and the lock goes to the first of them on unlock (a
    fair hand-off), so the trace says who waited, behind whom, and for how long."""

    # (Slots, in the order the constructor sets them: vmsim.state.fields_state.)
    __slots__ = (  # noqa: RUF023
        "name", "owner", "waiters", "on_change", "now", "contended", "since")

    def __init__(self, name: str, on_change: Callable[..., None] | None = None,
                 now: Callable[[], int] | None = None):
        self.name = name
        self.owner: str | None = None
        self.waiters: list[str] = []
        self.on_change = on_change
        self.now = now
        self.contended = 0  # how many lock() calls had to wait
        self.since = 0  # when the owner took it

    def try_lock(self, who: str) -> bool:
        """Take the lock if it is free (what lock() does without waiting); False: it is
        not, use lock(). The uncontended case, without a generator to drive."""
        if self.owner is not None or self.waiters:
            return False
        self.owner = who
        self.since = self.now() if self.now else 0
        if self.on_change:
            self.on_change("lock", who, waited=0)
        return True

    def lock(self, who: str) -> Generator[Any, None, None]:
        waited = 0
        if self.owner is not None or self.waiters:
            self.contended += 1
            self.waiters.append(who)
            start = self.now() if self.now else 0
            if self.on_change:
                self.on_change("wait", who, holder=self.owner or self.waiters[0])
            yield Block(f"{self.name} held by {self.owner}",
                        lambda: self.owner is None and self.waiters[0] == who)
            self.waiters.remove(who)
            waited = (self.now() if self.now else 0) - start
        self.owner = who
        self.since = self.now() if self.now else 0
        if self.on_change:
            self.on_change("lock", who, waited=waited)

    def unlock(self, who: str) -> None:
        if self.owner != who:
            raise RuntimeError(f"{who} unlocks {self.name} held by {self.owner}")
        self.owner = None
        if self.on_change:
            held = (self.now() if self.now else 0) - self.since
            self.on_change("unlock", who, held=held)


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
