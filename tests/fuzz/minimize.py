"""Shrink a failing fuzz input to a small one that fails the same way (delta debugging).

    python -m tests.fuzz.minimize guest CRASH.bin --backend sim --paging shadow --memory 2
    python -m tests.fuzz.minimize asm CRASH.asm
    python -m tests.fuzz.minimize guest CRASH.bin -o tests/fuzz/regressions/NAME.bin

"The same way" is the same `Finding.symptom` (harness.py): a hang stays a hang, an
`exception InterceptExit` stays one. `ddmin` is Zeller's delta debugging over a list (the
bytes of a guest, the lines of a source), followed by a pass that simplifies each
remaining element (a byte to 0x00/0x90, a line to a shorter one) where that keeps the
failure.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def ddmin(items: Sequence[T], fails: Callable[[list[T]], bool],
          max_tests: int = 2000) -> list[T]:
    """A 1-minimal sublist of `items` for which `fails` holds (Zeller & Hildebrandt 2002),
    or the smallest found within `max_tests` calls. `fails(list(items))` must hold."""
    seen: dict[tuple, bool] = {}
    tests = 0

    def test(c: list[T]) -> bool:
        nonlocal tests
        key = tuple(c)
        if key not in seen:
            if tests >= max_tests:
                return False
            tests += 1
            seen[key] = fails(c)
        return seen[key]

    cur = list(items)
    n = 2
    while len(cur) >= 2:
        size = len(cur) // n
        chunks = [cur[i:i + size] for i in range(0, len(cur), size)] if size else [cur]
        reduced = False
        for chunk in chunks:  # a chunk alone
            if test(chunk):
                cur, n, reduced = chunk, 2, True
                break
        if not reduced:
            for i in range(len(chunks)):  # the complement of a chunk
                rest = [x for j, c in enumerate(chunks) if j != i for x in c]
                if test(rest):
                    cur, n, reduced = rest, max(n - 1, 2), True
                    break
        if not reduced:
            if n >= len(cur):
                break
            n = min(n * 2, len(cur))
        if tests >= max_tests:
            break
    return cur


def simplify(items: list[T], fails: Callable[[list[T]], bool],
             candidates: Callable[[T], Sequence[T]], max_tests: int = 500) -> list[T]:
    """Replace each element by a simpler one (from `candidates`) where the failure stays."""
    cur = list(items)
    tests = 0
    for i in range(len(cur)):
        for c in candidates(cur[i]):
            if c == cur[i] or tests >= max_tests:
                continue
            trial = [*cur[:i], c, *cur[i + 1:]]
            tests += 1
            if fails(trial):
                cur = trial
                break
    return cur


def minimize_bytes(data: bytes, fails: Callable[[bytes], bool], max_tests: int = 2000) -> bytes:
    small = ddmin(list(data), lambda c: bool(c) and fails(bytes(c)), max_tests)
    small = simplify(small, lambda c: fails(bytes(c)), lambda b: (0x00, 0x90),
                     max_tests=min(max_tests, 4 * len(small)))
    return bytes(small)


def minimize_lines(text: str, fails: Callable[[str], bool], max_tests: int = 2000) -> str:
    def join(c: list[str]) -> str:
        return "\n".join(c) + "\n"

    small = ddmin(text.splitlines(), lambda c: bool(c) and fails(join(c)), max_tests)
    # then each line: its characters, by the same delta debugging
    out = []
    for i, line in enumerate(small):
        def line_fails(chars: list[str], i: int = i) -> bool:
            return fails(join([*out, "".join(chars), *small[i + 1:]]))

        out.append("".join(ddmin(list(line), line_fails, max_tests // max(len(small), 1))))
    return join(out)


def guest_predicate(symptom: str, backend: str, paging: str, memory: int,
                    max_instructions: int, seconds: float | None) -> Callable[[bytes], bool]:
    from tests.fuzz.harness import Config, run_guest

    cfg = Config(backend, paging, memory)

    def fails(data: bytes) -> bool:
        r = run_guest(data, cfg, max_instructions, seconds)
        return r.finding is not None and r.finding.symptom == symptom

    return fails


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.fuzz.minimize",
                                description="shrink a failing fuzz input")
    p.add_argument("kind", choices=("guest", "asm"))
    p.add_argument("file", type=Path)
    p.add_argument("-o", "--output", type=Path, help="where to write the minimized input")
    p.add_argument("--backend", default="sim", choices=("sim", "bare"))
    p.add_argument("--paging", default="ept", choices=("ept", "shadow"))
    p.add_argument("--memory", type=int, default=16)
    p.add_argument("--max-instructions", type=int, default=20_000)
    p.add_argument("--seconds", type=float, default=None,
                   help="CPU seconds before a run counts as a hang while minimizing "
                        "(shorter than the tests' bound makes minimizing a hang faster)")
    p.add_argument("--max-tests", type=int, default=2000)
    a = p.parse_args(argv)
    from tests.fuzz.asm_fuzz import check_source
    from tests.fuzz.harness import Config, run_guest

    if a.kind == "guest":
        data = a.file.read_bytes()
        first = run_guest(data, Config(a.backend, a.paging, a.memory), a.max_instructions, a.seconds)
        if first.finding is None:
            print(f"{a.file}: does not fail ({first.outcome})", file=sys.stderr)
            return 1
        print(f"symptom: {first.finding}", file=sys.stderr)
        fails = guest_predicate(first.finding.symptom, a.backend, a.paging, a.memory,
                                a.max_instructions, a.seconds)
        small = minimize_bytes(data, fails, a.max_tests)
        out = a.output or a.file.with_suffix(".min.bin")
        out.write_bytes(small)
        print(f"{len(data)} -> {len(small)} bytes: {out} ({small.hex()})", file=sys.stderr)
        return 0
    text = a.file.read_text(encoding="utf-8", errors="surrogateescape")
    first = check_source(text)
    if first is None:
        print(f"{a.file}: does not fail", file=sys.stderr)
        return 1
    print(f"symptom: {first}", file=sys.stderr)
    small = minimize_lines(text, lambda t: (f := check_source(t)) is not None
                           and f.symptom == first.symptom, a.max_tests)
    out = a.output or a.file.with_suffix(".min.asm")
    out.write_text(small, encoding="utf-8", errors="surrogateescape")
    print(f"{len(text.splitlines())} -> {len(small.splitlines())} lines: {out}", file=sys.stderr)
    sys.stderr.write(small)
    return 0


if __name__ == "__main__":
    sys.exit(main())
