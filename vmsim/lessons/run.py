# ruff: noqa: RUF001 - Chinese text uses full-width punctuation (GLOSSARY.md)
"""Running and grading a lesson's steps (docs/lessons.md, "Checks").

LessonRun is one student's work on one lesson: it records the VM-level events of the
session the student drives (dropping those a step back undoes), and grades each kind of
step: a do step against that live session, a predict step against the simulator's own
count, a modify step by running the submitted guest headless in a fresh session, a
choice step against the correct options, a practice step against a generated problem.

Every headless run is bounded by the lesson's max_instructions, so a submission that
loops cannot hang a grader; a submission that does not assemble fails its step with the
assembler's `file:line:col: message`.
"""

from __future__ import annotations

import os
import tempfile
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmsim.lessons.model import LANGUAGES, Lesson, LessonError, Step, Text

STEP_LIMIT = 1_000_000  # scheduler steps a step_until may take (the instruction limit bounds it too)


@dataclass
class CheckResult:
    passed: bool
    message: Text  # what was expected and what was seen


@dataclass
class StepResult:
    passed: bool
    checks: list[CheckResult] = field(default_factory=list)
    truth: int | None = None
    explain: Text | None = None

    def summary(self, lang: str = "en") -> str:
        """The failed checks' messages (or all, when it passed), on one line."""
        msgs = [c.message.get(lang) for c in self.checks if c.passed == self.passed]
        return "; ".join(msgs)


def _t(en: str, zh: str) -> Text:
    return Text({"en": en, "zh-CN": zh})


# -- recording events -----------------------------------------------------------------------------
def _vm_kinds() -> list[str]:
    from vmsim.session import STEP_KINDS

    return list(STEP_KINDS)


def lesson_kinds(lesson: Lesson) -> list[str]:
    """What a live session of the lesson records: every VM-level kind, and any other that
    a do step's checks name (only do steps are checked against the live session; predict
    answers and modify steps run headless sessions of their own, recording what they
    need): a high-rate kind (walk_step) is not recorded for nothing."""
    kinds = set(_vm_kinds())
    for st in lesson.steps:
        if st.kind == "do":
            kinds |= _named_kinds(st.checks)
    return sorted(kinds)


def _named_kinds(items: Iterable[dict]) -> set[str]:
    out: set[str] = set()
    for it in items:
        if "kind" in it:
            out.add(it["kind"])
        for e in it.get("events", ()):
            out.add(e["kind"])
        if "measure" in it:
            out |= _named_kinds([it["measure"]])
    if "ept_step" in out:
        # The MMU reports a walk's EPT steps only while someone listens to the walk itself
        # (turning it on for ept_step alone would change what stepping emits).
        out.add("walk_step")
    return out


class _Recorder:
    """The events of one EventStream, from a point on; on_rewind drops the undone ones
    (kept aside while the session may go forward through them again without emitting)."""

    def __init__(self, stream, kinds: Iterable[str]):
        self.events: list = []
        self.future: list = []
        self.stream = stream
        self.kinds = sorted(set(kinds))
        self._unsubscribe = stream.subscribe(self._take, self.kinds)

    def _take(self, ev) -> None:
        future = self.future
        if future:
            # Those before it happened again without being emitted (a muted replay up to
            # where the run goes on); the one at its seq is this one, happening again.
            while future and future[0].seq < ev.seq:
                self.events.append(future.pop(0))
            if future and future[0].seq == ev.seq:
                future.pop(0)
        self.events.append(ev)

    def rewind(self, seq: int) -> None:
        undone = [ev for ev in self.events if ev.seq > seq]
        if undone:
            self.future = sorted(undone + [f for f in self.future if f.seq > seq],
                                 key=lambda e: e.seq)
            del self.events[len(self.events) - len(undone):]

    def caught_up(self) -> None:
        """The session went forward without emitting (a seek through its recorded
        future): those events happened again."""
        seq = self.stream.seq
        while self.future and self.future[0].seq <= seq:
            self.events.append(self.future.pop(0))

    def close(self) -> None:
        self._unsubscribe()


# Recorders started when Lesson.session built the session (its construction already emits
# events: KVM_CREATE_VM ...), found again by LessonRun.attach.
_EARLY: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def record_from_start(lesson: Lesson, step: Step | None = None, source: str | None = None,
                      **kw):
    """A fresh session (Lesson.session) whose events are recorded from its construction,
    for a LessonRun to attach."""
    from vmsim.events import EventStream
    from vmsim.lessons.machine import make_session

    if isinstance(step, str):
        step = lesson.step(step)
    stream = kw.pop("events", None) or EventStream()
    rec = _Recorder(stream, lesson_kinds(lesson))
    try:
        s = make_session(lesson, step, source, events=stream, **kw)
    except BaseException:
        rec.close()
        raise
    _EARLY[s] = rec
    return s


def _stop_sink(rec: _Recorder):
    kinds = set(rec.kinds)

    def sink(ev) -> None:
        if ev.kind in kinds:
            rec.events.append(ev)

    return sink


class _Live:
    """A session and the events recorded from it (what checks look at)."""

    def __init__(self, session, rec: _Recorder, lesson: Lesson, step: Step | None,
                 source: str | None):
        self.session = session
        self.rec = rec
        self.previous: list = []  # events of sessions before a resume_snapshot
        self.lesson = lesson
        self.step = step
        self.source = source
        self.snapshot: str | None = None
        self._tmp: str | None = None
        self.compare_cache: dict = {}  # compare checks' runs: (machine, measure) -> value

    @property
    def events(self) -> list:
        self.rec.caught_up()
        return self.previous + self.rec.events if self.previous else self.rec.events

    def close(self) -> None:
        self.rec.close()
        if self._tmp is not None:
            import shutil

            shutil.rmtree(self._tmp, ignore_errors=True)


def _headless(lesson: Lesson, step: Step | None, source: str | None, kinds: Iterable[str],
              machine: dict | None = None, source_name: str | None = None) -> _Live:
    from vmsim.events import EventStream

    stream = EventStream()
    rec = _Recorder(stream, kinds)
    try:
        s = lesson.session(step, source, events=stream, history=False, machine=machine,
                           source_name=source_name)
    except BaseException:
        rec.close()
        raise
    return _Live(s, rec, lesson, step, source)


def _kinds_for(checks: list[dict], actions: list[dict] = ()) -> set[str]:
    """The event kinds a headless run must record for these checks (all VM-level ones when
    an `at` check looks at the last of them)."""
    if any(c["type"] == "at" for c in checks):
        return set(_vm_kinds()) | _named_kinds(checks)
    return _named_kinds(checks) | _named_kinds(actions)


# -- matching ------------------------------------------------------------------------------------
def _value_matches(value: Any, want: Any) -> bool:
    if isinstance(want, list):
        return any(_value_matches(value, w) for w in want)
    if isinstance(want, bool) or isinstance(value, bool):
        return isinstance(want, bool) and bool(value) is want
    if isinstance(want, int):
        try:
            return int(value) == want
        except (TypeError, ValueError):
            return False
    return value == want or str(value) == want or getattr(value, "name", None) == want


EVENT_ATTRIBUTES = ("source", "layer")  # match in `where` like fields (who emitted it)


def event_matches(ev, kind: str, where: dict) -> bool:
    if ev.kind != kind:
        return False
    f = ev.fields
    for k, v in where.items():
        if k in f:
            value = f[k]
        elif k in EVENT_ATTRIBUTES:
            value = getattr(ev, k)
        else:
            return False
        if not _value_matches(value, v):
            return False
    return True


def describe(kind: str, where: dict) -> str:
    if not where:
        return kind
    conds = ", ".join(f"{k}={_show_value(v)}" for k, v in where.items())
    return f"{kind} ({conds})"


def _show_value(v: Any) -> str:
    if isinstance(v, list):
        return " or ".join(_show_value(x) for x in v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return f"{v:#x}" if v > 9 else str(v)
    return str(v)


# -- actions -------------------------------------------------------------------------------------
def apply_actions(live: _Live, actions: list[dict]) -> None:
    for a in actions:
        for _ in range(a.get("count", 1)):
            if not _act(live, a):
                break


def _act(live: _Live, a: dict) -> bool:
    """One action; False when the VM has finished (repeating it is pointless)."""
    s = live.session
    do = a["do"]
    if do == "run":
        s.run()
        return False
    if do == "save_snapshot":
        if live._tmp is None:
            live._tmp = tempfile.mkdtemp(prefix="vmsim-lesson-")
        path = os.path.join(live._tmp, f"s{len(os.listdir(live._tmp))}.vmsnap")
        # QEMU's stop path (KVM_GET_* ...) runs on a copy of the simulated VM: its events
        # come after the session's so far.
        s.save_snapshot(path, on_stop_event=_stop_sink(live.rec))
        live.snapshot = path
        return True
    if do == "resume_snapshot":
        if live.snapshot is None:
            raise LessonError("resume_snapshot: no snapshot was saved before it")
        from vmsim.events import EventStream
        from vmsim.session import Session

        old = live.rec
        live.previous = live.previous + old.events
        old.close()
        stream = EventStream()
        live.rec = _Recorder(stream, old.kinds)
        kw = {"events": stream, "max_instructions": s.max_instructions}
        if s.history is None:
            kw["history"] = False
        live.session = Session.load_snapshot(live.snapshot, **kw)
        return True
    if s.outcome is not None:
        return False
    if do == "step_instruction":
        out = s.step_instruction()
    elif do == "step_event":
        out = s.step_event()
    elif do == "step_vmexit":
        out = s.step_vmexit(STEP_LIMIT)
    elif do == "step_userspace_exit":
        out = s.step_userspace_exit(STEP_LIMIT)
    elif do == "run_until":
        if "address" in a:
            bp = s.breakpoints
            saved = set(bp.addresses)
            bp.addresses = {a["address"]}
            try:
                out = s.run_for(seconds=None)
            finally:
                bp.addresses = saved
        else:
            kind, where = a["kind"], a["where"]
            out = s.step_until(lambda ev: event_matches(ev, kind, where), STEP_LIMIT)
    else:  # (the loader refuses any other)
        raise LessonError(f"unknown action {do!r}")
    return not out.finished and out.reason != "max steps"


# -- measures ------------------------------------------------------------------------------------
def measure(live: _Live, m: dict) -> int | None:
    s = live.session
    typ = m["type"]
    if typ == "events":
        return sum(1 for ev in live.events if event_matches(ev, m["kind"], m["where"]))
    if typ == "register":
        return s.registers(m.get("cpu", 0))[m["name"]]
    if typ == "instructions":
        return s.instructions
    if typ == "serial_bytes":
        return s.serial_total
    if typ == "exit_status":
        out = s.outcome
        status = out.exit_status if out is not None else s.machine.exit_status
        return status
    raise LessonError(f"unknown measure {typ!r}")


def describe_measure(m: dict) -> str:
    typ = m["type"]
    if typ == "events":
        return f"{describe(m['kind'], m['where'])} events"
    if typ == "register":
        return m["name"]
    return {"instructions": "guest instructions", "serial_bytes": "bytes sent to COM1",
            "exit_status": "the exit status"}[typ]


# -- checks ----------------------------------------------------------------------------------------
def evaluate(live: _Live, check: dict) -> CheckResult:
    """One check against a session and its recorded events."""
    fn = _CHECKS[check["type"]]
    try:
        passed, msg = fn(live, check)
    except (ValueError, IndexError, AttributeError, KeyError) as e:
        # (a check the session cannot answer: a VMCS on the bare backend, no vCPU 3 ...)
        passed, msg = False, Text.same(f"{check['type']} check: {e}")
    if not passed and "message" in check:
        msg = check["message"] + Text({"en": f" ({msg.get('en')})",
                                       "zh-CN": f"（{msg.get('zh-CN')}）"})
    return CheckResult(passed, msg)


def _check_events(live: _Live, c: dict) -> tuple[bool, Text]:
    n = sum(1 for ev in live.events if event_matches(ev, c["kind"], c["where"]))
    what = describe(c["kind"], c["where"])
    if "count" in c:
        ok = n == c["count"]
        want_en, want_zh = f"exactly {c['count']}", f"恰好 {c['count']} 个"
    else:
        lo, hi = c.get("min", 1 if "max" not in c else 0), c.get("max")
        ok = n >= lo and (hi is None or n <= hi)
        if hi is None:
            want_en, want_zh = f"at least {lo}", f"至少 {lo} 个"
        elif lo:
            want_en, want_zh = f"{lo} to {hi}", f"{lo} 到 {hi} 个"
        else:
            want_en, want_zh = f"at most {hi}", f"至多 {hi} 个"
    return ok, _t(f"{what} events: expected {want_en}, saw {n}",
                  f"{what} 事件：期望{want_zh}，实际 {n} 个")


def _check_sequence(live: _Live, c: dict) -> tuple[bool, Text]:
    want = c["events"]
    k = 0
    for ev in live.events:
        if k < len(want) and event_matches(ev, want[k]["kind"], want[k]["where"]):
            k += 1
    seq = " -> ".join(describe(e["kind"], e["where"]) for e in want)
    if k == len(want):
        return True, _t(f"the sequence {seq} happened", f"序列 {seq} 已发生")
    missing = describe(want[k]["kind"], want[k]["where"])
    return False, _t(f"expected the sequence {seq}; saw the first {k} of it, then no {missing}",
                     f"期望序列 {seq}；只出现了前 {k} 个，之后没有 {missing}")


def _check_at(live: _Live, c: dict) -> tuple[bool, Text]:
    vm = set(_vm_kinds())
    last = next((ev for ev in reversed(live.events) if ev.kind in vm), None)
    what = describe(c["kind"], c["where"])
    if last is not None and event_matches(last, c["kind"], c["where"]):
        return True, _t(f"the session stands just after {what}", f"会话正停在 {what} 之后")
    seen = "nothing yet" if last is None else _describe_event(last)
    seen_zh = "尚无事件" if last is None else _describe_event(last)
    return False, _t(f"expected the last event to be {what}, it is {seen}",
                     f"期望最后一个事件是 {what}，实际是 {seen_zh}")


def _describe_event(ev) -> str:
    try:
        return f"{ev.kind}: {ev.describe()}"
    except (KeyError, ValueError, IndexError):
        return ev.kind


def _check_register(live: _Live, c: dict) -> tuple[bool, Text]:
    cpu = c.get("cpu", 0)
    v = live.session.registers(cpu)[c["name"]]
    mask = c.get("mask", 0xFFFFFFFF)
    ok = v & mask == c["equals"] & mask
    m = f" (mask {mask:#x})" if "mask" in c else ""
    return ok, _t(f"{c['name']}{m} on vCPU {cpu}: expected {c['equals']:#x}, saw {v & mask:#x}",
                  f"vCPU {cpu} 的 {c['name']}{m}：期望 {c['equals']:#x}，实际 {v & mask:#x}")


def _check_memory(live: _Live, c: dict) -> tuple[bool, Text]:
    s = live.session
    addr = c["address"]
    n = len(c["equals"]) if "equals" in c else c["size"]
    if c["space"] == "linear":
        data = s.read_linear(addr, n, c.get("cpu", 0))
    else:
        data = s.machine.mem.read_bytes(addr, n) if addr + n <= s.machine.mem.size else None
    where_en = f"{c['space']} {addr:#x}"
    where_zh = f"{'线性' if c['space'] == 'linear' else '物理'}地址 {addr:#x}"
    if data is None or len(data) < n:
        return False, _t(f"{where_en}: not mapped", f"{where_zh}：未映射")
    if "equals" in c:
        ok = data == c["equals"]
        return ok, _t(f"{where_en}: expected {c['equals'].hex(' ')}, saw {data.hex(' ')}",
                      f"{where_zh}：期望 {c['equals'].hex(' ')}，实际 {data.hex(' ')}")
    v = int.from_bytes(data, "little")
    return v == c["value"], _t(f"{where_en} ({n} bytes): expected {c['value']:#x}, saw {v:#x}",
                               f"{where_zh}（{n} 字节）：期望 {c['value']:#x}，实际 {v:#x}")


def _check_vmcs(live: _Live, c: dict) -> tuple[bool, Text]:
    cpu = c.get("cpu", 0)
    s = live.session
    if s.backend != "sim":
        return False, _t("VMCS checks need the simulated backend",
                         "VMCS 检查需要模拟后端（sim）")
    fields = {name: value for _, name, _, value in s.vmcs_fields(cpu)}
    v = fields.get(c["field"])
    if v is None:
        return False, _t(f"VMCS field {c['field']} is not set on vCPU {cpu}",
                         f"vCPU {cpu} 的 VMCS 字段 {c['field']} 未设置")
    mask = c.get("mask", -1)
    ok = v & mask == c["equals"] & mask
    return ok, _t(f"VMCS {c['field']} on vCPU {cpu}: expected {c['equals']:#x}, saw {v & mask:#x}",
                  f"vCPU {cpu} 的 VMCS {c['field']}：期望 {c['equals']:#x}，实际 {v & mask:#x}")


def _check_serial(live: _Live, c: dict) -> tuple[bool, Text]:
    out = bytes(live.session.serial).decode("utf-8", "replace")
    shown = out if len(out) <= 60 else out[:57] + "..."
    if "equals" in c:
        return out == c["equals"], _t(f"COM1 output: expected {c['equals']!r}, saw {shown!r}",
                                      f"COM1 输出：期望 {c['equals']!r}，实际 {shown!r}")
    if "contains" in c:
        return c["contains"] in out, _t(f"COM1 output: expected it to contain {c['contains']!r}, "
                                        f"saw {shown!r}",
                                        f"COM1 输出：期望包含 {c['contains']!r}，实际 {shown!r}")
    n = len(out.splitlines())
    return n == c["lines"], _t(f"COM1 output: expected {c['lines']} lines, saw {n}",
                               f"COM1 输出：期望 {c['lines']} 行，实际 {n} 行")


def _check_outcome(live: _Live, c: dict) -> tuple[bool, Text]:
    out = live.session.outcome
    finished = out is not None and out.finished
    seen = {"finished": finished, "halted": bool(out and out.halted),
            "exit_status": out.exit_status if out is not None else None}
    bad = [k for k in ("finished", "halted", "exit_status") if k in c and seen[k] != c[k]]
    why = f" ({out.reason})" if bad and out is not None and out.reason else ""
    want = ", ".join(f"{k}={_show_value(c[k])}" for k in ("finished", "halted", "exit_status")
                     if k in c)
    got = ", ".join(f"{k}={'none' if seen[k] is None else _show_value(seen[k])}"
                    for k in ("finished", "halted", "exit_status") if k in c)
    return not bad, _t(f"the run's outcome: expected {want}, saw {got}{why}",
                       f"运行结果：期望 {want}，实际 {got}{why}")


def _check_instructions(live: _Live, c: dict) -> tuple[bool, Text]:
    n = live.session.instructions
    lo, hi = c.get("min", 0), c.get("max")
    ok = n >= lo and (hi is None or n <= hi)
    want = f"{lo} to {hi}" if hi is not None else f"at least {lo}"
    want_zh = f"{lo} 到 {hi} 条" if hi is not None else f"至少 {lo} 条"
    return ok, _t(f"guest instructions: expected {want}, saw {n}",
                  f"客户机指令数：期望{want_zh}，实际 {n} 条")


def _check_translate(live: _Live, c: dict) -> tuple[bool, Text]:
    pa = live.session.guest_translate(c["linear"], c.get("cpu", 0))
    want = c["physical"]
    ok = (pa is None) if want == -1 else pa == want
    w_en = "not mapped" if want == -1 else f"{want:#x}"
    w_zh = "未映射" if want == -1 else f"{want:#x}"
    s_en = "not mapped" if pa is None else f"{pa:#x}"
    s_zh = "未映射" if pa is None else f"{pa:#x}"
    return ok, _t(f"linear {c['linear']:#x}: expected {w_en}, the guest's page tables give {s_en}",
                  f"线性地址 {c['linear']:#x}：期望 {w_zh}，客户机页表给出 {s_zh}")


def _check_compare(live: _Live, c: dict) -> tuple[bool, Text]:
    m = c["measure"]
    values = [_compare_run(live, c[side], m) for side in ("a", "b")]
    a, b = values
    what = describe_measure(m)
    sa = ", ".join(f"{k}={v}" for k, v in c["a"].items())
    sb = ", ".join(f"{k}={v}" for k, v in c["b"].items())
    if a is None or b is None:
        return False, _t(f"{what}: no value ({sa}: {a}, {sb}: {b})",
                         f"{what}：没有值（{sa}：{a}，{sb}：{b}）")
    rel = c["relation"]
    f = c.get("factor", 1)
    ok = {"greater": a > b if "factor" not in c else a >= f * b,
          "less": a < b if "factor" not in c else a * f <= b,
          "equal": a == b}[rel]
    rel_en = {"greater": "more than", "less": "fewer than", "equal": "as many as"}[rel]
    rel_zh = {"greater": "多于", "less": "少于", "equal": "等于"}[rel]
    fac = f" ({f}x)" if "factor" in c else ""
    return ok, _t(f"{what}: expected {sa} to give {rel_en}{fac} {sb}; saw {a} and {b}",
                  f"{what}：期望 {sa} {rel_zh}{fac} {sb}；实际 {a} 与 {b}")


def _compare_run(live: _Live, machine: dict, m: dict) -> int | None:
    """The measure of a run to the end on the step's guest (or the submission) with these
    machine settings; the same run is made once per grading."""
    key = (live.step.id if live.step is not None else None, repr(sorted(machine.items())), repr(m))
    if key not in live.compare_cache:
        other = _headless(live.lesson, live.step, live.source, _named_kinds([m]), machine=machine)
        try:
            other.session.run()
            live.compare_cache[key] = measure(other, m)
        finally:
            other.close()
    return live.compare_cache[key]


_CHECKS = {"events": _check_events, "sequence": _check_sequence, "at": _check_at,
           "register": _check_register, "memory": _check_memory, "vmcs": _check_vmcs,
           "serial": _check_serial, "outcome": _check_outcome,
           "instructions": _check_instructions, "translate": _check_translate,
           "compare": _check_compare}


# -- the student's run ---------------------------------------------------------------------------
class LessonRun:
    """One student's work on one lesson (see the module's docstring)."""

    def __init__(self, lesson: Lesson, session=None):
        self.lesson = lesson
        self.session = None
        self._live: _Live | None = None
        self._truth: dict[str, int] = {}
        self._pending: _Recorder | None = None  # record_stream's, until attach
        if session is not None:
            self.attach(session)

    # -- the live session -----------------------------------------------------------------
    def new_session(self, step: Step | str | None = None, source: str | None = None, **kw):
        """A fresh session of the step (Lesson.session), attached, recorded from its
        construction."""
        s = record_from_start(self.lesson, step, source, **kw)
        self.attach(s)
        return s

    def attach(self, session, keep_events: bool = False) -> None:
        """Follow `session` (the GUI made a new one: reset, reassembled, a new step): its
        VM-level events from its start when Lesson.session (record_from_start) made it, or
        it was built on a stream given to record_stream, else from now; those a step back
        undoes are dropped. keep_events: the events so far stay ahead of the new session's
        (a snapshot reopened: one run, as the resume_snapshot action makes it)."""
        before = list(self.events) if keep_events else []
        self.detach()
        rec = _EARLY.pop(session, None)
        pending, self._pending = self._pending, None
        if rec is None and pending is not None and pending.stream is session.events:
            rec, pending = pending, None
        if pending is not None:
            pending.close()
        if rec is None or rec.stream is not session.events:
            rec = _Recorder(session.events, lesson_kinds(self.lesson))
        self._live = _Live(session, rec, self.lesson, None, None)
        self._live.previous = before
        self.session = session
        session.on_rewind.append(self._on_rewind)

    def record_stream(self, stream) -> None:
        """Record the events of a session about to be built on `stream` (an EventStream)
        from its construction: the next attach of a session on that stream has them (a
        front end that builds its own sessions: Session.load_snapshot for a snapshot it
        opens)."""
        if self._pending is not None:
            self._pending.close()
        self._pending = _Recorder(stream, lesson_kinds(self.lesson))

    def stop_event_sink(self):
        """For Session.save_snapshot(on_stop_event=...) on the attached session: QEMU's
        stop path (run on a copy of the simulated VM) recorded after the events so far, as
        the save_snapshot action records it. None when nothing is attached."""
        return None if self._live is None else _stop_sink(self._live.rec)

    def detach(self) -> None:
        live = self._live
        if live is None:
            return
        try:
            live.session.on_rewind.remove(self._on_rewind)
        except ValueError:
            pass
        live.close()
        self._live = None
        self.session = None

    def _on_rewind(self, seq: int) -> None:
        if self._live is not None:
            self._live.rec.rewind(seq)

    @property
    def events(self) -> list:
        """The VM-level events of the attached session so far."""
        return [] if self._live is None else list(self._live.events)

    # -- grading ---------------------------------------------------------------------------
    def check(self, step: Step | str, *, answer: Any = None, source: str | None = None,
              source_name: str | None = None) -> StepResult:
        """Grade one step (see the module's docstring); LessonError for an answer of the
        wrong shape or a step that cannot be graded here."""
        st = self.lesson.step(step) if isinstance(step, str) else step
        if st.kind == "do":
            if self._live is None:
                raise LessonError("a do step is checked against a session: attach one first")
            self._live.step = st
            return self._grade(self._live, st.checks)
        if st.kind == "predict":
            n = _as_int(answer)
            truth = self.truth(st)
            ok = abs(n - truth) <= st.tolerance
            tol = f" (within {st.tolerance})" if st.tolerance else ""
            tol_zh = f"（允许误差 {st.tolerance}）" if st.tolerance else ""
            msg = _t(f"you predicted {n}{tol}; the simulator gives {truth}",
                     f"你预测 {n}{tol_zh}；模拟器给出 {truth}")
            return StepResult(ok, [CheckResult(ok, msg)], truth, st.explain)
        if st.kind == "choice":
            chosen = _as_choice(answer, len(st.options))
            correct = {i for i, o in enumerate(st.options) if o.correct}
            ok = chosen == correct
            checks = []
            for i, o in enumerate(st.options):
                if i in chosen or o.correct:  # what was chosen, and what was missed
                    good = (i in chosen) == o.correct
                    label = o.text
                    why = (Text({"en": f": {o.why.get('en')}", "zh-CN": f"：{o.why.get('zh-CN')}"})
                           if o.why else Text.same(""))
                    state = (_t("right to choose", "选对了") if good and i in chosen else
                             _t("not correct", "不正确") if i in chosen else
                             _t("also correct", "也是正确的"))
                    checks.append(CheckResult(good, Text.same(f"[{i}] ") + label
                                              + Text.same(" — ") + state + why))
            return StepResult(ok, checks, None, _choice_explain(st))
        if st.kind == "modify":
            return self.grade_source(st, source, source_name)
        if st.kind == "practice":
            return self._practice(st, answer)
        raise LessonError(f"unknown step kind {st.kind!r}")

    def _grade(self, live: _Live, checks: list[dict]) -> StepResult:
        results = [evaluate(live, c) for c in checks]
        return StepResult(all(r.passed for r in results), results)

    def grade_source(self, st: Step, source: str | None = None,
                     source_name: str | None = None) -> StepResult:
        """A modify step (or a do step's checks) on a guest source, headless: the step's
        run actions in a fresh session, then its checks. None: the step's start file."""
        from vmsim.asm import AsmError
        from vmsim.vmm.machine import GuestLoadError

        if source is None and st.start is not None:
            source, source_name = _read_source(st.start)
        try:
            live = _headless(self.lesson, st, source, _kinds_for(st.checks, st.run),
                             source_name=source_name)
        except (AsmError, GuestLoadError) as e:
            return StepResult(False, [CheckResult(False, Text.same(str(e)))])
        try:
            apply_actions(live, st.run)
            return self._grade(live, st.checks)
        finally:
            live.close()

    def run_actions(self, st: Step, actions: list[dict]) -> StepResult:
        """A do step's checks after `actions` in a fresh headless session (verify)."""
        live = _headless(self.lesson, st, None, _kinds_for(st.checks, actions))
        try:
            apply_actions(live, actions)
            return self._grade(live, st.checks)
        finally:
            live.close()

    def truth(self, step: Step | str) -> int:
        """A predict step's answer, as the simulator computes it (cached)."""
        st = self.lesson.step(step) if isinstance(step, str) else step
        if st.kind != "predict" or st.answer is None:
            raise LessonError(f"step {st.id!r} is not a predict step")
        if st.id not in self._truth:
            live = _headless(self.lesson, st, None, _named_kinds([st.answer]) | _named_kinds(st.run))
            try:
                apply_actions(live, st.run)
                v = measure(live, st.answer)
            finally:
                live.close()
            if v is None:
                raise LessonError(f"step {st.id!r}: {describe_measure(st.answer)} has no value "
                                  "after the run (did the guest write isa-debug-exit?)",
                                  self.lesson.manifest)
            self._truth[st.id] = v
        return self._truth[st.id]

    def problem(self, step: Step | str, seed: int | None = None):
        """A practice step's problem (vmsim.lessons.practice), for its seed or `seed`."""
        st = self.lesson.step(step) if isinstance(step, str) else step
        if st.kind != "practice":
            raise LessonError(f"step {st.id!r} is not a practice step")
        practice = _practice_module()
        try:
            return practice.generate(st.generator, st.seed if seed is None else seed,
                                     dict(st.params))
        except ValueError as e:
            raise LessonError(f"step {st.id!r}: {e}") from None

    def _practice(self, st: Step, answer: Any) -> StepResult:
        if not isinstance(answer, dict):
            raise LessonError("a practice answer is a table of question id -> value")
        given = {k: v for k, v in answer.items() if k != "seed"}
        seed = answer.get("seed")
        if seed is not None:
            seed = _as_int(seed)
        prob = self.problem(st, seed)
        try:
            marks = prob.check(given)
        except ValueError as e:
            raise LessonError(f"step {st.id!r}: {e}") from None
        checks = []
        for q in prob.questions:
            ok = bool(marks.get(q.id))
            truth = (prob.answer_text(q.id) if hasattr(prob, "answer_text")
                     else prob.answers.get(q.id))  # hex as 0x..., as the student writes it
            shown = given.get(q.id)
            blank = shown is None or not str(shown).strip()
            # the question as the student read it (its id is the answer field's name only)
            asked = q.text if isinstance(q.text, dict) else Text.same(str(q.text))
            checks.append(CheckResult(ok, Text(
                {"en": f"{asked.get('en')} — "
                       + ("no answer" if blank else f"you answered {str(shown).strip()}")
                       + f"; the simulator's answer is {truth}",
                 "zh-CN": f"{asked.get('zh-CN') or asked.get('en')}："
                          + ("未作答" if blank else f"你的答案 {str(shown).strip()}")
                          + f"；模拟器的答案 {truth}"})))
        ok = bool(checks) and all(c.passed for c in checks)
        return StepResult(ok, checks, None, prob.solution)


def _practice_module():
    try:
        from vmsim.lessons import practice
    except ImportError as e:
        raise LessonError(f"practice generator unavailable: {e}") from None
    return practice


def _choice_explain(st: Step) -> Text | None:
    """The step's explanation, then why each option is right or wrong (Markdown)."""
    out = {}
    for lang in LANGUAGES:
        colon = "：" if lang == "zh-CN" else ": "
        whys = [f"- {'✓' if o.correct else '✗'} [{i}] {o.text.get(lang)}{colon}{o.why.get(lang)}"
                for i, o in enumerate(st.options) if o.why]
        parts = ([st.explain.get(lang)] if st.explain else []) + (["\n".join(whys)] if whys else [])
        out[lang] = "\n\n".join(parts)
    return Text(out) if any(out.values()) else None


def _read_source(path: Path) -> tuple[str, str]:
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except (OSError, UnicodeDecodeError) as e:
        raise LessonError(f"cannot read: {e}", path) from None


def _as_int(v: Any) -> int:
    if isinstance(v, bool):
        raise LessonError(f"an answer is an integer, not {v!r}")
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        try:
            return int(v.strip(), 0)
        except ValueError:
            pass
    raise LessonError(f"an answer is an integer, not {v!r}")


def _as_choice(v: Any, n: int) -> set[int]:
    if isinstance(v, int) and not isinstance(v, bool):
        v = {v}
    if isinstance(v, str):
        try:
            v = {int(x, 0) for x in v.replace(",", " ").split()}
        except ValueError:
            raise LessonError(f"a choice answer is option numbers (0, 1, ...), not {v!r}") from None
    if not isinstance(v, set | frozenset | list | tuple) or not all(
            isinstance(x, int) and not isinstance(x, bool) for x in v):
        raise LessonError(f"a choice answer is a set of option numbers, not {v!r}")
    chosen = set(v)
    bad = [x for x in chosen if not 0 <= x < n]
    if bad:
        raise LessonError(f"no option {bad[0]} (the options are 0 to {n - 1})")
    return chosen


# -- verify ----------------------------------------------------------------------------------------
@dataclass
class Verdict:
    step: str
    ok: bool
    message: str


def verify_lesson(lesson: Lesson) -> list[Verdict]:
    """Every step solvable and not already solved (docs/lessons.md, "verify")."""
    from vmsim.asm import AsmError
    from vmsim.hostkvm import HostKvmError
    from vmsim.snapshot_format import SnapshotError
    from vmsim.vmm.machine import GuestLoadError

    run = LessonRun(lesson)
    out = []
    for st in lesson.steps:
        try:
            out.append(_verify_step(run, st))
        except (LessonError, AsmError, GuestLoadError, SnapshotError, HostKvmError, ValueError,
                OSError) as e:
            out.append(Verdict(st.id, False, str(e)))
    return out


def _verify_step(run: LessonRun, st: Step) -> Verdict:
    if st.kind == "do":
        sol = run.run_actions(st, st.solution)
        if not sol.passed:
            return Verdict(st.id, False, f"the solution does not pass: {sol.summary()}")
        fresh = run.run_actions(st, [])
        if fresh.passed:
            return Verdict(st.id, False, "the checks already pass before any action")
        return Verdict(st.id, True, "solution passes, fresh session fails")
    if st.kind == "modify":
        text, name = _read_source(st.solution)
        sol = run.grade_source(st, text, name)
        if not sol.passed:
            return Verdict(st.id, False, f"the solution {st.solution.name} does not pass: "
                                         f"{sol.summary()}")
        start = run.grade_source(st)
        if start.passed:
            return Verdict(st.id, False, f"the start {st.start.name} already passes")
        return Verdict(st.id, True, f"{st.solution.name} passes, {st.start.name} fails")
    if st.kind == "predict":
        return Verdict(st.id, True, f"the answer is {run.truth(st)}")
    if st.kind == "choice":
        n = sum(o.correct for o in st.options)
        return Verdict(st.id, n > 0, f"{n} correct option(s)")
    if st.kind == "practice":
        prob = run.problem(st)
        marks = prob.check(dict(prob.answers))
        if not prob.questions or not all(marks.get(q.id) for q in prob.questions):
            return Verdict(st.id, False, f"{st.generator} seed {st.seed}: the problem's own "
                                         "answers do not check")
        return Verdict(st.id, True, f"{st.generator} seed {st.seed}: "
                                    f"{len(prob.questions)} questions")
    return Verdict(st.id, False, f"unknown kind {st.kind!r}")
