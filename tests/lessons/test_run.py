"""Grading: every check type passes and fails (the message saying what was expected and
what was seen), every step kind, against live and headless sessions.

The expected values come from the fixture guest's source (tests/lessons/conftest.py):
"hi\\n" written one OUT per byte, then 0 to isa-debug-exit (the run's status 1), EAX 0x1200
at the end; and from the SDM (exit reason 30 is IO_INSTRUCTION, 0xBE is MOV ESI, imm32)."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

from tests.lessons.conftest import EVERYTHING, ROOT
from vmsim.asm import assemble
from vmsim.lessons import LessonError, Text, load_lesson
from vmsim.lessons.run import LessonRun

MESSAGE = assemble((EVERYTHING / "guest.asm").read_text(), "g.asm").symbols["message"]

PASSING = [
    'type = "events", kind = "kvm_exit", where = { exit_reason = "IO_INSTRUCTION" }, count = 4',
    'type = "events", kind = "kvm_userspace_exit", where = { reason = "KVM_EXIT_IO", '
    'port = [0x3f8, 0x501] }, min = 4, max = 4',
    'type = "sequence", events = [ { kind = "kvm_exit", where = { exit_reason = "EPT_VIOLATION" } }, '
    '{ kind = "kvm_exit", where = { exit_reason = "IO_INSTRUCTION" } }, '
    '{ kind = "kvm_userspace_exit", where = { port = 0x501 } } ]',
    'type = "register", name = "EAX", equals = 0x1200',
    'type = "register", name = "eax", equals = 0x1234, mask = 0xff00, cpu = 0',
    'type = "memory", address = 0x100000, equals = "be"',
    f'type = "memory", address = {MESSAGE:#x}, space = "physical", value = 0x000a6968, size = 4',
    'type = "vmcs", field = "VM_EXIT_REASON", equals = 30',
    'type = "serial", equals = "hi\\n"',
    'type = "serial", contains = "i\\n"',
    'type = "serial", lines = 1',
    'type = "outcome", finished = true, exit_status = 1, halted = false',
    'type = "instructions", min = 20, max = 30',
    'type = "translate", linear = 0x300000, physical = 0x300000',
    'type = "compare", measure = { type = "instructions" }, a = { paging = "shadow" }, '
    'b = { paging = "ept" }, relation = "equal"',
]

# Each failing check, and what its message must name: the expected value, the one seen.
FAILING = [
    ('type = "events", kind = "kvm_exit", where = { exit_reason = "IO_INSTRUCTION" }, count = 3',
     ["exactly 3", "saw 4"]),
    ('type = "events", kind = "kvm_exit", where = { exit_reason = "HLT" }', ["at least 1", "saw 0"]),
    ('type = "events", kind = "kvm_exit", max = 2', ["at most 2", "saw 5"]),
    ('type = "sequence", events = [ { kind = "kvm_userspace_exit", where = { port = 0x501 } }, '
     '{ kind = "kvm_exit", where = { exit_reason = "IO_INSTRUCTION" } } ]',
     ["port=0x501", "the first 1 of it"]),
    ('type = "register", name = "EAX", equals = 0x1234', ["0x1234", "0x1200"]),
    ('type = "memory", address = 0x100000, equals = "90 90"', ["90 90", "be 1e"]),
    ('type = "memory", address = 0x100000, value = 0xbe, size = 2', ["0xbe", "0x1ebe"]),
    ('type = "vmcs", field = "VM_EXIT_REASON", equals = 12', ["0xc", "0x1e"]),
    ('type = "serial", equals = "ho\\n"', ["'ho\\n'", "'hi\\n'"]),
    ('type = "serial", contains = "ok"', ["'ok'", "'hi\\n'"]),
    ('type = "serial", lines = 2', ["2 lines", "saw 1"]),
    ('type = "outcome", exit_status = 3', ["exit_status=3", "exit_status=1"]),
    ('type = "outcome", halted = true', ["halted=true", "halted=false"]),
    ('type = "instructions", max = 10', ["0 to 10", "saw 2"]),
    ('type = "translate", linear = 0x300000, physical = -1', ["not mapped", "0x300000"]),
    ('type = "compare", measure = { type = "instructions" }, a = { paging = "shadow" }, '
     'b = { paging = "ept" }, relation = "greater"', ["paging=shadow", "more than", "paging=ept"]),
]


def _step(checks: list[str], sid: str = "s") -> str:
    body = ",\n  ".join("{ " + c + " }" for c in checks)
    return f"""
[[steps]]
id = "{sid}"
kind = "do"
title = {{ en = "A", zh-CN = "A" }}
solution = [ {{ do = "run" }} ]
checks = [
  {body},
]
"""


def test_every_check_type_passes_on_what_the_guest_does(make_lesson) -> None:
    les = make_lesson(_step(PASSING, "all"))
    st = les.step("all")
    assert {c["type"] for c in st.checks} == {
        "events", "sequence", "register", "memory", "vmcs", "serial", "outcome",
        "instructions", "translate", "compare"}  # ("at" below: it needs a stop mid-way)
    res = LessonRun(les).run_actions(st, [{"do": "run", "count": 1}])
    assert [c.message.get("en") for c in res.checks if not c.passed] == []
    assert res.passed


def test_every_check_type_fails_naming_what_was_expected_and_seen(make_lesson) -> None:
    les = make_lesson(_step([c for c, _ in FAILING]))
    res = LessonRun(les).run_actions(les.step("s"), [{"do": "run", "count": 1}])
    assert not res.passed
    for (check, words), result in zip(FAILING, res.checks, strict=True):
        en, zh = result.message.get("en"), result.message.get("zh-CN")
        assert not result.passed, check
        for w in words:
            assert w in en, (check, en)
        assert zh and zh != en, check
        for number in re.findall(r"0x[0-9a-f]+|\d+", " ".join(words)):
            assert number in zh, (check, zh)


def test_at_holds_only_where_the_session_stands(make_lesson) -> None:
    les = make_lesson(_step(['type = "at", kind = "kvm_exit", where = { exit_reason = "IO_INSTRUCTION" }']))
    run = LessonRun(les)
    st = les.step("s")
    assert run.run_actions(st, [{"do": "step_vmexit", "count": 2}]).passed
    res = run.run_actions(st, [{"do": "step_vmexit", "count": 1}])
    assert not res.passed
    assert "EPT_VIOLATION" in res.checks[0].message.get("en")
    # A step event past the exit: the session no longer stands at it.
    assert not run.run_actions(st, [{"do": "step_vmexit", "count": 2},
                                    {"do": "step_event", "count": 1}]).passed


def test_a_check_message_from_the_lesson_comes_first(make_lesson) -> None:
    les = make_lesson(_step(['type = "serial", contains = "ok", message = '
                             '{ en = "Print ok.", zh-CN = "打印 ok。" }']))
    res = LessonRun(les).run_actions(les.step("s"), [{"do": "run", "count": 1}])
    assert res.checks[0].message.get("en").startswith("Print ok. (")
    assert "'hi\\n'" in res.checks[0].message.get("en")
    assert res.checks[0].message.get("zh-CN").startswith("打印 ok。")


def test_compare_measures_paging_modes_on_a_guest_with_page_tables(make_lesson) -> None:
    """paging.asm touches its pages under its own page tables: shadow paging intercepts
    the guest's #PF (EXCEPTION_NMI exits), EPT does not (docs in the guest)."""
    guest = (ROOT / "sample_guests" / "paging.asm").read_text()
    cmp = ('type = "compare", measure = { type = "events", kind = "kvm_exit", where = '
           '{ exit_reason = "EXCEPTION_NMI" } }, a = { paging = "shadow" }, b = { paging = "ept" }, ')
    instr = ('type = "compare", measure = { type = "instructions" }, a = { paging = "shadow" }, '
             'b = { paging = "ept" }, ')
    les = make_lesson(_step([cmp + 'relation = "greater"', cmp + 'relation = "less"',
                             instr + 'relation = "greater", factor = 0.5',
                             instr + 'relation = "greater", factor = 2']),
                      head=HEAD_BIG, guest=guest)
    res = LessonRun(les).run_actions(les.step("s"), [])
    assert [c.passed for c in res.checks] == [True, False, True, False]
    assert "saw" in res.checks[1].message.get("en")


HEAD_BIG = """format = 1
id = "t"
title = { en = "T", zh-CN = "T" }
summary = { en = "S", zh-CN = "S" }
guest = "guest.asm"
"""


# -- step kinds ----------------------------------------------------------------------------------
def test_a_do_step_is_checked_against_the_live_session_and_follows_steps_back() -> None:
    les = load_lesson(EVERYTHING)
    run = LessonRun(les)
    s = les.session("first-exit")
    run.attach(s)
    assert not run.check("first-exit").passed  # nothing done yet
    # The session's construction was recorded (Lesson.session made it): KVM_CREATE_VM.
    assert any(ev.kind == "kvm_ioctl" and ev["name"] == "KVM_CREATE_VM" for ev in run.events)
    s.step_vmexit()
    s.step_vmexit()
    assert run.check("first-exit").passed
    n = len(run.events)
    s.step_vmexit()
    res = run.check("first-exit")
    assert not res.passed and "saw 2" in res.summary()
    s.step_back_vmexit()
    assert len(run.events) == n  # the undone events were dropped
    assert run.check("first-exit").passed
    with pytest.raises(LessonError, match="attach"):
        LessonRun(les).check("first-exit")


def test_new_session_attaches(tmp_path: Path) -> None:
    les = load_lesson(EVERYTHING)
    run = LessonRun(les)
    s = run.new_session("first-exit")
    assert run.session is s
    s.run()
    res = run.check("run-to-end")
    assert not res.passed  # EAX, serial ... hold; no snapshot was saved (KVM_GET_REGS)
    assert [c.passed for c in res.checks].count(False) == 1


def test_a_predict_step_compares_with_the_simulators_count(make_lesson) -> None:
    les = load_lesson(EVERYTHING)
    run = LessonRun(les)
    assert run.truth("count-exits") == 4  # four OUTs, each a KVM_EXIT_IO
    good, bad = run.check("count-exits", answer=4), run.check("count-exits", answer="3")
    assert good.passed and not bad.passed
    assert bad.truth == 4 and "3" in bad.summary() and "4" in bad.summary()
    assert bad.explain.get("en").startswith("One per OUT")
    assert run.check("eax-at-end", answer="0x1200").passed
    with pytest.raises(LessonError, match="integer"):
        run.check("count-exits", answer="four")
    tol = make_lesson("""
[[steps]]
id = "p"
kind = "predict"
title = { en = "P", zh-CN = "P" }
question = { en = "Q", zh-CN = "Q" }
answer = { type = "serial_bytes" }
tolerance = 1
""")
    r = LessonRun(tol)
    assert r.truth("p") == 3 and r.check("p", answer=2).passed and not r.check("p", answer=1).passed


def test_a_choice_step_wants_exactly_the_correct_set() -> None:
    les = load_lesson(EVERYTHING)
    run = LessonRun(les)
    assert run.check("who-handles", answer={0, 1}).passed
    for wrong in ({0}, {0, 1, 2}, {2}, set()):
        assert not run.check("who-handles", answer=wrong).passed, wrong
    res = run.check("who-handles", answer={0, 2})
    assert "[2]" in res.summary() and "[1]" in res.summary()  # the wrong one, the missed one
    assert "It takes every VM exit first." in res.explain.get("en")
    with pytest.raises(LessonError, match="no option 3"):
        run.check("who-handles", answer={3})


def test_a_modify_step_runs_the_submission_headless() -> None:
    les = load_lesson(EVERYTHING)
    run = LessonRun(les)
    st = les.step("print-ok")
    assert run.check(st, source=st.solution.read_text()).passed
    start = run.check(st)  # None: the step's start file
    assert not start.passed and "'hi\\n'" in start.summary()
    broken = run.check(st, source="bits 32\n mvo eax, 1\n", source_name="mine.asm")
    assert not broken.passed and broken.summary().startswith("mine.asm:2:2: ")
    # A submission that never stops is bounded by the lesson's max_instructions.
    loop = run.check(st, source="bits 32\norg 0x100000\nspin: jmp spin\n")
    assert not loop.passed and "instruction limit" in loop.summary()


def test_practice_steps_use_the_generator(monkeypatch) -> None:
    """The engine's side of practice: the problem for the step's seed or the student's,
    graded by the problem's own check (a stand-in generator here; the real ones are
    tested in test_practice*.py)."""
    from tests.lessons.conftest import FIXTURES

    calls = []

    class Problem:
        def __init__(self, generator, seed):
            self.generator, self.seed = generator, seed
            self.questions = [types.SimpleNamespace(id="gpa", text=Text.same("?"), kind="hex")]
            self.answers = {"gpa": seed * 16}
            self.solution = Text.same(f"worked solution {seed}")

        def check(self, given):
            return {"gpa": given.get("gpa") == self.answers["gpa"]}

    def generate(name, seed, params=None):
        calls.append((name, seed, params))
        return Problem(name, seed)

    fake = types.ModuleType("vmsim.lessons.practice")
    fake.generate = generate
    monkeypatch.setitem(sys.modules, "vmsim.lessons.practice", fake)
    import vmsim.lessons

    monkeypatch.setattr(vmsim.lessons, "practice", fake, raising=False)
    les = load_lesson(FIXTURES / "02-practice")
    run = LessonRun(les)
    assert run.problem("walk").seed == 7
    assert run.check("walk", answer={"gpa": 112}).passed
    res = run.check("walk", answer={"gpa": 1, "seed": 9})
    assert not res.passed and calls[-1] == ("ept_walk", 9, {})
    assert "144" in res.summary() and res.explain.get("en") == "worked solution 9"
    from vmsim.lessons.run import verify_lesson

    assert all(v.ok for v in verify_lesson(les))


def test_practice_without_the_generator_module_is_a_lesson_error(monkeypatch) -> None:
    from tests.lessons.conftest import FIXTURES

    monkeypatch.setitem(sys.modules, "vmsim.lessons.practice", None)  # import fails
    import vmsim.lessons

    monkeypatch.delattr(vmsim.lessons, "practice", raising=False)
    run = LessonRun(load_lesson(FIXTURES / "02-practice"))
    with pytest.raises(LessonError, match="unavailable"):
        run.check("walk", answer={"x": 1})


def test_the_record_follows_steps_back_and_seeks_forward_again() -> None:
    """Back over events, then forward through them again without their being emitted (a
    seek replays muted), then on: the record is the record of a run that never went back."""
    les = load_lesson(EVERYTHING)
    plain = LessonRun(les)
    plain.new_session("first-exit").run()
    want = [(ev.seq, ev.kind) for ev in plain.events]
    run = LessonRun(les)
    s = run.new_session("first-exit")
    for _ in range(40):
        s.step_event()
    before = [(ev.seq, ev.kind) for ev in run.events]
    for _ in range(10):
        s.step_back_event()
    assert [(ev.seq, ev.kind) for ev in run.events] == before[:-10]
    s.seek_time(s.timeline()["end"])
    assert [(ev.seq, ev.kind) for ev in run.events] == before
    s.run()
    assert [(ev.seq, ev.kind) for ev in run.events] == want
    # Back again, then one seek past the recorded end: muted up to it, emitted after.
    for _ in range(10):
        s.step_back_event()
    s.seek_time(10**12)
    assert [(ev.seq, ev.kind) for ev in run.events] == want


def test_a_front_end_that_builds_its_own_sessions_keeps_one_record(tmp_path: Path) -> None:
    """As the GUI's File > Save snapshot / Open snapshot: the stop path recorded through
    stop_event_sink, a session built on a stream given to record_stream recorded from its
    construction, the run before it kept (keep_events)."""
    from vmsim.events import EventStream
    from vmsim.session import Session

    les = load_lesson(EVERYTHING)
    run = LessonRun(les)
    s = run.new_session("run-to-end")
    s.step_vmexit()
    s.step_vmexit()
    snap = str(tmp_path / "s.vmsnap")
    s.save_snapshot(snap, on_stop_event=run.stop_event_sink())
    before = len(run.events)
    assert sum(ev.kind == "kvm_vcpu_ioctl" and ev["name"] == "KVM_GET_REGS" for ev in run.events) == 1
    stream = EventStream()
    run.record_stream(stream)
    resumed = Session.load_snapshot(snap, events=stream)
    run.attach(resumed, keep_events=True)
    assert len(run.events) > before
    assert sum(ev.kind == "kvm_ioctl" and ev["name"] == "KVM_CREATE_VM" for ev in run.events) == 2
    resumed.run()
    assert run.check("run-to-end").passed
