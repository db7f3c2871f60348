"""The trace and statistics contracts (docs/trace-format.md)."""

from __future__ import annotations

import json
from pathlib import Path

from vmsim.cli import main
from vmsim.events import CATALOGUE

ROOT = Path(__file__).resolve().parents[1]
HELLO = str(ROOT / "sample_guests" / "hello.asm")


def test_every_event_kind_is_documented() -> None:
    doc = (ROOT / "docs" / "trace-format.md").read_text()
    missing = [k for k in CATALOGUE if f"`{k}`" not in doc]
    assert not missing, f"undocumented event kinds: {missing}"


def _trace(tmp_path: Path, *extra: str) -> list[dict]:
    out = tmp_path / "t.jsonl"
    assert main(["run", "--trace", str(out), *extra, HELLO]) == 1
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_trace_lines_carry_the_common_keys(tmp_path: Path, capsys) -> None:
    lines = _trace(tmp_path)
    assert lines, "empty trace"
    for ev in lines:
        assert {"seq", "time", "layer", "source", "kind"} <= ev.keys()
        assert ev["kind"] in CATALOGUE
    seqs = [ev["seq"] for ev in lines]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert capsys.readouterr().out == "Hello from a vmsim guest!\n"


def test_serial_bytes_appear_as_out_exits(tmp_path: Path) -> None:
    lines = _trace(tmp_path)
    outs = [ev for ev in lines if ev["kind"] == "kvm_exit" and ev["reason"] == "KVM_EXIT_IO"
            and ev["direction"] == "out" and ev["port"] == 0x3F8]
    text = bytes.fromhex("".join(ev["data"] for ev in outs))
    assert text == b"Hello from a vmsim guest!\n"
    # Each OUT to COM1 came from a VM exit whose qualification encodes it (SDM: port in
    # bits 31:16, size-1 in 2:0, DX operand): `out dx, al` with DX=0x3F8 is 0x03F80000.
    vmexits = [ev for ev in lines if ev["kind"] == "vmexit"]
    assert any(ev["reason"] == "IO_INSTRUCTION" and ev["reason_number"] == 30
               and ev["qualification"] == 0x03F80000 for ev in vmexits)


def test_instruction_level_records(tmp_path: Path) -> None:
    lines = _trace(tmp_path, "--trace-level", "insn")
    insns = [ev for ev in lines if ev["kind"] == "insn"]
    assert insns[0]["eip"] == 0x100000  # the entry point
    assert [ev["n"] for ev in insns] == list(range(1, len(insns) + 1))


def test_stats_json(tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    assert main(["run", "--stats-json", str(out), HELLO]) == 1
    stats = json.loads(out.read_text())
    by_reason = {row["reason"]: row for row in stats["vm_exits"]}
    # 26 characters: each waits on LSR (IN) once, goes out on THR (OUT) and to VGA (MMIO);
    # plus the debug-exit OUT.
    assert by_reason["IO_INSTRUCTION"]["count"] == 26 * 2 + 1
    # EPT is built lazily: the first touch of each RAM page (the code page, the stack
    # page) and of the VGA page is an EPT violation; KVM then marks the VGA page as MMIO
    # with a misconfigured entry, so the other 25 VGA writes are EPT misconfigurations.
    assert by_reason["EPT_VIOLATION"]["count"] == 3
    assert by_reason["EPT_MISCONFIG"]["count"] == 25
    assert stats["userspace_exits"] == {"KVM_EXIT_IO": 53, "KVM_EXIT_MMIO": 26}
    assert stats["vm_exits_total"] == 81
    assert stats["guest_instructions"] > 0
