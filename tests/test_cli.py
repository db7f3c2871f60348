"""`vmsim run` as a user sees it: output, exit status, one-line errors."""

from __future__ import annotations

import itertools
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
    assert p.returncode == 65  # EX_DATAERR: never the guest's success (1)
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


# -- outputs that fail, inputs that would be lost --------------------------------------------

def vmsim_raw(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vmsim", *args], capture_output=True,
                          cwd=ROOT, timeout=120, **kw)


def _one_line_bytes(p: subprocess.CompletedProcess) -> str:
    err = p.stderr.decode(errors="replace")
    assert "Traceback" not in err and "Exception ignored" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
def test_trace_to_a_full_disk_is_one_line_and_status_74() -> None:
    p = vmsim("run", "--trace", "/dev/full", str(HELLO))
    assert p.returncode == 74
    assert _one_line_error(p) == "vmsim: /dev/full: cannot write: No space left on device"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
def test_serial_output_to_a_full_disk_is_one_line_and_status_74() -> None:
    with open("/dev/full", "wb") as full:
        p = subprocess.run([sys.executable, "-m", "vmsim", "run", str(HELLO)], stdout=full,
                           stderr=subprocess.PIPE, cwd=ROOT, timeout=120)
    assert p.returncode == 74
    line = _one_line_bytes(p)
    assert line.startswith("vmsim: stdout") and "/dev/full" in line
    assert line.endswith("No space left on device")


def _limit_file_size(limit: int):
    def preexec() -> None:
        import resource

        # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG.
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


def test_a_trace_cut_short_keeps_what_was_written(tmp_path: Path) -> None:
    """A file that cannot grow (here RLIMIT_FSIZE: "File too large") ends the run with
    one line naming it; the lines written before are kept and each is whole JSON."""
    trace = tmp_path / "t.jsonl"
    p = vmsim_raw("run", "--trace", str(trace), "--trace-level", "insn", str(HELLO),
                  preexec_fn=_limit_file_size(64 << 10))
    assert p.returncode == 74
    assert _one_line_bytes(p) == f"vmsim: {trace}: cannot write: File too large"
    lines = trace.read_bytes().split(b"\n")
    assert len(lines) > 100 and trace.stat().st_size <= 64 << 10
    import json

    for line in lines[:-1]:  # the last one may be cut where the limit fell
        json.loads(line)


def _chatty_guest(tmp_path: Path, nbytes: int, status: int) -> Path:
    src = tmp_path / "chatty.asm"
    src.write_text(f"bits 32\norg 0x100000\n mov ecx, {nbytes}\n mov dx, 0x3f8\n mov al, 'x'\n"
                   f"again: out dx, al\n loop again\n mov dx, 0x501\n mov al, {status}\n"
                   " out dx, al\n")
    return src


def test_broken_pipe_keeps_the_guest_running_and_its_status(tmp_path: Path) -> None:
    # `vmsim run chatty.asm | head -c 3`: more output than a pipe holds, so the writes
    # after the reader has gone fail with EPIPE.
    src = _chatty_guest(tmp_path, 200_000, 3)
    with subprocess.Popen([sys.executable, "-m", "vmsim", "run", "--backend", "bare", str(src)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT) as p:
        assert p.stdout.read(3) == b"xxx"
        p.stdout.close()
        err = p.stderr.read().decode()
        assert p.wait(timeout=120) == (3 << 1) | 1  # the guest's own status
    assert err == ""  # no traceback, no "Exception ignored" at exit


@pytest.mark.parametrize("option", ["--trace", "--stats-json"])
@pytest.mark.parametrize("via", ["same path", "symlink", "other path"])
def test_run_will_not_overwrite_its_guest(tmp_path: Path, option: str, via: str) -> None:
    guest = tmp_path / "g.asm"
    text = HELLO.read_text()
    guest.write_text(text)
    target = {"same path": guest, "symlink": tmp_path / "link.asm",
              "other path": tmp_path / "." / "sub" / ".." / "g.asm"}[via]
    (tmp_path / "sub").mkdir()
    if via == "symlink":
        target.symlink_to(guest)
    p = vmsim("run", option, str(target), str(guest))
    assert p.returncode == 2
    assert "will not overwrite the guest file" in _one_line_error(p)
    assert guest.read_text() == text and p.stdout == ""


def test_run_will_not_write_trace_and_stats_into_one_file(tmp_path: Path) -> None:
    out = tmp_path / "both.json"
    p = vmsim("run", "--trace", str(out), "--stats-json", str(out), str(HELLO))
    assert p.returncode == 2
    assert "the same file" in _one_line_error(p)


def test_run_will_not_trace_into_the_file_stdout_goes_to(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    with out.open("wb") as f:  # `vmsim run hello.asm --trace out.txt > out.txt`
        p = subprocess.run([sys.executable, "-m", "vmsim", "run", "--trace", str(out), str(HELLO)],
                           stdout=f, stderr=subprocess.PIPE, cwd=ROOT, timeout=120)
    assert p.returncode == 2
    assert _one_line_bytes(p) == f"vmsim: --trace {out}: the same file as stdout"


@pytest.mark.parametrize("case", ["-o src", "-l src", "-o symlink", "default output"])
def test_asm_will_not_overwrite_its_source(tmp_path: Path, case: str) -> None:
    src = tmp_path / ("foo.bin" if case == "default output" else "foo.asm")
    src.write_text("bits 32\nnop\n")
    link = tmp_path / "link.asm"
    link.symlink_to(src)
    extra = {"-o src": ["-o", str(src)], "-l src": ["-l", str(src)],
             "-o symlink": ["-o", str(link)], "default output": []}[case]
    p = vmsim("asm", str(src), *extra)
    assert p.returncode == 2
    line = _one_line_error(p)
    assert line.startswith(f"{src}:1:1: ") and "will not overwrite the source file" in line
    assert src.read_text() == "bits 32\nnop\n"


def test_asm_output_to_a_full_disk(tmp_path: Path) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    src = tmp_path / "ok.asm"
    src.write_text("nop\n")
    p = vmsim("asm", str(src), "-o", "/dev/full")
    assert p.returncode == 74
    assert _one_line_error(p) == "/dev/full:1:1: cannot write output: No space left on device"


# -- ending a run early ---------------------------------------------------------------------

@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_ends_the_run_with_the_trace_written(tmp_path: Path, sig: str) -> None:
    import json
    import signal

    src = tmp_path / "ready.asm"
    # Say "ready", then compute forever (no exits: instructions pile up in the trace).
    src.write_text("bits 32\norg 0x100000\n mov dx, 0x3f8\n mov al, 'r'\n out dx, al\n"
                   " mov al, 10\n out dx, al\nspin: inc eax\n jmp spin\n")
    trace = tmp_path / "t.jsonl"
    stats = tmp_path / "stats.json"
    with subprocess.Popen([sys.executable, "-m", "vmsim", "run", "--trace", str(trace),
                           "--trace-level", "insn", "--stats-json", str(stats), str(src)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT) as p:
        try:
            assert p.stdout.readline() == b"r\n"  # the guest runs: its trace is being written
            p.send_signal(getattr(signal, sig))
            status = p.wait(timeout=60)
        finally:
            p.kill()
        err = p.stderr.read().decode()
    assert status == 128 + getattr(signal, sig)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"vmsim: {sig}: stopped after ")
    lines = [json.loads(line) for line in trace.read_text().splitlines()]  # all whole
    runs = [ev for ev in lines if ev["kind"] == "insn_run"]
    assert runs and runs[0]["n"] == 1
    for a, b in itertools.pairwise(runs):
        assert b["n"] == a["n"] + a["count"]  # nothing lost or written twice
    # What the statistics counted up to the signal is written too (as perf stat does).
    assert json.loads(stats.read_text())["userspace_exits"]["KVM_EXIT_IO"] >= 1


def test_closed_stdout(tmp_path: Path) -> None:
    """`vmsim run g.asm >&-`: nobody reads the output; the guest runs to its own end.
    `vmsim asm --listing x.asm >&-`: the listing cannot go anywhere: one line, status 74."""
    import os

    p = vmsim_raw("run", str(HELLO), stdout=None, preexec_fn=lambda: os.close(1))
    assert (p.returncode, p.stderr) == (1, b"")
    src = tmp_path / "ok.asm"
    src.write_text("nop\n")
    p = vmsim_raw("asm", "--listing", str(src), stdout=None, preexec_fn=lambda: os.close(1))
    assert p.returncode == 74
    assert _one_line_bytes(p) == "<stdout>:1:1: cannot write output: stdout is closed"


@pytest.mark.parametrize("args", [["--smp", "2"], ["--irqchip", "userspace"],
                                  ["--irqchip", "kernel"], ["--coalesced-mmio"],
                                  ["--no-coalesced-mmio"]])
def test_bare_refuses_several_vcpus_and_an_irqchip(args: list[str]) -> None:
    # The bare backend is one CPU with no hypervisor: a VM's options are refused in one
    # line before anything runs, not silently ignored.
    p = vmsim("run", "--backend", "bare", *args, str(HELLO))
    assert p.returncode == 2 and p.stdout == ""
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and "--backend sim or kvm" in lines[0]


def test_smp_out_of_range_is_a_usage_error() -> None:
    for n in ("0", "9", "two"):
        p = vmsim("run", "--smp", n, str(HELLO))
        assert p.returncode == 2 and "--smp" in p.stderr and "Traceback" not in p.stderr
