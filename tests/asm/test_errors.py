"""Every kind of mistake: one AsmError with the right line and column, via API and CLI."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from vmsim.asm import AsmError, assemble
from vmsim.asm.cli import register

# (source, line, col, words expected in the message)
CASES = [
    ("foo eax, 1", 1, 1, "unknown mnemonic 'foo'"),
    ("nop\n  clii", 2, 3, "unknown mnemonic 'clii'"),
    ("mov [eax], [ebx]", 1, 12, "two memory operands"),
    ("mov al, bx", 1, 9, "mismatch in operand sizes"),
    ("mov cr0, ax", 1, 1, "invalid combination of opcode and operands"),
    ("lea eax, ebx", 1, 1, "invalid combination"),
    ("inc [eax]", 1, 5, "operation size not specified"),
    ("push [eax]", 1, 6, "operation size not specified"),
    ("movzx eax, [eax]", 1, 12, "operation size not specified"),
    ("mov dword [eax], 1, 2", 1, 1, "takes 2 operand(s), not 3"),
    ("jmp undefined_label", 1, 5, "symbol 'undefined_label' is not defined"),
    ("x:\nnop\nx:", 3, 1, "label 'x' is already defined"),
    ("a:\n.l:\n.l:", 3, 1, "label 'a.l' is already defined"),
    ("eax: nop", 1, 1, "register"),
    ("nop: nop", 1, 1, "instruction"),
    ("mov al, 300", 1, 9, "does not fit in a byte"),
    ("mov ax, -70000", 1, 9, "does not fit in a word"),
    ("mov eax, 0x1ffffffff", 1, 10, "does not fit in a dword"),
    ("db 1, 300", 1, 7, "does not fit in a byte"),
    ("dw 70000", 1, 4, "does not fit in a word"),
    ("int 256", 1, 5, "does not fit in a byte"),
    ("x: jmp short y\ntimes 200 nop\ny:", 1, 8, "short jump is out of range"),
    ("l: times 200 nop\nloop l", 2, 6, "short jump is out of range"),
    ("bits 16", 1, 6, "only 32-bit code"),
    ("foo bar", 1, 1, "unknown mnemonic"),
    ("  section", 1, 10, "section name expected"),
    ("db 'abc", 1, 4, "unterminated string"),
    ("db `abc\\`", 1, 4, "unterminated string"),
    ("mov eax, (1+2", 1, 14, "expected ')'"),
    ("mov eax, 1 +", 1, 13, "expression expected"),
    ("mov eax, ebx ebx", 1, 14, "unexpected 'ebx'"),
    ("mov eax, 12xyz", 1, 10, "invalid number"),
    ("mov eax, 1/0", 1, 11, "division by zero"),
    ("dd 5 %% (2-2)", 1, 6, "division by zero"),
    ("mov eax, lbl & 0xff\nlbl:", 1, 14, "scalar"),
    ("mov eax, $$ * 2", 1, 10, "invalid use of an address"),
    ("times -1 db 0", 1, 1, "negative"),
    ("align 3", 1, 1, "power of two"),
    ("mov eax, [esp*2]", 1, 10, "invalid 32-bit effective address"),
    ("mov eax, [eax+ebx+ecx]", 1, 10, "too many registers"),
    ("mov eax, [eax*2+ebx*2]", 1, 10, "two index registers"),
    ("mov eax, [ax]", 1, 10, "16-bit addressing"),
    ("mov eax, [ebx", 1, 10, "missing ']'"),
    ("%macro m 1", 1, 1, "not supported"),
    ("equ 5", 1, 1, "EQU needs a label"),
    ("rep", 1, 1, "needs an instruction"),
    ("org 0x100\nnop\norg 0x200", 3, 1, "ORG must come before"),
    ("mov eax, 'abcdefghi'", 1, 10, "character constant too long"),
    ("mov eax, 1 # 2", 1, 12, "unexpected character '#'"),
    ("section .bss\ndb 1", 2, 1, "can only reserve space"),
]


@pytest.mark.parametrize(("source", "line", "col", "words"), CASES, ids=[c[0] for c in CASES])
def test_error_position_and_message(source: str, line: int, col: int, words: str) -> None:
    with pytest.raises(AsmError) as info:
        assemble("bits 32\n" + source + "\n", "bad.asm")
    e = info.value
    assert (e.file, e.line, e.col) == ("bad.asm", line + 1, col), str(e)
    assert words in e.message
    assert str(e) == f"bad.asm:{line + 1}:{col}: {e.message}"


def test_forward_equ_chain_to_undefined_symbol() -> None:
    with pytest.raises(AsmError) as info:
        assemble("mov eax, [a]\na equ b\nb equ c\n", "t.asm")
    assert info.value.line == 1 and "not defined" in info.value.message


def test_never_hangs_on_oscillating_sizes() -> None:
    # Pathological but legal: converges or reports, within the pass limit.
    src = "".join(f"jmp l{i}\n" for i in range(300)) + "".join(f"l{i}: nop\n" for i in range(300))
    assert len(assemble(src).data) > 0


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vmsim")
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.mark.parametrize(
    ("source", "line", "col", "words"), CASES[:12], ids=[c[0] for c in CASES[:12]]
)
def test_cli_reports_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], source: str, line: int, col: int, words: str
) -> None:
    src = tmp_path / "bad.asm"
    src.write_text(source + "\n")
    status = _cli(["asm", str(src), "-o", str(tmp_path / "bad.bin")])
    err = capsys.readouterr().err
    assert status == 65
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"{src}:{line}:{col}: ") and words in err
    assert not (tmp_path / "bad.bin").exists()


def test_cli_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = _cli(["asm", str(tmp_path / "nope.asm")])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "cannot read" in err


def test_cli_unwritable_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "ok.asm"
    src.write_text("nop\n")
    status = _cli(["asm", str(src), "-o", str(tmp_path / "no" / "dir" / "x.bin")])
    err = capsys.readouterr().err
    assert status == 74 and err.count("\n") == 1 and "cannot write" in err
