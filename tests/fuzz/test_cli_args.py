"""Hostile command lines for `vmsim run`, `vmsim asm` and `vmsim stats`, in a subprocess: random option
values, missing files, directories, /dev/null, /dev/zero, /dev/full, FIFOs, an output that
is the input. Every one ends (hard timeout) with a documented exit status, no traceback,
and an error as one line on stderr (argparse's usage block counts as one)."""

from __future__ import annotations

import os
import random
import shutil
from itertools import pairwise
from pathlib import Path

from tests.fuzz.budget import Budget
from tests.fuzz.harness import (
    ASM_STATUSES,
    KVM_PRESENT,
    RUN_STATUSES,
    SAMPLES,
    Finding,
    check_cli,
    run_cli,
)
from tests.fuzz.known import Tally

CLI_TIMEOUT = 90.0  # wall seconds; a spinning child meets its CPU limit first
BUDGET_INSTRUCTIONS = "20000"  # given first: a hostile --max-instructions later overrides it


class Files:
    """The tmp directory's cast of hostile and ordinary paths."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        (tmp / "dir").mkdir()
        self.fifo = tmp / "fifo"
        os.mkfifo(self.fifo)
        shutil.copy(SAMPLES / "hello.asm", tmp / "hello.asm")
        (tmp / "empty.bin").write_bytes(b"")
        (tmp / "hlt.bin").write_bytes(b"\xf4")
        (tmp / "latin1.asm").write_bytes(b"\xff\xfe mov eax, 1\n")
        (tmp / "bad.asm").write_text("bits 32\n mov eax, [ebx+\n")
        (tmp / "noperm.bin").write_bytes(b"\xf4")
        os.chmod(tmp / "noperm.bin", 0)  # (root reads it anyway; fine either way)
        (tmp / "link").symlink_to(tmp / "nowhere")

    def inputs(self) -> list[str]:
        t = self.tmp
        return [str(t / "hello.asm"), str(t / "hlt.bin"), str(t / "empty.bin"),
                str(t / "missing.bin"), str(t / "dir"), "/dev/null", "/dev/zero",
                str(self.fifo), str(t / "latin1.asm"), str(t / "bad.asm"),
                str(t / "noperm.bin"), str(t / "link"), "", "-", "--", str(t / "dir") + "/"]

    def outputs(self, rng: random.Random, i: int) -> str:
        t = self.tmp
        return rng.choice([str(t / f"out{i}"), str(t / "dir"), "/dev/null", "/dev/full",
                           str(t / "missing" / "x"), str(t / "hello.asm"), str(t / "hlt.bin"),
                           ""])


NUMBERS = ["0", "1", "-1", "2", "3072", "3073", "16", "0x10", "1e3", "abc", "", "99999999999999999999",
           str(1 << 64), "-0", "0b101", " 7", "1_000"]


def run_args(rng: random.Random, f: Files, i: int) -> list[str]:
    args = ["run", "--max-instructions", BUDGET_INSTRUCTIONS]
    backends = ["sim", "bare", "qemu", "", "SIM"] + (["kvm"] if KVM_PRESENT else [])
    options = [
        lambda: ["--memory", rng.choice(NUMBERS)],
        lambda: ["--max-instructions", rng.choice(NUMBERS)],
        lambda: ["--backend", rng.choice(backends)],
        lambda: ["--paging", rng.choice(["ept", "shadow", "npt", ""])],
        lambda: ["--trace", f.outputs(rng, i)],
        lambda: ["--trace-level", rng.choice(["vm", "insn", "all", "none", ""])],
        lambda: ["--trace-format", rng.choice(["jsonl", "text", "perfetto", "json", ""])],
        lambda: ["--stats"],
        lambda: ["--stats-json", f.outputs(rng, i)],
        lambda: ["--serial-in", rng.choice(["abc", "\\x41\\n", "\\x4", "\\u12", "\\", "@",
                                            "@/dev/null", "@/dev/zero", f"@{f.fifo}",
                                            f"@{f.tmp / 'missing'}", f"@{f.tmp / 'dir'}",
                                            "é"])],
        lambda: [rng.choice(["--bogus", "-x", "--memory=", "--max-instructions=5", "--version"])],
    ]
    for _ in range(rng.randrange(0, 4)):
        args += rng.choice(options)()
    guest = rng.choice(f.inputs())
    if rng.random() < 0.1:
        return args  # no guest at all
    return [*args, guest]


def asm_args(rng: random.Random, f: Files, i: int) -> list[str]:
    args = ["asm", rng.choice(f.inputs())]
    for _ in range(rng.randrange(0, 3)):
        args += rng.choice([["-o", f.outputs(rng, i)], ["-l", f.outputs(rng, i)], ["--listing"],
                            ["--bogus"], ["-o"]])
    return args


def stats_args(rng: random.Random, f: Files, i: int) -> list[str]:
    """`vmsim stats` of a trace (one a run above may have written), or of anything else."""
    args = ["stats", rng.choice([*f.inputs(), f.outputs(rng, i), str(f.tmp / f"out{i - 1}")])]
    if rng.random() < 0.2:
        args.insert(rng.randrange(1, 3), rng.choice(["--bogus", "-x", "--stats"]))
    return args


def inputs_of(args: list[str]) -> set[str]:
    """What the command reads: the guest or the source (the last positional argument, as
    argparse takes it), and an --serial-in @FILE."""
    found = set()
    if args[0] in ("asm", "stats"):
        found.add(args[1])
    elif not args[-1].startswith("-") and args[-2] not in VALUE_OPTIONS:
        found.add(args[-1])
    found |= {v[1:] for o, v in pairwise(args) if o == "--serial-in" and v[:1] == "@"}
    return found


VALUE_OPTIONS = {"--memory", "--max-instructions", "--backend", "--paging", "--trace",
                 "--trace-level", "--trace-format", "--stats-json", "--serial-in", "-o", "-l"}
STATS_STATUSES = frozenset({0, 2})


def test_hostile_command_lines(tmp_path: Path, findings_dir: Path) -> None:
    budget = Budget.from_env(ci_count=16)
    rng = budget.rng("cli-args")
    tally = Tally("cli")
    files = Files(tmp_path)
    for i in budget.inputs():
        pick = rng.random()
        args = (run_args(rng, files, i) if pick < 0.6 else
                asm_args(rng, files, i) if pick < 0.85 else stats_args(rng, files, i))
        res = run_cli(args, CLI_TIMEOUT, cwd=tmp_path)
        tally.inputs += 1
        statuses = {"run": RUN_STATUSES, "asm": ASM_STATUSES, "stats": STATS_STATUSES}[args[0]]
        # --stats prints its report; --listing prints to stdout, not stderr
        f = check_cli(res, statuses, CLI_TIMEOUT,
                      one_line="--stats" not in args or args[0] == "stats")
        if f is not None:
            tally.add(f, " ".join(args), "vmsim " + " ".join(repr(a) if " " in a or not a
                                                              else a for a in args))
        # an output path that names this command's input must be refused, not overwrite
        # it (any other file the user names as an output may be written)
        for name, want in (("hello.asm", (SAMPLES / "hello.asm").read_bytes()),
                           ("hlt.bin", b"\xf4")):
            if (tmp_path / name).read_bytes() != want:
                if str(tmp_path / name) in inputs_of(args):
                    tally.add(Finding("input overwritten", name), " ".join(args),
                              "vmsim " + " ".join(args))
                (tmp_path / name).write_bytes(want)
    tally.finish()
