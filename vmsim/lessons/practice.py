# ruff: noqa: RUF001 - Chinese text uses full-width punctuation
"""Generated practice (issue 14): fresh problems from a seed, as the homework simulators
of *Operating Systems: Three Easy Pieces* (paging-multilevel-translate.py ...) make them.

    problem = generate("ept_walk", seed=7)        # -> Problem
    problem.prompt["en"], problem.questions, problem.check({"gpa": 0x345ABC, ...})

A generator draws a small problem from `random.Random(seed)` (never the global random or
the clock: the same seed gives the same problem, byte for byte, so a teacher can hand one
seed to a whole class), writes it as a guest, runs that guest in a vmsim Session and reads
the answers and the worked solution from the simulator's own events (`ept_step`,
`walk_step`, `kvm_exit`, `kvm_userspace_exit`, `kvm_page_fault`, `kvm_mmu_get_page`:
docs/trace-format.md). There is no second, hand-written model of the hardware here.

Generators (GENERATORS), each in its own module:
- "ept_walk" (practice_ept.py): a 32-bit guest page table and a linear address; the
  guest-physical addresses of the PDE and PTE read, the final guest- and host-physical
  address, the references of the two-dimensional walk.
- "exit_prediction" (practice_exits.py): a short guest; which lines exit, with which
  basic exit reason and qualification, which reach QEMU.
- "shadow_faults" (practice_shadow.py): reads and writes under shadow paging; the #PF
  exits, those kvm.ko fixes itself, those it injects into the guest, the shadow pages.

Every text a student reads is a mapping {"en": ..., "zh-CN": ...} (the lesson format's Text).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

try:  # the lesson engine's Text (a dict whose get(lang) falls back to English)
    from vmsim.lessons import Text as _Text
except ImportError:  # pragma: no cover - before the engine is there
    _Text = dict

GENERATORS = ("ept_walk", "exit_prediction", "shadow_faults")
LANGS = ("en", "zh-CN")


def text(en: str, zh: str) -> dict[str, str]:
    """A Text: the same words in both languages."""
    return _Text({"en": en, "zh-CN": zh})


@dataclass(frozen=True)
class Question:
    id: str
    text: dict[str, str]
    kind: str  # "int" | "hex" | "text" (a set of line numbers for the "text" questions here)


@dataclass
class Problem:
    generator: str
    seed: int
    prompt: dict[str, str]  # Markdown
    questions: list[Question]
    answers: dict[str, int | str]  # the truth, from the simulator's events
    solution: dict[str, str]  # Markdown: the worked solution, from those events
    guest_source: str | None = None
    params: dict = field(default_factory=dict)  # the parameters it was made with (validated)

    def check(self, given: dict[str, int | str]) -> dict[str, bool]:
        """Each question's id -> whether `given` answers it right. A missing, blank or
        unreadable answer is wrong, never an exception ("0x3f80000", "3F80000" and 66584576 are the
        same hex answer; "3, 1", "1 3" and [1, 3] the same set of lines)."""
        result = {}
        for q in self.questions:
            truth = self.answers[q.id]
            value = given.get(q.id) if isinstance(given, dict) else None
            if value is None or (isinstance(value, str) and not value.strip()):
                result[q.id] = False  # unanswered (a blank field), even where the truth is "none"
                continue
            result[q.id] = _normalize(q.kind, value) == _normalize(q.kind, truth)
        return result

    def correct(self, given: dict[str, int | str]) -> bool:
        return all(self.check(given).values())

    def answer_text(self, question_id: str) -> str:
        """The truth as a student would write it: hex as 0x..., a set of lines as "1, 5"."""
        kind = next(q.kind for q in self.questions if q.id == question_id)
        value = self.answers[question_id]
        return h(value) if kind == "hex" else str(value)


def _normalize(kind: str, value: object) -> object:
    try:
        if kind == "int":
            if isinstance(value, bool):
                return None
            if isinstance(value, int):
                return value
            s = str(value).strip().lower()
            return -1 if s in ("none", "no", "-", "无") else int(s, 0)
        if kind == "hex":
            if isinstance(value, bool):
                return None
            if isinstance(value, int):
                return value
            s = str(value).strip().lower().replace("_", "")
            return int(s[2:] if s.startswith("0x") else s, 16)
        return lines_set(value)
    except (ValueError, TypeError):
        return None


def lines_set(value: object) -> str:
    """A set of line numbers in its one spelling: "1, 3, 4" (sorted), or "none"."""
    if isinstance(value, Iterable) and not isinstance(value, str):
        nums = {int(v) for v in value}
    else:
        s = str(value).strip().lower()
        if s in ("", "none", "-", "无", "没有"):
            nums = set()
        else:
            parts = [p for p in re.split(r"[\s,;，、]+", s) if p]
            nums = {int(p) for p in parts}
    return ", ".join(str(n) for n in sorted(nums)) if nums else "none"


def parse_answers(given: str) -> dict[str, str]:
    """A practice answer typed as text (`vmsim lesson check ... --answer`): "id=value" pairs
    separated by ";" or new lines, e.g. "pde_gpa=0x8D1314; references=14; exits=1, 5".
    Values stay strings: Problem.check reads them. Raises ValueError on a pair without "="."""
    out = {}
    for part in re.split(r"[;\n]", given):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"practice answer {part.strip()!r}: expected id=value")
        out[key.strip()] = value.strip()
    return out


def _module(name: str):
    if name not in GENERATORS:
        raise ValueError(f"unknown practice generator {name!r}: choose one of {', '.join(GENERATORS)}")
    if name == "ept_walk":
        from vmsim.lessons import practice_ept as m
    elif name == "exit_prediction":
        from vmsim.lessons import practice_exits as m
    else:
        from vmsim.lessons import practice_shadow as m
    return m


def validate(name: str, params: dict | None = None) -> dict:
    """The generator's parameters with their defaults, without making a problem (for a
    lesson linter). ValueError for an unknown generator, an unknown key or a bad value."""
    return validate_params(name, params or {}, _module(name).PARAMS)


def generate(name: str, seed: int, params: dict | None = None) -> Problem:
    """A fresh problem of generator `name` from `seed` (any int; the same seed, the same
    problem). `params` are the generator's options; an unknown key or a bad value raises
    ValueError naming it."""
    module = _module(name)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"a practice seed is an integer, not {seed!r}")
    return module.make(seed, params or {})


def validate_params(generator: str, params: dict, spec: dict[str, tuple[type, object, object, object]]
                    ) -> dict:
    """`params` checked against `spec`: name -> (type, default, low, high) for ints
    (bounds inclusive), (bool, default, None, None) for flags. Returns every parameter
    with its value (the defaults filled in)."""
    if not isinstance(params, dict):
        raise ValueError(f"{generator}: params must be a table, not {params!r}")
    unknown = sorted(set(params) - set(spec))
    if unknown:
        raise ValueError(f"{generator}: unknown parameter {unknown[0]!r} "
                         f"(known: {', '.join(sorted(spec)) or 'none'})")
    out = {}
    for key, (typ, default, low, high) in spec.items():
        value = params.get(key, default)
        if value is None:
            out[key] = None
            continue
        if typ is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{generator}: parameter {key!r} must be true or false, not {value!r}")
        elif isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{generator}: parameter {key!r} must be an integer, not {value!r}")
        elif not low <= value <= high:
            raise ValueError(f"{generator}: parameter {key!r} must be between {low} and {high}, "
                             f"not {value}")
        out[key] = value
    return out


# -- the guest around a problem ------------------------------------------------------------------
# A multiboot guest as sample_guests/*.asm start: loaded at 0x100000 by vmsim and by
# qemu-system-i386 -kernel, its own flat GDT, a stack at 0x90000. The problem's lines come
# after PREAMBLE; EPILOGUE leaves through isa-debug-exit (port 0x501) with AL.

PREAMBLE = """\
bits 32
org 0x100000

start:
        jmp entry

        align 4
multiboot:                              ; multiboot v1 header, "address fields valid"
        dd 0x1BADB002
        dd 0x00010000
        dd -(0x1BADB002 + 0x00010000)
        dd multiboot                    ; header_addr
        dd 0x100000                     ; load_addr
        dd 0                            ; load_end_addr: whole file
        dd 0                            ; bss_end_addr: no bss
        dd entry                        ; entry_addr

entry:
        mov esp, 0x90000
        lgdt [gdt_descriptor]           ; our own flat GDT: QEMU enters with its own
        jmp 0x08:.reload_cs
.reload_cs:
        mov ax, 0x10
        mov ds, ax
        mov es, ax
        mov ss, ax
"""

EPILOGUE = """\
exit:                                   ; isa-debug-exit: QEMU's status is (AL << 1) | 1
        mov dx, 0x501
        out dx, al
        hlt
        jmp exit

        align 8
gdt:    dq 0                            ; null descriptor
        dq 0x00CF9A000000FFFF           ; 0x08: flat 32-bit code, base 0, 4 GiB
        dq 0x00CF92000000FFFF           ; 0x10: flat data
gdt_end:
gdt_descriptor:
        dw gdt_end - gdt - 1
        dd gdt
"""

MAX_INSTRUCTIONS = 200_000  # every generated guest ends in a few thousand


def run_guest(source: str, kinds: Iterable[str], paging: str = "ept", filename: str = "practice.asm",
              coalesced_mmio: bool = True):
    """Assemble `source`, run it to the end on the simulated backend (`coalesced_mmio`
    False: every VGA store out to QEMU, as --no-coalesced-mmio), and return (image, events
    of `kinds` in order, outcome). Raises RuntimeError if it does not end at its
    isa-debug-exit (a generator bug, never a student's)."""
    from vmsim.asm import assemble
    from vmsim.session import Session
    from vmsim.vmm.machine import MachineConfig

    image = assemble(source, filename)
    session = Session(image, "sim", MachineConfig(coalesced_mmio=coalesced_mmio), paging=paging,
                      history=False, max_instructions=MAX_INSTRUCTIONS)
    events = []
    session.events.subscribe(events.append, list(kinds))
    outcome = session.run()
    if outcome.exit_status is None:
        raise RuntimeError(f"generated guest did not finish: {outcome.reason}")
    return image, events, outcome


def source_line(image, address: int) -> int | None:
    """The 1-based source line whose bytes hold `address`."""
    ln = image.line_at(address)
    return ln.line if ln is not None else None


def md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def h(value: int, digits: int = 0) -> str:
    """0x-prefixed upper-case hex, as vmsim's docs write addresses."""
    return f"0x{value:0{digits}X}"


def main(argv: list[str] | None = None) -> int:
    """`python -m vmsim.lessons.practice GENERATOR SEED`: a problem as text, for a teacher
    (--solution adds the worked solution and the answers, --guest the generated guest)."""
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m vmsim.lessons.practice",
                                 description="print a generated practice problem")
    ap.add_argument("generator", choices=GENERATORS)
    ap.add_argument("seed", type=int)
    ap.add_argument("--lang", choices=LANGS, default="en")
    ap.add_argument("--params", default="{}", help='the generator\'s params as JSON, e.g. \'{"lines": 6}\'')
    ap.add_argument("--solution", action="store_true", help="also the worked solution and the answers")
    ap.add_argument("--guest", action="store_true", help="only the generated guest's source")
    args = ap.parse_args(argv)
    try:
        params = json.loads(args.params)
        p = generate(args.generator, args.seed, params)
    except ValueError as e:  # json.JSONDecodeError is one
        ap.exit(2, f"{ap.prog}: {e}\n")
    if args.guest:
        print(p.guest_source, end="")
        return 0
    out = [p.prompt[args.lang], ""]
    out += [f"- `{q.id}` ({q.kind}): {q.text[args.lang]}" for q in p.questions]
    if args.solution:
        out += ["", p.solution[args.lang], ""]
        out += [f"- `{q.id}` = {p.answer_text(q.id)}" for q in p.questions]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
