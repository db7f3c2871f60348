"""Exit statuses (issue 13): the assembler's failure is 65, never a guest's success (1);
every status vmsim gives is listed by `vmsim run --help` and the README's table, from one
table (vmsim.cli.EXIT_STATUSES)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import vmsim.cli as cli
from vmsim.cli import EXIT_ASM, EXIT_BAD_INPUT, EXIT_BREAK, EXIT_IO, EXIT_LIMIT, EXIT_OK, main

ROOT = Path(__file__).resolve().parents[1]
HELLO = ROOT / "sample_guests" / "hello.asm"
README = (ROOT / "README.md").read_text()


def _guest(tmp_path: Path, body: str, name: str = "g.asm") -> str:
    path = tmp_path / name
    path.write_text(f"bits 32\norg 0x100000\n{body}\n")
    return str(path)


def _constants() -> dict[str, int]:
    return {k: v for k, v in vars(cli).items() if k.startswith("EXIT_") and isinstance(v, int)}


def test_the_constants_are_distinct_and_the_assembler_is_not_a_guest_success() -> None:
    values = list(_constants().values())
    assert len(values) == len(set(values))
    assert EXIT_ASM == 65 and EXIT_ASM != (0 << 1) | 1
    # Every status but EXIT_ASM, EXIT_UNAVAILABLE (vmsim gui only) and 143 is even: no
    # guest (whose status is always odd) can give it.
    odd = {k for k, v in _constants().items() if v & 1}
    assert odd == {"EXIT_ASM", "EXIT_UNAVAILABLE"}


def _table_statuses(rows) -> list[str]:
    return [status for status, _ in rows]


def test_run_help_lists_every_status() -> None:
    run = next(a for a in cli.build_parser()._subparsers._group_actions[0].choices.items()
               if a[0] == "run")[1]
    text = run.format_help()
    listed = re.findall(r"^  (\S+)\s{2,}", text.split("exit status:")[1], re.MULTILINE)
    assert listed == _table_statuses(cli.EXIT_STATUSES)
    for name, value in _constants().items():
        if name != "EXIT_SIGNAL":
            assert str(value) in listed, name
    assert {"130", "143"} <= set(listed)  # 128 + SIGINT, SIGTERM


def test_readme_table_is_the_same_table() -> None:
    section = README.split("## Exit statuses", 1)[1].split("\n## ", 1)[0]
    cells = [re.split(r"(?<!\\)\|", line)[1].strip() for line in section.splitlines()
             if line.startswith("| ")]
    statuses = [c.strip("`").replace("\\|", "|") for c in cells[1:]]  # after the header
    assert statuses == _table_statuses(cli.EXIT_STATUSES)
    assert "vmsim run --help" in section


@pytest.mark.parametrize(("case", "status"), [
    ("guest writes 0", 1), ("guest writes 3", 7), ("halts", EXIT_OK), ("missing", EXIT_BAD_INPUT),
    ("break", EXIT_BREAK), ("does not assemble", EXIT_ASM), ("limit", EXIT_LIMIT),
    ("trace to a full disk", EXIT_IO)])
def test_vmsim_run_statuses(case: str, status: int, tmp_path: Path, capsys) -> None:
    if case == "trace to a full disk" and not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    exit_with = " mov dx, 0x501\n mov al, {}\n out dx, al\n hlt"
    args = {
        "guest writes 0": lambda: [_guest(tmp_path, exit_with.format(0))],
        "guest writes 3": lambda: [_guest(tmp_path, exit_with.format(3))],
        "halts": lambda: [_guest(tmp_path, " cli\n hlt")],
        "missing": lambda: [str(tmp_path / "nope.asm")],
        "break": lambda: ["--break", "exit:IO_INSTRUCTION", _guest(tmp_path, exit_with.format(0))],
        "does not assemble": lambda: [_guest(tmp_path, " mvo eax, 1")],
        "limit": lambda: ["--max-instructions", "50", _guest(tmp_path, "spin: jmp spin")],
        "trace to a full disk": lambda: ["--trace", "/dev/full", str(HELLO)],
    }[case]()
    assert main(["run", *args]) == status
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") <= 1, err
    if case == "does not assemble":
        assert re.match(r".*g\.asm:3:2: ", err)


@pytest.mark.parametrize(("case", "status"), [
    ("ok", 0), ("does not assemble", EXIT_ASM), ("missing", EXIT_BAD_INPUT),
    ("over its source", EXIT_BAD_INPUT), ("unwritable", EXIT_IO)])
def test_vmsim_asm_statuses(case: str, status: int, tmp_path: Path, capsys) -> None:
    good = _guest(tmp_path, " nop", "good.asm")
    args = {"ok": [good, "-o", str(tmp_path / "g.bin")],
            "does not assemble": [_guest(tmp_path, " mvo eax, 1", "bad.asm")],
            "missing": [str(tmp_path / "nope.asm")],
            "over its source": [good, "-o", good],
            "unwritable": [good, "-o", str(tmp_path / "no" / "dir" / "g.bin")]}[case]
    assert main(["asm", *args]) == status
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == (0 if status == 0 else 1), err


def test_asm_help_lists_its_statuses() -> None:
    from vmsim.asm.cli import ASM_STATUSES

    asm = cli.build_parser()._subparsers._group_actions[0].choices["asm"]
    listed = re.findall(r"^  (\d+)\s{2,}", asm.format_help().split("exit status:")[1], re.MULTILINE)
    assert listed == [s for s, _ in ASM_STATUSES] == ["0", "2", "65", "74"]


def test_gui_screenshot_of_a_guest_that_does_not_assemble(tmp_path: Path) -> None:
    """`vmsim gui broken.asm --screenshot`: the picture shows the error in the editor, the
    status is the assembler's (65), its one line on stderr."""
    pytest.importorskip("PySide6.QtWidgets")
    bad = _guest(tmp_path, " mvo eax, 1", "bad.asm")
    out = tmp_path / "shot.png"
    p = subprocess.run([sys.executable, "-m", "vmsim", "gui", bad, "--screenshot", str(out),
                        "--size", "1000x700"], capture_output=True, text=True, timeout=120,
                       cwd=ROOT, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert p.returncode == EXIT_ASM, p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith(f"{bad}:3:2: ")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
