"""The trace and statistics contracts (docs/trace-format.md)."""

from __future__ import annotations

import json
from pathlib import Path

from vmsim.cli import EXIT_LIMIT, main
from vmsim.events import CATALOGUE
from vmsim.trace import FLUSH_AT, InstructionColumn, TraceWriter, unfold

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
    outs = [ev for ev in lines if ev["kind"] == "kvm_userspace_exit" and ev["reason"] == "KVM_EXIT_IO"
            and ev["direction"] == "out" and ev["port"] == 0x3F8]
    text = bytes.fromhex("".join(ev["data"] for ev in outs))
    assert text == b"Hello from a vmsim guest!\n"
    # Each OUT to COM1 came from a VM exit whose qualification (info1) encodes it (SDM:
    # port in bits 31:16, size-1 in 2:0, DX operand): `out dx, al` with DX=0x3F8 is 0x03F80000.
    vmexits = [ev for ev in lines if ev["kind"] == "kvm_exit"]
    assert any(ev["exit_reason"] == "IO_INSTRUCTION" and ev["exit_reason_number"] == 30
               and ev["info1"] == 0x03F80000 and ev["isa"] == "VMX" for ev in vmexits)


def _instructions(lines: list[dict]) -> dict[str, list[int]]:
    """Each source's EIPs, decoded from its insn_run lines (checking n and count)."""
    out: dict[str, list[int]] = {}
    for ev in lines:
        if ev["kind"] == "insn_run":
            eips = out.setdefault(ev["source"], [])
            assert ev["n"] == len(eips) + 1
            decoded = unfold(ev)
            assert len(decoded) == ev["count"]
            eips += decoded
    return out


def test_instruction_level_records(tmp_path: Path) -> None:
    lines = _trace(tmp_path, "--trace-level", "insn")
    eips = _instructions(lines)["vcpu0"]
    assert eips[0] == 0x100000  # the entry point
    # Interleaved in order: every IN/OUT exit comes right after the instruction that
    # exited (the last one written before the kvm_exit line).
    last = None
    for ev in lines:
        if ev["kind"] == "insn_run":
            last = unfold(ev)[-1]
        elif ev["kind"] == "kvm_exit" and ev["exit_reason"] == "IO_INSTRUCTION":
            assert ev["guest_rip"] == last


def _recorded(guest: str, **kw) -> list[int]:
    """Every EIP the vCPU began, recorded in memory with no trace writer (the oracle for
    what the streamed, folded trace must decode to)."""
    from array import array

    from vmsim.session import Session

    session = Session(guest, **kw)
    col = array("I")
    session.cpus[0].recorder = col
    session.run()
    return list(col)


def test_insn_runs_decode_to_every_instruction(tmp_path: Path) -> None:
    src = tmp_path / "loops.asm"
    # Nested loops (folded), data-dependent branches (not folded) and exits in between.
    src.write_text("bits 32\norg 0x100000\n mov ecx, 300\nouter: mov edx, 7\n"
                   "inner: dec edx\n jnz inner\n test ecx, 1\n jz even\n nop\neven: mov dx, 0x80\n"
                   " out dx, al\n loop outer\n mov dx, 0x501\n mov al, 0\n out dx, al\n")
    out = tmp_path / "t.jsonl"
    assert main(["run", "--trace", str(out), "--trace-level", "insn", str(src)]) == 1
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert _instructions(lines)["vcpu0"] == _recorded(str(src))
    assert any(isinstance(item, list) for ev in lines if ev["kind"] == "insn_run"
               for item in ev["d"]), "the inner loop was not folded"


def test_insn_trace_is_compact(tmp_path: Path) -> None:
    # A loop that does not exit: ~2 bytes an instruction at most (one JSON line of 59
    # bytes per instruction before), a tight loop almost nothing.
    src = tmp_path / "count.asm"
    src.write_text("bits 32\norg 0x100000\n xor eax, eax\n mov ecx, 50000\n"
                   "again: add eax, ecx\n test eax, 4\n jz skip\n inc ebx\nskip: loop again\n"
                   "spin: jmp spin\n")
    out = tmp_path / "t.jsonl"
    assert main(["run", "--max-instructions", "400000", "--trace", str(out), "--trace-level",
                 "insn", str(src)]) == EXIT_LIMIT
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    n = len(_instructions(lines)["vcpu0"])
    assert n >= 399_000
    assert out.stat().st_size < 3 * 250000 + 20000  # the counting loop, then spinning


def test_instructions_are_written_as_the_run_goes(tmp_path: Path) -> None:
    """The trace is not held until the end: each batch of instructions reaches the file
    while the guest runs on (bounded memory, and a killed run keeps its trace)."""
    from vmsim.events import EventStream
    from vmsim.session import Session

    src = tmp_path / "spin.asm"
    src.write_text("bits 32\norg 0x100000\nspin: jmp spin\n")

    class Sink:
        def __init__(self) -> None:
            self.waiting: list[int] = []  # instructions run but not yet written, per write

        def write(self, text: str) -> None:
            if '"insn_run"' in text:
                self.waiting.append(session.instructions - col.count)

        def flush(self) -> None:
            pass

    for backend in ("sim", "bare"):
        events = EventStream()
        sink = Sink()
        writer = TraceWriter(events, sink, "insn")
        session = Session(str(src), backend, max_instructions=3_000_000, events=events)
        col = InstructionColumn(session.cpus[0].name)
        writer.add_column(col)
        session.cpus[0].recorder = col
        session.run()
        writer.close()
        assert len(sink.waiting) > 2, backend
        # At most FLUSH_AT plus one CPU batch (20 000 under kvm.ko, 1 Mi on bare) wait.
        assert max(sink.waiting) <= FLUSH_AT + (1 << 20), backend
        assert col.count == session.instructions, backend


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
    # The VGA window is a coalesced-MMIO zone (QEMU's VGA): the 26 stores all fit in
    # kvm.ko's ring (169 entries), so none comes out of KVM_RUN; --no-coalesced-mmio sends
    # each to QEMU. The VM exits are the same either way.
    assert stats["userspace_exits"] == {"KVM_EXIT_IO": 53}
    assert stats["vm_exits_total"] == 81
    out2 = tmp_path / "s2.json"
    assert main(["run", "--no-coalesced-mmio", "--stats-json", str(out2), HELLO]) == 1
    stats2 = json.loads(out2.read_text())
    assert stats2["userspace_exits"] == {"KVM_EXIT_IO": 53, "KVM_EXIT_MMIO": 26}
    assert [(r["reason"], r["count"]) for r in stats2["vm_exits"]] == \
        [(r["reason"], r["count"]) for r in stats["vm_exits"]]
    assert stats["guest_instructions"] > 0


def test_a_signal_during_a_record_waits_for_the_record() -> None:
    """What the SIGINT/SIGTERM handler of `vmsim run` relies on: while `busy`, it sets
    `deferred`, and the writer raises it once the record is whole and accounted for (so
    no instruction is written twice, or lost, by the close that follows)."""
    import io

    import pytest

    from vmsim.events import EventStream

    events = EventStream()

    class Out(io.StringIO):
        def write(self, text: str) -> int:
            assert writer.busy
            writer.deferred = KeyboardInterrupt()  # "the signal arrived here"
            return super().write(text)

    out = Out()
    writer = TraceWriter(events, out, "insn")
    col = InstructionColumn("vcpu0")
    writer.add_column(col)
    col.eips.extend([0x100000, 0x100002, 0x100004])
    with pytest.raises(KeyboardInterrupt):
        writer.flush_instructions()
    assert not writer.busy and writer.deferred is None
    assert (col.count, len(col.eips)) == (3, 0)
    writer.close()  # nothing left: the instructions are not written again
    assert [json.loads(line)["count"] for line in out.getvalue().splitlines()] == [3]
