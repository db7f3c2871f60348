"""Random assembler sources (a grammar, as hypothesis strategies) and the property they
must keep: `vmsim.asm.assemble` gives bytes or raises AsmError naming file:line:col of a
line that exists and has something on it; never another exception, never a hang, never
more than 1 GiB of memory.

The instructions themselves come from tests/asm/test_random_vs_nasm.py's generator (valid
NASM, compared byte for byte with nasm there); this grammar wraps them in what that test
leaves out: labels, EQU, data, TIMES, ALIGN, RESB, ORG, sections, %define, expressions of
every operator and depth, huge counts, and garbage.
"""

from __future__ import annotations

import re

from hypothesis import strategies as st

from tests.asm.test_random_vs_nasm import instruction
from tests.fuzz.budget import Hang, memory_cap, watchdog
from tests.fuzz.harness import Finding, _short_traceback

FILENAME = "fuzz.asm"
ASM_SECONDS = 10.0  # CPU seconds for one source (at most 40 lines and 1 MiB of output: well under one)

LABELS = ["start", "a", "b", "loop1", "data", "end", ".l", ".x", "a.l", "$a", "..@x", "_x1"]
REGS = "eax ebx ecx edx esi edi esp ebp ax bx cx dx si di sp bp al bl cl dl ah bh ch dh".split()
REGS += "cr0 cr2 cr3 cr4 cs ds es fs gs ss".split()
MNEMONICS = ("mov add sub xor and or cmp test inc dec push pop jmp call ret jz jnz loop "
             "lea movzx movsx shl shr rol imul div int out in lgdt lidt invlpg xchg "
             "rep stosb movsd cpuid hlt nop iret vmcall".split())
NUMBERS = st.one_of(
    st.integers(-300, 300).map(str),
    st.integers(0, (1 << 32) - 1).map(hex),
    st.integers(0, (1 << 64) + 5).map(lambda v: f"0{v:x}h"),
    st.integers(0, 255).map(lambda v: f"{v:b}b"),
    st.integers(0, 511).map(lambda v: f"0o{v:o}"),
    st.sampled_from(["'a'", "'ab'", "'abcd'", '"x"', "`\\n`", "0", "0x", "1_000", "$", "$$",
                     "0xffffffffffffffff", "99999999999999999999999"]),
)
# Counts for TIMES/RESB/ALIGN: mostly small, some at the edges of what RAM could hold.
COUNTS = st.one_of(
    st.integers(0, 64).map(str),
    # 1 MiB is a legitimate image; 4 GiB and more cannot fit in any guest's RAM (at most
    # 3 GiB) and must be refused, not allocated. Nothing between: a 2 GiB image is legal
    # and would only measure this machine's memory.
    st.sampled_from(["1<<12", "0x10000", "1<<20", "0xffffffff", "1<<32", "1<<40", "-1",
                     "(b-a)", "($-$$)", "end-start"]),
)
GARBAGE = st.one_of(
    st.text(st.characters(min_codepoint=1, max_codepoint=0x7F), max_size=20),
    st.text(max_size=8),
    st.sampled_from(["[", "]", ",", ":", "::", "'", '"', "`", "%%", "\\", "\t", "?", "@",
                     "#", "~~~~", "((((", "))))", "+-+-", "dword dword", "byte [", "\x00"]),
)


def expr(depth: int = 3) -> st.SearchStrategy[str]:
    leaf = st.one_of(NUMBERS, st.sampled_from(LABELS))
    if depth <= 0:
        return leaf
    sub = expr(depth - 1)
    return st.one_of(
        leaf,
        st.tuples(sub, st.sampled_from("+ - * / % // %% << >> & | ^".split()), sub)
        .map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
        st.tuples(st.sampled_from(["-", "~", "!", "+"]), sub).map("".join),
        sub.map(lambda s: f"({s})"),
    )


EXPR = expr()
DEEP = st.tuples(st.integers(1, 2000), st.sampled_from(["(", "-", "~", "(-"])).map(
    lambda t: "mov eax, " + t[1] * t[0] + "1" + (")" * t[0] if "(" in t[1] else ""))


@st.composite
def operand(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.sampled_from(REGS))
    if kind == 1:
        return draw(EXPR)
    size = draw(st.sampled_from(["", "byte ", "word ", "dword ", "qword "]))
    return f"{size}[{draw(st.sampled_from(['', 'es:', 'ss:']))}{draw(EXPR)}]"


@st.composite
def line(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 13))
    label = draw(st.sampled_from(LABELS))
    if kind == 0:
        return draw(instruction())
    if kind == 1:
        ops = draw(st.lists(operand(), max_size=3))
        return f"{draw(st.sampled_from(MNEMONICS))} {', '.join(ops)}"
    if kind == 2:
        return f"{label}:" + draw(st.sampled_from(["", " nop", " ; c", " db 1"]))
    if kind == 3:
        return f"{label} equ {draw(EXPR)}"
    if kind == 4:
        items = draw(st.lists(st.one_of(EXPR, st.sampled_from(["'hello'", '"x", 0', "`a\\0`"])),
                              min_size=1, max_size=4))
        return f"{draw(st.sampled_from(['db', 'dw', 'dd']))} {', '.join(items)}"
    if kind == 5:
        inner = draw(st.one_of(st.just("nop"), st.just("db 0"), line()))
        return f"times {draw(COUNTS)} {inner}"
    if kind == 6:
        return f"{draw(st.sampled_from(['resb', 'resw', 'resd']))} {draw(COUNTS)}"
    if kind == 7:
        fill = draw(st.sampled_from(["", ", db 0", ", nop", ", db 0xcc"]))
        return f"align {draw(st.one_of(COUNTS, st.sampled_from(['4', '16', '4096'])))}{fill}"
    if kind == 8:
        return draw(st.sampled_from([
            "bits 32", "[bits 32]", "bits 16", "use32", "section .text", "section .data",
            "section .bss", "org 0x100000", f"org {draw(EXPR)}", "global start", "cpu 386",
            "[org 0]", "%define X 5", f"%define {label} {draw(EXPR)}", "%undef X", "%if 1",
            "%endif", "%include 'x'", "incbin 'x'", "extern y", "absolute 0",
        ]))
    if kind == 9:
        return draw(DEEP)
    if kind == 10:
        return draw(st.sampled_from(["", "   ", "; comment", "\t; tab", "nop ; end"]))
    if kind == 11:
        return f"{label}: {draw(st.sampled_from(MNEMONICS))} {draw(EXPR)}"
    if kind == 12:
        return f"jmp {draw(st.sampled_from(['short ', 'near ', 'far ', '']))}{label}"
    return draw(GARBAGE)


SOURCES = st.lists(line(), min_size=1, max_size=40).map(lambda ls: "\n".join(ls) + "\n")


# Where lines end, for the line numbers of errors: LF, CR LF and a lone CR, as NASM counts
# them (`nop\rfoo` is two lines to both).
LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _has_code(text: str) -> bool:
    """Anything but blanks before a comment. Blanks are space and tab only: Python's
    strip() also drops control characters such as \x1e, which are content to NASM (the
    soak's first "empty line" was one)."""
    return bool(text.split(";", 1)[0].strip(" \t"))


def check_source(source: str, seconds: float = ASM_SECONDS) -> Finding | None:
    """None if vmsim's assembler handled `source` the documented way; else what went wrong."""
    from vmsim.asm import AsmError, GuestImage, assemble

    lines = LINE_BREAK.split(source)
    try:
        with memory_cap(), watchdog(seconds):
            image = assemble(source, FILENAME)
    except AsmError as e:
        where = f"{e.file}:{e.line}:{e.col}"
        if e.file != FILENAME or not 1 <= e.line <= len(lines) or e.col < 1:
            return Finding("AsmError position", f"{where}: {e.message}")
        if not str(e).startswith(f"{where}: ") or "\n" in str(e):
            return Finding("AsmError format", repr(str(e)))
        text = lines[e.line - 1]
        if e.col > len(text) + 1:
            return Finding("AsmError column past the line", f"{where}: {e.message}")
        if not _has_code(text):
            return Finding("AsmError names an empty line", f"{where}: {e.message}")
        return None
    except Hang:
        return Finding("hang", f"no result within {seconds:g} s of CPU time")
    except MemoryError as e:
        return Finding("MemoryError", f"more than 1 GiB ({_short_traceback(e)})")
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            raise
        return Finding(f"exception {type(e).__name__}", _short_traceback(e))
    if not isinstance(image, GuestImage) or not isinstance(image.data, bytes | bytearray):
        return Finding("bad result", repr(type(image)))
    return None
