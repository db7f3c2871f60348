# ruff: noqa: RUF001 - Chinese text uses full-width punctuation (GLOSSARY.md)
"""`vmsim lesson list|show|check|verify|lint` (docs/lessons.md). Every error is one line on
stderr: `file:line:col: message` for a malformed lesson, never a traceback."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vmsim.cli import EXIT_ASM, EXIT_BAD_INPUT, EXIT_OK, exit_status_epilog
from vmsim.lessons.model import LANGUAGES, Lesson, LessonError

EXIT_FAILED = 1  # a submission, an answer or a lesson did not pass its checks
EXIT_LESSON = EXIT_ASM  # 65 (EX_DATAERR): a malformed lesson, or a guest that does not assemble

LESSON_STATUSES = (
    (str(EXIT_OK), "every check passed (check), every lesson verifies (verify), no format "
                   "error (lint)"),
    (str(EXIT_FAILED), "check: a submission or answer failed; verify: a lesson does not "
                       "verify"),
    (str(EXIT_BAD_INPUT), "bad usage: no such lesson, step or file, an answer of the wrong "
                          "shape"),
    (str(EXIT_LESSON), "a lesson is malformed (file:line:col: message on stderr)"),
)


def register(subparsers) -> None:
    """Add the `lesson` subcommand (called from vmsim/cli.py)."""
    p = subparsers.add_parser(
        "lesson", help="self-guided lessons: list, show, check a submission, verify, lint",
        description="Self-guided lessons (docs/lessons.md). `vmsim` alone opens the GUI on "
                    "the lesson you were last at.",
        epilog=exit_status_epilog(LESSON_STATUSES),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="lesson_command", metavar="ACTION")
    sub.required = True

    def lang(q):
        q.add_argument("--lang", type=_language, default=None, metavar="{en,zh-CN}",
                       help="the language of the lesson's text (default: from the locale; "
                            "zh_CN as the GUI spells it is zh-CN)")

    ls = sub.add_parser("list", help="the lessons, with the steps you have done")
    lang(ls)
    ls.set_defaults(func=_cmd_list)

    show = sub.add_parser("show", help="a lesson's prose and steps as text")
    show.add_argument("lesson", metavar="ID", help="id, number (4, 04) or directory name")
    show.add_argument("--step", metavar="STEP", help="only this step")
    show.add_argument("--seed", type=int, metavar="N",
                      help="a practice step's problem for this seed (default: the lesson's)")
    show.add_argument("--hints", action="store_true",
                      help="print each step's hints too (the GUI reveals them one at a time)")
    lang(show)
    show.set_defaults(func=_cmd_show)

    check = sub.add_parser(
        "check", help="grade submissions headless (modify steps), or an answer",
        description="Grade guest files against a lesson's modify steps (each file against "
                    "each modify step, or --step), one line per file and step; or an "
                    "--answer to a predict, choice or practice step. Exit 0 when all pass.",
        epilog=exit_status_epilog(LESSON_STATUSES),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("lesson", metavar="ID")
    check.add_argument("--guest", action="append", default=[], metavar="FILE",
                       help="a submitted guest source (repeatable)")
    check.add_argument("--step", metavar="STEP")
    check.add_argument("--answer", metavar="X",
                       help="predict: an integer; choice: option numbers (0-based) as 0,2; "
                            "practice: question=value pairs separated by ';' "
                            "(\"gpa=0x1234; references=14\")")
    check.add_argument("--seed", type=int, metavar="N", help="practice: the problem's seed")
    lang(check)
    check.set_defaults(func=_cmd_check)

    verify = sub.add_parser(
        "verify", help="every lesson solvable and not already solved",
        description="For each lesson (all by default): every do/modify reference solution "
                    "passes its checks, every unmodified start fails them, every predict "
                    "answer is computable, every practice generator makes a problem whose "
                    "own answers check. Exit 0 only when every lesson verifies.")
    verify.add_argument("lessons", metavar="ID", nargs="*")
    verify.set_defaults(func=_cmd_verify)

    lint = sub.add_parser(
        "lint", help="check lesson files: file:line:col: message",
        description="Read every lesson (or the lesson directories given) and assemble its "
                    "guests and solutions; print each error as file:line:col: message.")
    lint.add_argument("dirs", metavar="DIR", nargs="*")
    lint.set_defaults(func=_cmd_lint)


def _language(text: str) -> str:
    lang = text.replace("_", "-")
    for known in LANGUAGES:
        if lang.lower() == known.lower():
            return known
    raise argparse.ArgumentTypeError(f"{text!r}: choose one of {', '.join(LANGUAGES)}")


def default_language() -> str:
    import locale
    import os

    for var in ("LC_ALL", "LC_MESSAGES", "LANG"):
        v = os.environ.get(var)
        if v:
            return "zh-CN" if v.lower().startswith("zh") else "en"
    loc = locale.getlocale()[0] or ""
    return "zh-CN" if loc.lower().startswith("zh") else "en"


def _err(msg: str) -> None:
    print(f"vmsim lesson: {msg}" if ":" not in msg.split(" ")[0] else msg, file=sys.stderr)


def _find(key: str) -> Lesson:
    from vmsim.lessons import find_lesson

    return find_lesson(key)


def _run(fn):
    """Run a command; one line on stderr for what goes wrong: a malformed lesson or a file
    of it that cannot be used (LessonError, a guest or snapshot that does not load) 65, no
    such lesson or step, an unreadable input, a machine that cannot be built here 2."""
    def wrapped(args) -> int:
        from vmsim.hostkvm import HostKvmError
        from vmsim.snapshot_format import SnapshotError
        from vmsim.vmm.machine import GuestLoadError

        try:
            return fn(args)
        except (LessonError, SnapshotError, GuestLoadError) as e:
            print(str(e), file=sys.stderr)
            return EXIT_LESSON
        except KeyError as e:
            _err(e.args[0] if e.args else str(e))
            return EXIT_BAD_INPUT
        except BrokenPipeError:  # (`| head`: vmsim.cli.main drops the rest)
            raise
        except (_BadInput, HostKvmError, ValueError, OSError) as e:
            _err(str(e))
            return EXIT_BAD_INPUT
    return wrapped


class _BadInput(Exception):
    pass


@_run
def _cmd_list(args) -> int:
    from vmsim.lessons import lesson_dirs, load_lesson
    from vmsim.lessons.progress import Progress

    lang = args.lang or default_language()
    prog = Progress.load()
    if prog.warning:
        print(f"vmsim lesson: {prog.warning}", file=sys.stderr)
    dirs = lesson_dirs()
    if not dirs:
        print("no lessons installed")
        return EXIT_OK
    status = EXIT_OK
    for d in dirs:
        try:
            les = load_lesson(d)
        except LessonError as e:
            print(str(e), file=sys.stderr)
            status = EXIT_LESSON
            continue
        done = prog.done_count(les)
        print(f"{les.number:2d}  {les.id:<24} {les.title.get(lang)}  [{done}/{len(les.steps)}]")
        print(f"    {les.summary.get(lang)}")
    return status


@_run
def _cmd_show(args) -> int:
    lang = args.lang or default_language()
    les = _find(args.lesson)
    steps = [les.step(args.step)] if args.step else les.steps
    out = []
    if not args.step:
        out += [f"# {les.number}. {les.title.get(lang)}", "", les.summary.get(lang), "",
                les.intro.get(lang), ""]
    for st in steps:
        out += [f"## {st.index + 1}. {st.title.get(lang)}  [{st.id}: {st.kind}]", "",
                st.prose.get(lang), ""]
        if st.question:
            out += [st.question.get(lang), ""]
        for i, o in enumerate(st.options):
            out.append(f"  [{i}] {o.text.get(lang)}")
        if st.options:
            out.append("")
        if st.kind == "practice":
            out += _practice_text(les, st, args.seed, lang)
        if st.kind == "modify":
            out += [_say(lang, "(start from {f}; submit with: {cmd})",
                         "（从 {f} 开始；提交：{cmd}）").format(
                f=st.start.name, cmd=f"vmsim lesson check {les.id} --step {st.id} --guest FILE"), ""]
        if st.hints and args.hints:
            out += [_say(lang, "Hint {i}: ", "提示 {i}：").format(i=i) + h.get(lang)
                    for i, h in enumerate(st.hints, 1)] + [""]
        elif st.hints:
            out += [_say(lang, "({n} hint(s): --hints, or one at a time in the GUI)",
                         "（{n} 条提示：用 --hints 查看，或在图形界面中逐条查看）").format(
                n=len(st.hints)), ""]
    print("\n".join(out).rstrip())
    return EXIT_OK


def _say(lang: str, en: str, zh: str) -> str:
    """A line of the command's own in the student's language (the lesson's text has both)."""
    return zh if lang == "zh-CN" else en


def _practice_text(les: Lesson, st, seed: int | None, lang: str) -> list[str]:
    """A practice step's problem as `show` prints it: the seed, the prompt, the questions
    and how to answer them."""
    from vmsim.lessons.run import LessonRun

    seed = st.seed if seed is None else seed
    prob = LessonRun(les).problem(st, seed)
    out = [_say(lang, "(generated practice: {g}, seed {seed}; another problem: --seed N)",
                "（生成的练习：{g}，种子 {seed}；换一道题：--seed N）").format(g=st.generator, seed=seed),
           "", prob.prompt.get(lang), ""]
    for q in prob.questions:
        out.append(f"  {q.id} ({q.kind}): {q.text.get(lang)}")
    ids = "; ".join(f"{q.id}=..." for q in prob.questions)
    cmd = f'vmsim lesson check {les.id} --step {st.id} --seed {seed} --answer "{ids}"'
    out += ["", _say(lang, "(answer with: {cmd})", "（作答：{cmd}）").format(cmd=cmd), ""]
    return out


def _parse_answer(st, text: str):
    if st.kind == "predict":
        try:
            return int(text, 0)
        except ValueError:
            raise _BadInput(f"--answer: step {st.id} wants an integer, not {text!r}") from None
    if st.kind == "choice":
        try:
            return {int(x, 0) for x in text.replace(",", " ").split()}
        except ValueError:
            raise _BadInput(f"--answer: step {st.id} wants option numbers like 0,2, "
                            f"not {text!r}") from None
    if st.kind == "practice":
        from vmsim.lessons.run import _practice_module

        try:  # "id=value; id=value": values kept as text, read by each question's kind
            return dict(_practice_module().parse_answers(text))
        except ValueError as e:
            raise _BadInput(f"--answer: {e}") from None
    raise _BadInput(f"--answer: step {st.id} is a {st.kind} step (check it with --guest "
                    "or in the GUI)")


@_run
def _cmd_check(args) -> int:
    from vmsim.lessons.run import LessonRun

    lang = args.lang or default_language()
    les = _find(args.lesson)
    run = LessonRun(les)
    if args.answer is not None:
        if not args.step:
            raise _BadInput("--answer needs --step")
        if args.guest:
            raise _BadInput("give --answer or --guest, not both")
        st = les.step(args.step)
        answer = _parse_answer(st, args.answer)
        if args.seed is not None and st.kind == "practice":
            answer["seed"] = args.seed
        try:
            res = run.check(st, answer=answer)
        except LessonError as e:
            if e.path is None:  # the answer's shape, not the lesson
                raise _BadInput(str(e)) from None
            raise
        if st.kind == "practice":  # one line a question, as the GUI shows them
            print(f"{st.id}: {'PASS' if res.passed else 'FAIL'}")
            for c in res.checks:
                print(f"  {'✓' if c.passed else '✗'} {_one_line(c.message.get(lang))}")
        else:
            print(f"{st.id}: {'PASS' if res.passed else 'FAIL'}: "
                  f"{_one_line(res.summary(lang))}")
        return EXIT_OK if res.passed else EXIT_FAILED
    if not args.guest:
        raise _BadInput("give --guest FILE (a modify step's submission) or --step S --answer X")
    if args.step:
        steps = [les.step(args.step)]
        if steps[0].kind != "modify":
            raise _BadInput(f"step {steps[0].id} is a {steps[0].kind} step; --guest grades "
                            "modify steps")
    else:
        steps = [s for s in les.steps if s.kind == "modify"]
        if not steps:
            raise _BadInput(f"lesson {les.id} has no modify step to grade a guest against")
    sources = []
    for g in args.guest:
        from vmsim.files import SOURCE_LIMIT, InputError, read_input_file

        try:
            raw = read_input_file(g, SOURCE_LIMIT, "the source file limit")
            sources.append((g, raw.decode("utf-8")))
        except InputError as e:
            raise _BadInput(str(e)) from None
        except UnicodeDecodeError as e:
            raise _BadInput(f"{g}: not UTF-8 text ({e.reason})") from None
    status = EXIT_OK
    for name, text in sources:
        for st in steps:
            res = run.grade_source(st, text, name)
            why = (f"{len(res.checks)} checks" if res.passed else _one_line(res.summary(lang)))
            print(f"{name}: {st.id}: {'PASS' if res.passed else 'FAIL'}: {why}")
            if not res.passed:
                status = EXIT_FAILED
    return status


def _one_line(text: str) -> str:
    return " ".join(text.split())


@_run
def _cmd_verify(args) -> int:
    from vmsim.lessons import lesson_dirs, load_lesson
    from vmsim.lessons.run import verify_lesson

    if args.lessons:
        todo = [(k, None) for k in args.lessons]
    else:
        todo = [(d.name, d) for d in lesson_dirs()]
        if not todo:
            print("no lessons to verify")
            return EXIT_OK
    status = EXIT_OK
    for key, d in todo:
        try:
            les = load_lesson(d) if d is not None else _find(key)
        except LessonError as e:
            print(str(e), file=sys.stderr)
            status = max(status, EXIT_LESSON)
            continue
        verdicts = verify_lesson(les)
        bad = [v for v in verdicts if not v.ok]
        name = les.directory.name
        if bad:
            status = max(status, EXIT_FAILED)
            for v in bad:
                print(f"{name}: {v.step}: FAIL: {_one_line(v.message)}")
            print(f"{name}: {len(verdicts) - len(bad)}/{len(verdicts)} steps verify")
        else:
            print(f"{name}: OK ({len(verdicts)} steps)")
    return status


@_run
def _cmd_lint(args) -> int:
    from vmsim.lessons import lesson_dirs

    dirs = [Path(d) for d in args.dirs] if args.dirs else lesson_dirs()
    status = EXIT_OK
    n = 0
    for d in dirs:
        errors = lint_lesson(d)
        n += 1
        for e in errors:
            print(e, file=sys.stderr)
        if errors:
            status = EXIT_LESSON
    if status == EXIT_OK:
        print(f"{n} lesson(s): no errors")
    return status


def lint_lesson(directory: Path) -> list[str]:
    """The format errors of one lesson directory: the manifest and prose (the first error
    there), then every guest, start and solution that does not assemble."""
    from vmsim.asm import AsmError, assemble
    from vmsim.lessons import load_lesson

    if not (directory / "lesson.toml").exists() and directory.is_dir():
        return [f"{directory}/lesson.toml:0:0: no such file"]
    try:
        les = load_lesson(directory)
    except LessonError as e:
        return [str(e)]
    files: set[Path] = set()
    if les.guest is not None:
        files.add(les.guest)
    for st in les.steps:
        for f in (st.guest, st.start, st.solution):
            if isinstance(f, Path):
                files.add(f)
    out = []
    for f in sorted(files):
        if f.suffix.lower() not in (".asm", ".s", ".nasm"):
            continue
        try:
            assemble(f.read_text(encoding="utf-8"), str(f))
        except AsmError as e:
            out.append(str(e))
        except (OSError, UnicodeDecodeError) as e:
            out.append(f"{f}:0:0: cannot read: {e}")
    return out
