"""Every input the fuzzers found (minimized, in regressions/), replayed: it must now end
the documented way. regressions/manifest.toml says how to run each; an entry whose fix
has not landed yet carries `xfail = "why"` (non-strict), so CI stays green while the
input stays here; delete the line when the fix lands."""

from __future__ import annotations

import os
import shutil
import tomllib
from pathlib import Path

import pytest

from tests.fuzz.asm_fuzz import check_source
from tests.fuzz.harness import (
    ASM_STATUSES,
    KVM_PRESENT,
    RUN_STATUSES,
    SAMPLES,
    Config,
    check_cli,
    run_cli,
    run_guest,
)

HERE = Path(__file__).parent / "regressions"
MANIFEST = HERE / "manifest.toml"
CLI_TIMEOUT = 90.0  # wall seconds; a spinning child meets its CPU limit first


def entries() -> list[dict]:
    return tomllib.loads(MANIFEST.read_text())["input"]


def _param(e: dict):
    marks = [pytest.mark.xfail(strict=False, reason=e["xfail"])] if e.get("xfail") else []
    return pytest.param(e, id=e["name"], marks=marks)


def replay(e: dict, tmp: Path) -> object:
    """None when the input now ends the documented way; else what is still wrong."""
    kind = e["kind"]
    if kind == "guest":
        # (Found before the machine coalesced its VGA window by default: replayed so.)
        cfg = Config(e.get("backend", "sim"), e.get("paging", "ept"), e.get("memory", 16),
                     e.get("coalesced", False))
        data = (HERE / e["file"]).read_bytes()
        return run_guest(data, cfg, e.get("max_instructions", 20_000), e.get("seconds")).finding
    if kind == "asm":
        return check_source((HERE / e["file"]).read_text(encoding="utf-8"))
    if kind == "cli":
        return replay_cli(e, tmp)
    raise AssertionError(f"unknown kind {kind!r} in {MANIFEST}")


def replay_cli(e: dict, tmp: Path) -> object:
    os.mkfifo(tmp / "fifo")
    args, copies = [], []
    for a in e["args"]:
        if a.startswith("{copy:"):
            name = a[len("{copy:"):-1]
            shutil.copy(HERE / name, tmp / name)
            copies.append(name)
            a = str(tmp / name)
        args.append(a.format(tmp=tmp, regressions=HERE, samples=SAMPLES, fifo=tmp / "fifo"))
    statuses = RUN_STATUSES if args[0] == "run" else ASM_STATUSES
    res = run_cli(args, CLI_TIMEOUT, cwd=tmp, close_stdout=e.get("close_stdout", False))
    f = check_cli(res, statuses, CLI_TIMEOUT, one_line=e.get("one_line", True))
    if f is not None:
        return f
    if "status" in e and res.status not in e["status"]:
        return f"exit status {res.status}, expected one of {e['status']}; stderr: {res.stderr!r}"
    if e.get("unchanged"):
        changed = [n for n in copies if (tmp / n).read_bytes() != (HERE / n).read_bytes()]
        if changed:
            return f"overwrote its input {changed}; stderr: {res.stderr!r}"
    return None


@pytest.mark.parametrize("entry", [_param(e) for e in entries()])
def test_regression_input(entry: dict, tmp_path: Path) -> None:
    if entry.get("backend") == "kvm" and not KVM_PRESENT:
        pytest.skip("no usable /dev/kvm on this host")
    finding = replay(entry, tmp_path)
    assert finding is None, f"{entry['name']} ({entry['found']}): {finding}"


def test_every_regression_file_is_in_the_manifest() -> None:
    listed = {e["file"] for e in entries() if "file" in e}
    listed |= {a[len("{copy:"):-1] for e in entries() for a in e.get("args", [])
               if a.startswith("{copy:")}
    listed |= {a[len("{regressions}/"):] for e in entries() for a in e.get("args", [])
               if a.startswith("{regressions}/")}
    present = {p.name for p in HERE.iterdir() if p.name != MANIFEST.name}
    assert present == listed, (present - listed, listed - present)
