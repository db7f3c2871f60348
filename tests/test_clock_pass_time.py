"""Scheduler.pass_time: time a thread passes in place is the schedule stepping makes.

Random threads pass cycles (through pass_time, yielding where it says no), sleep until a
deadline, wake each other, wait to be woken or for the clock to reach a time, while
random hrtimers fire and re-arm, some at the very cycle a thread's time reaches.
Everything each thread and timer sees (which thread runs, at what virtual time,
on_resume's stamps) must be the same with passing in place allowed as with every yield
taken back to the scheduler; the examples after it show that time is passed in place
where nothing else is due.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from vmsim.clock import Block, Scheduler

ACTIONS = st.one_of(
    st.tuples(st.just("pass"), st.integers(0, 40)),
    st.tuples(st.just("sleep"), st.integers(0, 60)),
    st.tuples(st.just("wake"), st.integers(0, 2)),
    st.tuples(st.just("wait"), st.integers(0, 2)),
    st.tuples(st.just("poll"), st.integers(0, 80)),
)
PROGRAMS = st.lists(st.lists(ACTIONS, min_size=1, max_size=25), min_size=1, max_size=3)
TIMERS = st.lists(st.tuples(st.integers(0, 400), st.integers(0, 50), st.integers(0, 2)),
                  max_size=4)


def _run(programs: list, timers: list, in_place: bool) -> tuple[list, int]:
    s = Scheduler()
    log: list[tuple] = []
    flags = [False] * 3
    passed = [0]
    s.on_resume = lambda t: log.append(("resume", t.name, t.time))

    def body(i: int, program: list):
        for k, (what, n) in enumerate(program):
            log.append((f"t{i}", k, what, s.now))
            if what == "pass":
                if s.pass_time(n):
                    passed[0] += 1
                else:
                    yield n
            elif what == "sleep":
                yield Block("sleep", lambda: False, until=s.now + n)
            elif what == "poll":  # a wait that asks the clock (Scheduler.now)
                yield Block("poll", lambda until=s.now + n: s.now >= until)
            elif what == "wake":
                flags[n] = True
            elif flags[i] or n:  # "wait": to be woken (a thread that wakes nobody: once)
                yield Block("woken", lambda i=i: flags[i], until=s.now + 200 * n or None)
                flags[i] = False

    for i, program in enumerate(programs):
        s.spawn(f"t{i}", body(i, program))
    for j, (when, period, wakes) in enumerate(timers):
        def fire(j: int = j, period: int = period, wakes: int = wakes) -> None:
            log.append((f"timer{j}", s.now))
            flags[wakes] = True
            if period and s.now < 500:  # (a few times: every run comes to its end)
                s.named_timers[f"timer{j}"].mod(s.now + period)
        s.new_timer(f"timer{j}", fire).mod(when)
    if in_place:
        s.in_place = lambda: True
    for _ in range(100_000):
        if s.step() is None:
            break
    else:
        raise AssertionError("the threads never ended")
    log.append(("end", [(t.name, t.time, t.steps, t.done) for t in s.threads], s.last_time))
    return log, passed[0]


@settings(max_examples=300, deadline=None)
@given(PROGRAMS, TIMERS)
def test_passing_in_place_is_the_stepped_schedule(programs: list, timers: list) -> None:
    stepped, none = _run(programs, timers, in_place=False)
    in_place, _ = _run(programs, timers, in_place=True)
    assert none == 0  # without in_place nothing is passed in place
    assert in_place == stepped


def test_a_lone_thread_passes_its_time_in_place() -> None:
    log, passed = _run([[("pass", 5)] * 10], [], in_place=True)
    assert passed == 10
    # ... stamped as the steps would have been: at 0, then after each 5 cycles.
    assert [e[2] for e in log if e[0] == "resume"] == [0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50]


def test_a_timer_due_at_the_end_of_the_time_fires_first() -> None:
    """A timer at exactly the cycle the thread reaches runs before it goes on (as the
    scheduler fires timers due at or before the next thread's time)."""
    log, passed = _run([[("pass", 10), ("pass", 10)]], [(10, 0, 0)], in_place=True)
    assert log.index(("timer0", 10)) < log.index(("t0", 1, "pass", 10))
    assert passed == 1  # the second: nothing due at 20


def test_a_thread_asleep_until_later_lets_time_pass() -> None:
    """A timed wait ending after the cycles passed is no reason to step."""
    _, passed = _run([[("sleep", 1000)], [("pass", 5)] * 10], [], in_place=True)
    assert passed == 10

