"""vmsim.clock: the deterministic scheduler of the simulated host threads, its hrtimers
(Timer), timed waits (Block(until=...)), horizon() and the BQL's Mutex.

The expectations are the contracts the module states, which are Linux's and QEMU's:
an hrtimer's callback runs at its expiry time (hrtimer_start replaces an earlier expiry,
hrtimer_cancel disarms), a thread in a timed wait (ppoll with a timeout) wakes at the
timeout, a thread woken by another cannot run before the moment it was woken, and
QemuMutex waiters are served in arrival order (vmsim's fair hand-off). Each thread here is
a tiny generator; nothing depends on wall time.
"""

from __future__ import annotations

import pytest

from vmsim.clock import QUANTUM, TIMERS, Block, Mutex, Scheduler


def _drain(s: Scheduler, limit: int = 10_000) -> list:
    """Step until nothing can run; what each step returned."""
    out = []
    for _ in range(limit):
        t = s.step()
        if t is None:
            return out
        out.append(t)
    raise AssertionError("the scheduler never ran out of work")


# -- timers -------------------------------------------------------------------------------------

def test_timers_fire_in_deadline_order_each_at_its_deadline() -> None:
    s = Scheduler()
    fired: list[tuple[str, int]] = []
    for name, when in (("a", 300), ("b", 100), ("c", 200), ("d", 200)):
        s.new_timer(name, lambda n=name: fired.append((n, s.now))).mod(when)
    steps = _drain(s)
    # Equal deadlines in the order they were armed.
    assert fired == [("b", 100), ("c", 200), ("d", 200), ("a", 300)]
    # No thread at all: every step only ran timers.
    assert steps == [TIMERS] * 4
    assert s.timers_fired == 4


def test_a_timer_due_while_a_thread_runs_fires_at_its_deadline_not_at_the_threads_time() -> None:
    s = Scheduler()
    seen: list[int] = []
    s.new_timer("t", lambda: seen.append(s.now)).mod(120)

    def worker():
        for _ in range(5):
            yield 50  # 0, 50, 100, 150 ...

    s.spawn("w", worker())
    _drain(s)
    assert seen == [120]


def test_a_thread_never_runs_past_a_timer_it_could_see() -> None:
    """The timer's callback runs before the thread resumes at a later time: the thread
    sees what the callback did as soon as its own time has passed the deadline."""
    s = Scheduler()
    flag = {"set_at": None}
    s.new_timer("t", lambda: flag.update(set_at=s.now)).mod(120)
    observed: list[tuple[int, int | None]] = []

    def worker():
        for _ in range(4):
            observed.append((s.now, flag["set_at"]))
            yield 50

    s.spawn("w", worker())
    _drain(s)
    assert observed == [(0, None), (50, None), (100, None), (150, 120)]


def test_rearming_replaces_the_deadline_and_delete_disarms() -> None:
    s = Scheduler()
    fired: list[tuple[str, int]] = []
    earlier = s.new_timer("earlier", lambda: fired.append(("earlier", s.now)))
    earlier.mod(500)
    earlier.mod(100)  # hrtimer_start on an armed timer: the new expiry only
    later = s.new_timer("later", lambda: fired.append(("later", s.now)))
    later.mod(50)
    later.mod(400)
    gone = s.new_timer("gone", lambda: fired.append(("gone", s.now)))
    gone.mod(200)
    assert gone.pending
    gone.delete()
    assert not gone.pending
    _drain(s)
    assert fired == [("earlier", 100), ("later", 400)]
    assert not earlier.pending and not later.pending


def test_a_callback_can_rearm_its_own_timer_periodically() -> None:
    s = Scheduler()
    fired: list[int] = []

    def tick() -> None:
        fired.append(s.now)
        if len(fired) < 4:
            timer.mod(s.now + 1000)

    timer = s.new_timer("periodic", tick)
    timer.mod(1000)
    _drain(s)
    assert fired == [1000, 2000, 3000, 4000]


def test_timers_stopped_fire_nothing() -> None:
    s = Scheduler()
    fired: list[int] = []
    s.new_timer("t", lambda: fired.append(s.now)).mod(10)
    s.timers_stopped = True  # vm_stop
    assert s.step() is None
    assert fired == []


def test_timers_sentinel_when_only_timers_ran_and_the_thread_when_a_timer_woke_it() -> None:
    s = Scheduler()
    state = {"go": False}
    resumed: list[int] = []

    def sleeper():
        yield Block("waiting for the timer", lambda: state["go"])
        resumed.append(s.now)

    s.spawn("sleeper", sleeper())
    first = s.step()  # runs the thread up to its Block
    assert first is not None and first.name == "sleeper"
    s.new_timer("noise", lambda: None).mod(100)
    s.new_timer("wake", lambda: state.update(go=True)).mod(300)
    assert s.step() is TIMERS  # "noise" ran; nobody can run yet
    assert s.now == 100
    t = s.step()  # "wake" fires at 300, then the woken thread runs
    assert t is not None and t.name == "sleeper" and t.done
    assert resumed == [300]
    assert s.step() is None


# -- timed waits and wake-ups -----------------------------------------------------------------------

def test_block_until_wakes_at_until_when_nothing_else_wakes_it() -> None:
    s = Scheduler()
    woke: list[int] = []

    def poller():
        yield 10
        yield Block("ppoll", lambda: False, until=500)
        woke.append(s.now)

    s.spawn("p", poller())
    _drain(s)
    assert woke == [500]


def test_block_until_in_the_past_wakes_at_once() -> None:
    s = Scheduler()
    woke: list[int] = []

    def poller():
        yield 700
        yield Block("ppoll", lambda: False, until=500)
        woke.append(s.now)

    s.spawn("p", poller())
    _drain(s)
    assert woke == [700]


def test_a_ready_wake_is_not_before_the_wakers_time() -> None:
    s = Scheduler()
    flag = {"set": False, "at": None}
    woke: list[int] = []

    def waiter():
        yield Block("event", lambda: flag["set"])
        woke.append(s.now)

    def waker():
        yield 1000
        flag.update(set=True, at=s.now)
        yield 10

    s.spawn("waiter", waiter())
    s.spawn("waker", waker())
    _drain(s)
    assert flag["at"] == 1000
    assert len(woke) == 1 and woke[0] >= 1000
    # ... and no later than the end of the waker's step that set the flag.
    assert woke[0] <= 1010


def test_ties_go_to_the_thread_created_first() -> None:
    s = Scheduler()
    order: list[str] = []

    def body(name: str):
        for _ in range(3):
            order.append(name)
            yield 100

    s.spawn("b", body("b"))
    s.spawn("a", body("a"))
    _drain(s)
    assert order == ["b", "a"] * 3


def test_two_identical_schedules_run_identically() -> None:
    def build() -> list[tuple[str, int]]:
        s = Scheduler()
        log: list[tuple[str, int]] = []
        shared = {"n": 0}

        def body(name: str, step: int):
            for _ in range(20):
                shared["n"] += 1
                log.append((name, s.now))
                yield step

        s.new_timer("t", lambda: log.append(("timer", s.now))).mod(777)
        for i, step in enumerate((130, 70, 250)):
            s.spawn(f"t{i}", body(f"t{i}", step))
        _drain(s)
        return log

    assert build() == build()


# -- horizon ----------------------------------------------------------------------------------------

def test_horizon_is_the_earliest_of_timers_timed_waits_and_other_threads_plus_quantum() -> None:
    s = Scheduler()
    assert s.horizon() is None  # nothing else at all

    def idle():
        yield Block("never", lambda: False)

    def sleeper():
        yield Block("ppoll", lambda: False, until=50_000)

    def runner():
        yield 1000
        yield 1000

    me = s.spawn("me", idle())
    blocked = s.spawn("blocked", idle())
    timed = s.spawn("timed", sleeper())
    other = s.spawn("other", runner())
    for _ in range(4):  # everyone to its first yield
        s.step()
    assert blocked.blocked is not None and timed.blocked is not None
    assert other.time == 1000
    # A thread blocked without a timeout limits nothing; one in a timed wait limits to its
    # timeout; a runnable one to its time plus the quantum.
    assert s.horizon(me) == min(50_000, 1000 + QUANTUM)
    t = s.new_timer("t", lambda: None)
    t.mod(1500)
    assert s.horizon(me) == 1500
    t.delete()
    assert s.horizon(me) == 1000 + QUANTUM
    # The thread asking is not its own limit.
    assert s.horizon(other) == 50_000


def test_horizon_ignores_finished_threads() -> None:
    s = Scheduler()

    def short():
        yield 5

    def idle():
        yield Block("never", lambda: False)

    me = s.spawn("me", idle())
    s.spawn("short", short())
    _drain(s)
    assert s.horizon(me) is None


# -- the mutex (QemuMutex, the BQL) -----------------------------------------------------------------

def _mutex_world():
    s = Scheduler()
    log: list[tuple] = []
    m = Mutex("BQL", lambda action, who, **kw: log.append((action, who, kw, s.now)),
              now=lambda: s.now)
    return s, m, log


def test_mutex_hands_off_to_waiters_in_arrival_order_and_reports_wait_and_hold() -> None:
    s, m, log = _mutex_world()
    got: list[tuple[str, int]] = []

    def holder():
        yield from m.lock("A")
        got.append(("A", s.now))
        yield 100
        m.unlock("A")
        # Wants it back at once: it queues behind the waiters, no barging.
        yield from m.lock("A")
        got.append(("A", s.now))
        m.unlock("A")

    def late(name: str, arrive: int):
        yield arrive
        yield from m.lock(name)
        got.append((name, s.now))
        yield 30
        m.unlock(name)

    s.spawn("A", holder())
    s.spawn("B", late("B", 10))
    s.spawn("C", late("C", 20))
    _drain(s)
    assert [g[0] for g in got] == ["A", "B", "C", "A"]
    assert got == [("A", 0), ("B", 100), ("C", 130), ("A", 160)]
    waits = [(who, kw["holder"]) for action, who, kw, _ in log if action == "wait"]
    assert waits == [("B", "A"), ("C", "A"), ("A", "B")]
    locks = {(who, at): kw["waited"] for action, who, kw, at in log if action == "lock"}
    assert locks == {("A", 0): 0, ("B", 100): 90, ("C", 130): 110, ("A", 160): 60}
    held = [(who, kw["held"]) for action, who, kw, _ in log if action == "unlock"]
    assert held == [("A", 100), ("B", 30), ("C", 30), ("A", 0)]
    assert m.contended == 3
    assert m.owner is None and m.waiters == []


def test_mutex_uncontended_takes_no_wait() -> None:
    s, m, log = _mutex_world()

    def body():
        yield from m.lock("A")
        yield 7
        m.unlock("A")
        yield from m.lock("A")
        m.unlock("A")

    s.spawn("A", body())
    _drain(s)
    assert [entry[0] for entry in log] == ["lock", "unlock", "lock", "unlock"]
    assert m.contended == 0


def test_mutex_try_lock_is_an_uncontended_lock_and_refuses_a_taken_mutex() -> None:
    """try_lock (the BQL's fast path on every exit to a device) does what lock() does
    when the mutex is free; held, or with a waiter queued, it takes nothing."""
    s, m, log = _mutex_world()
    s2, m2, log2 = _mutex_world()
    got: list[bool] = []

    def body(mutex, fast: bool):
        yield 5
        if fast:
            got.append(mutex.try_lock("A"))
        else:
            yield from mutex.lock("A")
        yield 3
        mutex.unlock("A")

    s.spawn("A", body(m, True))
    s2.spawn("A", body(m2, False))
    _drain(s)
    _drain(s2)
    assert got == [True] and log == log2 and m.since == m2.since == 5
    assert log[0] == ("lock", "A", {"waited": 0}, 5)
    # Held: refused, nothing changes (no wait reported, no queue, no contention counted).
    m.owner = "B"
    before = (list(log), m.since, m.contended)
    assert m.try_lock("A") is False
    assert (log, m.since, m.contended, m.owner, m.waiters) == (*before, "B", [])
    # Free but with a waiter queued: the waiter is first (no barging).
    m.owner, m.waiters = None, ["C"]
    assert m.try_lock("A") is False and m.owner is None


def test_mutex_unlock_by_a_thread_that_does_not_hold_it_is_refused() -> None:
    _, m, _ = _mutex_world()
    with pytest.raises(RuntimeError, match="held by None"):
        m.unlock("B")


def test_on_resume_stamps_a_timer_callback_with_the_timers_time() -> None:
    """What a timer callback emits (the in-kernel PIT raising IRQ 0, an APIC timer) is
    stamped with the timer's deadline, not with the time of the thread that ran last."""
    s = Scheduler()
    stamp = {"time": -1}
    s.on_resume = lambda t: stamp.update(time=t.time)
    seen: list[int] = []
    s.new_timer("t", lambda: seen.append(stamp["time"])).mod(120)

    def worker():
        for _ in range(4):
            yield 50

    s.spawn("w", worker())
    _drain(s)
    assert seen == [120]


def test_a_woken_thread_runs_from_the_moment_it_was_woken() -> None:
    """Everything a thread does between two yields happens at one virtual time (its time
    when resumed): a flag it sets there, a lock it releases there, wakes the waiter at
    that time, not at the end of the work the waker goes on to yield."""
    s, m, log = _mutex_world()
    flag = {"set": False}
    woke: list[int] = []

    def waiter():
        yield Block("event", lambda: flag["set"])
        woke.append(s.now)

    def waker():
        yield 1000
        flag["set"] = True  # at 1000
        yield 5000  # then works on for 5000 cycles

    def holder():
        yield from m.lock("H")
        yield 300
        m.unlock("H")  # at 300
        yield 2500  # e.g. back into KVM_RUN

    def contender():
        yield 10
        yield from m.lock("C")
        m.unlock("C")

    for name, body in (("waiter", waiter()), ("waker", waker()), ("H", holder()),
                       ("C", contender())):
        s.spawn(name, body)
    _drain(s)
    assert woke == [1000]
    got = [(who, at, kw["waited"]) for action, who, kw, at in log if action == "lock"]
    assert got == [("H", 0, 0), ("C", 300, 290)]
