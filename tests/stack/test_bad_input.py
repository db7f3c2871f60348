"""(d) Bad input through the `vmsim` command, in a subprocess: never a traceback, one line
on stderr, and the exit status the vmsim.cli docstring documents."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.stack.stackrun import ROOT, run_cli
from vmsim.cli import EXIT_ASM, EXIT_BAD_INPUT, EXIT_IO, EXIT_LIMIT, EXIT_OK, EXIT_UNSUPPORTED

HELLO = ROOT / "sample_guests" / "hello.asm"


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


# -- inputs that are not files, or never end (read without limit before) ----------------------

def _cmd(*args: str, timeout: float = 60) -> tuple[int, str]:
    p = run_cli(list(args), timeout=timeout)
    err = p.stderr.decode(errors="replace")
    assert "Traceback" not in err, err
    return p.returncode, err


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe.asm"
    os.mkfifo(path)  # nobody ever writes: reading it would block forever
    return path


@pytest.mark.parametrize("what", ["/dev/zero", "fifo", "directory"])
def test_guest_that_is_not_a_regular_file(what: str, fifo: Path, tmp_path: Path) -> None:
    path = {"/dev/zero": "/dev/zero", "fifo": str(fifo), "directory": str(tmp_path)}[what]
    status, err = _cmd("run", path, timeout=30)
    assert status == EXIT_BAD_INPUT
    line = _one_line(err)
    assert line.startswith(f"vmsim: {path}: ") and "not a regular file" in line


@pytest.mark.parametrize("what", ["/dev/zero", "fifo"])
def test_asm_source_that_is_not_a_regular_file(what: str, fifo: Path, tmp_path: Path) -> None:
    path = "/dev/zero" if what == "/dev/zero" else str(fifo)
    status, err = _cmd("asm", path, "-o", str(tmp_path / "out.bin"), timeout=30)
    assert status == EXIT_BAD_INPUT  # as vmsim run's unreadable guest (65: does not assemble)
    assert _one_line(err).startswith(f"{path}:1:1: cannot read source file: ")
    assert "not a regular file" in err


@pytest.mark.parametrize("what", ["/dev/zero", "fifo", "too large"])
def test_serial_input_file_is_bounded(what: str, fifo: Path, tmp_path: Path) -> None:
    from vmsim.files import SERIAL_IN_LIMIT

    big = tmp_path / "big.txt"
    with big.open("wb") as f:
        f.truncate(SERIAL_IN_LIMIT + 1)  # sparse: nothing is read to refuse it
    path = {"/dev/zero": "/dev/zero", "fifo": str(fifo), "too large": str(big)}[what]
    status, err = _cmd("run", "--serial-in", f"@{path}", str(HELLO), timeout=30)
    assert status == EXIT_BAD_INPUT
    assert _one_line(err).startswith(f"vmsim: {path}: ")


def test_sources_and_binaries_are_refused_by_size_before_reading(tmp_path: Path) -> None:
    from vmsim.files import SOURCE_LIMIT

    src = tmp_path / "huge.asm"
    binary = tmp_path / "huge.bin"
    for path, size in ((src, SOURCE_LIMIT + 1), (binary, 8 << 30)):
        with path.open("wb") as f:
            f.truncate(size)  # sparse files: a read would take the size in memory
    status, err = _cmd("run", str(src))
    assert status == EXIT_BAD_INPUT and "source file limit" in _one_line(err)
    status, err = _cmd("asm", str(src))
    assert status == EXIT_BAD_INPUT and "source file limit" in _one_line(err)
    status, err = _cmd("run", "--memory", "4", str(binary))
    assert status == EXIT_BAD_INPUT
    assert "huge.bin" in _one_line(err) and "fits in RAM" in err


# -- hostile options: one line, status 2 (vmsim asm: 74 for an output it cannot write) ----------

HOSTILE_RUN = [
    ["--memory", "-1"], ["--memory", "0"], ["--memory", "1"], ["--memory", "99999999999"],
    ["--memory", "lots"], ["--max-instructions", "0"], ["--max-instructions", "-5"],
    ["--max-instructions", "1e9"], ["--backend", "qemu"], ["--paging", "nested"],
    ["--trace-level", "everything"], ["--serial-in", "\\x4"], ["--serial-in", "\\u1234"],
    ["--serial-in", "@/nonexistent/file"], ["--trace", "/nonexistent/dir/t.jsonl"],
    ["--stats-json", "/nonexistent/dir/s.json"], ["--trace", "/"], ["--no-such-option"],
]


@pytest.mark.parametrize("args", HOSTILE_RUN, ids=[" ".join(a) for a in HOSTILE_RUN])
def test_hostile_run_options(args: list[str]) -> None:
    status, err = _cmd("run", *args, str(HELLO))
    assert status == EXIT_BAD_INPUT
    _one_line(err)


def test_huge_instruction_budget_is_no_budget() -> None:
    status, err = _cmd("run", "--max-instructions", str(10**30), str(HELLO))
    assert status == 1 and err == ""  # hello's own debug-exit status


HOSTILE_ASM = [[], ["-o"], ["--no-such-option", "x.asm"], ["/nonexistent/x.asm"], ["/"],
               [str(HELLO), "-o", "/nonexistent/dir/x.bin"], [str(HELLO), "-o", "/"]]


@pytest.mark.parametrize("args", HOSTILE_ASM, ids=[" ".join(a) or "none" for a in HOSTILE_ASM])
def test_hostile_asm_arguments(args: list[str]) -> None:
    status, err = _cmd("asm", *args)
    assert status in (EXIT_BAD_INPUT, EXIT_IO)  # never 65: nothing here fails to assemble
    _one_line(err)


def test_asm_not_utf8_names_line_and_column(tmp_path: Path) -> None:
    src = tmp_path / "bad.asm"
    src.write_bytes(b"bits 32\n nop ; caf\xe9\n")
    status, err = _cmd("asm", str(src), "-o", str(tmp_path / "bad.bin"))
    assert status == EXIT_BAD_INPUT  # as vmsim run's: the source cannot be read as text
    assert _one_line(err).startswith(f"{src}:2:11: cannot read source file: not UTF-8")
