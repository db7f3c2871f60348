"""(d) Bad input through the `vmsim` command, in a subprocess: never a traceback, one line
on stderr, and the exit status the vmsim.cli docstring documents."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.stack.stackrun import run_cli
from vmsim.cli import EXIT_ASM, EXIT_BAD_INPUT, EXIT_LIMIT, EXIT_OK, EXIT_UNSUPPORTED


def _run(*args: str) -> tuple[int, str]:
    p = run_cli(["run", *args], timeout=60)
    err = p.stderr.decode(errors="replace")
    assert "Traceback" not in err, err
    return p.returncode, err


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    return lines[0]


def test_missing_file(tmp_path: Path) -> None:
    status, err = _run(str(tmp_path / "nope.bin"))
    assert status == EXIT_BAD_INPUT
    assert "nope.bin" in _one_line(err) and "No such file" in err


def test_a_directory(tmp_path: Path) -> None:
    status, err = _run(str(tmp_path))
    assert status == EXIT_BAD_INPUT
    assert str(tmp_path) in _one_line(err)


def test_binary_larger_than_ram(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(2 << 20))
    status, err = _run("--memory", "2", str(big))
    assert status == EXIT_BAD_INPUT
    assert "big.bin" in _one_line(err) and "fit" in err


def test_empty_file(tmp_path: Path) -> None:
    # An empty guest leaves zeros at 0x100000 (`add [eax], al` forever): it runs to the
    # instruction limit. (A one-line refusal would be kinder; see the stack tests' notes.)
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    status, err = _run("--max-instructions", "20000", str(empty))
    assert status in (EXIT_BAD_INPUT, EXIT_LIMIT)
    _one_line(err)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_garbage_bytes(seed: int, tmp_path: Path) -> None:
    rng = random.Random(seed)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(rng.randrange(256) for _ in range(4096)))
    status, err = _run("--max-instructions", "200000", str(junk))
    # An architectural outcome (halt, triple fault, a debug exit, the limit) or a clear
    # "not modelled" stop; whatever it is, one line at most.
    assert status in (EXIT_OK, EXIT_UNSUPPORTED, EXIT_LIMIT) or status & 1, (status, err)
    if err.strip():
        _one_line(err)


def test_garbage_assembly_source(tmp_path: Path) -> None:
    src = tmp_path / "bad.asm"
    src.write_text("bits 32\n  mov eax, [ebx+\n")
    status, err = _run(str(src))
    assert status == EXIT_ASM
    assert _one_line(err).startswith(f"{src}:2:")


def test_not_utf8_source(tmp_path: Path) -> None:
    src = tmp_path / "bad.asm"
    src.write_bytes(b"\xff\xfe mov eax, 1\n")
    status, err = _run(str(src))
    assert status == EXIT_BAD_INPUT
    assert "bad.asm" in _one_line(err)
