"""Hostile sources found by probing the assembler: each gives NASM's bytes or one clear error.

Before these fixes: `\\U` escapes past U+10FFFF and surrogates ended in an OverflowError or
UnicodeEncodeError traceback; U+2028 and U+0085 split lines (and strings) that NASM keeps
whole; '٣' was read as the number 3; non-ASCII names were refused; a NUL was printed raw
in the message; `rep rep movsb` kept every prefix; chained %defines grew without bound.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.asm.oracle import nasm_bin
from vmsim.asm import AsmError, assemble

# Sources whose bytes must be NASM's.
LIKE_NASM = [
    "db `\\U7fffffff\\U80000000\\Uffffffff`",  # NASM's extended UTF-8, up to six bytes
    "db `\\ud800\\udfff`",  # surrogates, as NASM writes them
    "db `\\u07ff\\u0800\\uffff\\U00010000\\U001fffff\\U00200000\\U03ffffff\\U04000000`",
    "db 'a\u2028b', 0\nnop",  # NASM ends lines at LF, CR LF and CR only
    "db 'a\u0085b\u000cc'\nnop",
    "nop\rint3\rnop\r\nhlt",
    "é: jmp é\nnaïve equ 3\nmov eax, naïve",  # bytes >= 0x80 belong to names
    "rep rep movsb\nlock lock add [eax], eax\nes es nop",
    "times 2 times 3 nop",  # the last count wins
    "times 1 " * 3000 + "nop",  # no RecursionError
    "dd " + "+".join(["3"] * 5000),
]


@pytest.mark.parametrize("source", LIKE_NASM, ids=lambda s: s[:40])
def test_bytes_match_nasm(nasm: str, source: str) -> None:
    src = "bits 32\n" + source + "\n"
    assert assemble(src).data == nasm_bin(src)


# (source, line, col, words): NASM refuses these too, or vmsim refuses them on purpose.
ERRORS = [
    ("dd ٣", 1, 4, "symbol '٣' is not defined"),  # an Arabic-Indic digit is not a number
    ("dd ²", 1, 4, "symbol '²' is not defined"),
    ("nop\x00nop", 1, 4, "unexpected character '\\x00'"),
    ("\ufeffnop", 1, 1, "unexpected character '\\ufeff'"),
    ("rep repne movsb", 1, 5, "conflicting prefixes"),
    ("es cs nop", 1, 4, "conflicting prefixes"),
    ("cs mov eax, [es:ebx]", 1, 13, "conflicting segment overrides"),
    ("es mov eax, [es:ebx]", 1, 13, "conflicting segment overrides"),  # NASM: the same
    ("section .data align=3", 1, 21, "not a power of two"),
    ("section .data align=0", 1, 21, "not a power of two"),
    ("dq " + "9" * 5000, 1, 4, "number too long"),
    ("%define a 1\n" + "".join(f"%define a{i} a{i - 1 if i else ''}+a{i - 1 if i else ''}\n"
                                for i in range(30)) + "dd a29", 17, 17, "macro expansion too long"),
    ("dd " + "(" * 5000 + "1" + ")" * 5000, 1, 4 + 64, "nested too deeply"),
    ("mov eax, [" + "(" * 5000 + "eax" + ")" * 5000 + "]", 1, 11 + 64, "nested too deeply"),
]


@pytest.mark.parametrize(("source", "line", "col", "words"), ERRORS, ids=lambda s: str(s)[:30])
def test_one_clear_error(source: str, line: int, col: int, words: str) -> None:
    try:
        assemble("bits 32\n" + source + "\n", "h.asm")
    except AsmError as e:
        assert (e.line, e.col) == (line + 1, col), str(e)
        assert words in e.message
        assert "\n" not in str(e) and "\x00" not in str(e)
    else:
        assert not words, "assembled, but an error was expected"


_PIECES = st.sampled_from([
    "mov", "eax", "[", "]", "(", ")", ",", "+", "-", "*", "/", "//", "%", "<<", ">>", "~",
    "$", "$$", "times", "db", "dd", "dq", "resb", "align", "equ", "org", "section", ".bss",
    "jmp", "short", "near", "far", "call", "x", "x:", ".l", ".l:", "byte", "dword", "rep",
    "lock", "es", ":", "0", "1", "-1", "0x7fffffff", "99999999999999999999999", "1 << 63",
    "'ab'", "`\\xff\\U0010ffff`", "\"", "'", "`", ";", "%define", "\\", "\x00", "é", "\r",
    "\u2028", "incbin", "bits 32", "1/0", "1%0",
])


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(_PIECES, max_size=8).map(" ".join), min_size=1, max_size=6))
def test_token_soup_gives_bytes_or_one_asm_error(lines: list[str]) -> None:
    """A quick probe, fixed seed: whatever the pieces, no traceback and no hang."""
    try:
        img = assemble("bits 32\n" + "\n".join(lines) + "\n", "soup.asm")
    except AsmError as e:
        assert e.file == "soup.asm" and e.line >= 1 and e.col >= 1
    else:
        assert len(img.data) < 1 << 20
