"""`vmsim run` as a user sees it: output, exit status, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HELLO = ROOT / "sample_guests" / "hello.asm"


def vmsim(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vmsim", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


def test_run_hello_prints_and_exits_through_debug_exit() -> None:
    p = vmsim("run", str(HELLO))
    assert p.stdout == "Hello from a vmsim guest!\n"
    assert p.returncode == 1  # the guest writes 0 to isa-debug-exit: (0 << 1) | 1
    assert p.stderr == ""


def test_run_flat_binary_same_as_source(nasm, tmp_path: Path) -> None:
    binary = tmp_path / "hello.bin"
    binary.write_bytes(nasm(HELLO.read_text()))
    p = vmsim("run", str(binary))
    assert (p.stdout, p.returncode) == ("Hello from a vmsim guest!\n", 1)


def _one_line_error(p: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    return lines[0]


def test_missing_guest_is_a_one_line_error(tmp_path: Path) -> None:
    p = vmsim("run", str(tmp_path / "nope.asm"))
    assert p.returncode == 2
    assert "nope.asm" in _one_line_error(p)


def test_bad_source_names_file_line_and_column(tmp_path: Path) -> None:
    src = tmp_path / "bad.asm"
    src.write_text("bits 32\n  mov eax, 1\n  frobnicate eax\n")
    p = vmsim("run", str(src))
    assert p.returncode == 1
    line = _one_line_error(p)
    assert f"{src}:3:3:" in line


def test_triple_fault_is_reported(tmp_path: Path) -> None:
    # ud2 with an empty IDT: #UD cannot be delivered (#GP), nor can that (#DF): shutdown.
    src = tmp_path / "tf.asm"
    src.write_text("bits 32\norg 0x100000\n ud2\n")
    p = vmsim("run", str(src))
    assert p.returncode == 0
    assert "triple fault" in _one_line_error(p)


def test_instruction_budget(tmp_path: Path) -> None:
    src = tmp_path / "loop.asm"
    src.write_text("bits 32\norg 0x100000\nspin: jmp spin\n")
    p = vmsim("run", "--max-instructions", "1000", str(src))
    assert p.returncode == 124
    assert "1000 instructions" in _one_line_error(p)


@pytest.mark.parametrize("backend", ["sim", "bare"])
def test_halt_reports_where_on_stderr(tmp_path: Path, backend: str) -> None:
    src = tmp_path / "h.asm"
    src.write_text("bits 32\norg 0x100000\n nop\n hlt\n")
    p = vmsim("run", "--backend", backend, str(src))
    assert (p.returncode, p.stdout) == (0, "")
    # HLT is at 0x100001; a halted CPU's EIP is past it (HLT has retired).
    assert _one_line_error(p) == "vmsim: the guest halted at eip 0x00100002"
