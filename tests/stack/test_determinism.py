"""(c) The same guest twice through `vmsim run --trace`: byte-identical traces."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.stack.stackrun import sample_guests
from vmsim.cli import main


def _trace(guest: Path, out: Path, *extra: str) -> bytes:
    status = main(["run", "--trace", str(out), *extra, str(guest)])
    assert status & 1, f"{guest.name} ended without a debug exit (status {status})"
    return out.read_bytes()


@pytest.mark.parametrize("guest", sample_guests(), ids=lambda p: p.stem)
def test_two_runs_give_the_same_trace(guest: Path, tmp_path: Path, capsysbinary) -> None:
    first = _trace(guest, tmp_path / "1.jsonl")
    second = _trace(guest, tmp_path / "2.jsonl")
    assert first.count(b"\n") > 10
    assert first == second


@pytest.mark.parametrize("level", ["insn", "all"])
@pytest.mark.parametrize("paging", ["ept", "shadow"])
def test_detailed_traces_are_deterministic(level: str, paging: str, tmp_path: Path,
                                           capsysbinary) -> None:
    guest = Path(__file__).resolve().parents[2] / "sample_guests" / "paging.asm"
    args = ("--trace-level", level, "--paging", paging)
    assert _trace(guest, tmp_path / "1.jsonl", *args) == _trace(guest, tmp_path / "2.jsonl", *args)
