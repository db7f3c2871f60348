"""The Perfetto / chrome://tracing timeline (`--trace-format perfetto`): valid against the
Trace Event Format's documented schema, slices properly nested on every thread's track."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vmsim.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _check_schema(doc: object) -> list[dict]:
    """The Trace Event Format ("JSON Object Format"): an object whose `traceEvents` is a
    list of events; every event has a string `name` and `ph`, integer `pid` and `tid`
    (counters: `pid`), a numeric `ts` in microseconds (not metadata); "X" a numeric `dur`
    >= 0; "i" a scope `s` of "g", "p" or "t"; "C" numeric `args`; "M" one of the metadata
    names with `args.name`. `displayTimeUnit` is "ms" or "ns"."""
    assert isinstance(doc, dict) and isinstance(doc["traceEvents"], list)
    assert doc.get("displayTimeUnit", "ms") in ("ms", "ns")
    events = doc["traceEvents"]
    for e in events:
        assert isinstance(e["name"], str) and e["name"], e
        assert e["ph"] in ("X", "i", "C", "M"), e
        assert isinstance(e["pid"], int), e
        if e["ph"] != "C":
            assert isinstance(e["tid"], int), e
        if e["ph"] == "M":
            assert e["name"] in ("process_name", "thread_name") and isinstance(e["args"]["name"], str)
            continue
        assert isinstance(e["ts"], (int, float)) and e["ts"] >= 0, e
        if e["ph"] == "X":
            assert isinstance(e["dur"], (int, float)) and e["dur"] >= 0, e
        elif e["ph"] == "i":
            assert e["s"] in ("g", "p", "t"), e
        elif e["ph"] == "C":
            assert e["args"] and all(isinstance(v, (int, float)) for v in e["args"].values()), e
        if "args" in e:
            assert isinstance(e["args"], dict)
    return events


def _check_nesting(events: list[dict]) -> None:
    """On each thread, two slices are either disjoint or one contains the other."""
    by_thread: dict[tuple[int, int], list[tuple[float, float, str]]] = {}
    for e in events:
        if e["ph"] == "X":
            by_thread.setdefault((e["pid"], e["tid"]), []).append(
                (e["ts"], e["ts"] + e["dur"], e["name"]))
    assert by_thread
    eps = 1e-6
    for slices in by_thread.values():
        slices.sort(key=lambda s: (s[0], -s[1]))
        open_: list[tuple[float, float, str]] = []
        for start, end, name in slices:
            while open_ and open_[-1][1] <= start + eps:
                open_.pop()
            if open_:
                assert end <= open_[-1][1] + eps, f"{name} {start}-{end} overlaps {open_[-1]}"
            open_.append((start, end, name))


@pytest.mark.parametrize("guest", ["hello.asm", "paging.asm"])
def test_timeline_is_valid_and_nested(tmp_path: Path, capsys, guest: str) -> None:
    out = tmp_path / "t.json"
    main(["run", "--trace", str(out), "--trace-format", "perfetto",
          str(ROOT / "sample_guests" / guest)])
    capsys.readouterr()
    events = _check_schema(json.loads(out.read_text()))
    _check_nesting(events)
    names = {e["name"] for e in events}
    assert {"KVM_RUN", "guest", "KVM_EXIT_IO", "BQL held", "VM exits"} <= names
    assert any(n.startswith("exit IO_INSTRUCTION") for n in names)
    threads = {e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert "CPU 0/KVM" in threads


def test_timeline_slices_follow_the_events(tmp_path: Path, capsys) -> None:
    """Each VM exit is a slice from the exit to the next entry (or to the return to
    userspace), counted by reason as the statistics count them."""
    out, stats = tmp_path / "t.json", tmp_path / "s.json"
    hello = str(ROOT / "sample_guests" / "hello.asm")
    main(["run", "--trace", str(out), "--trace-format", "perfetto", "--stats-json", str(stats),
          hello])
    capsys.readouterr()
    events = json.loads(out.read_text())["traceEvents"]
    exits: dict[str, int] = {}
    for e in events:
        if e["ph"] == "X" and e["name"].startswith("exit "):
            exits[e["name"][5:]] = exits.get(e["name"][5:], 0) + 1
    expected = {row["reason"]: row["count"] for row in json.loads(stats.read_text())["vm_exits"]}
    assert exits == expected
    counters = [e for e in events if e["ph"] == "C"]
    assert counters[-1]["args"] == expected
    guest = [e for e in events if e["ph"] == "X" and e["name"] == "guest"]
    assert len(guest) == sum(expected.values())


@pytest.mark.parametrize("irqchip", ["kernel", "userspace"])
def test_timeline_shows_the_main_loop_and_the_interrupts(tmp_path: Path, capsys,
                                                         irqchip: str) -> None:
    """timer.asm (10 PIT ticks into a HLT loop): with the PIC and PIT in QEMU, the main
    loop's track has a slice per wake-up with the PIT's QEMU timer in it, and the vCPU is
    kicked out of its halt wait; with them in kvm.ko, HLT is a kvm_vcpu_block slice on the
    vCPU's track. Both inject the 10 interrupts the guest counts."""
    out = tmp_path / "t.json"
    main(["run", "--trace", str(out), "--trace-format", "perfetto", "--irqchip", irqchip,
          str(ROOT / "sample_guests" / "timer.asm")])
    assert "timer: 10 ticks" in capsys.readouterr().out
    events = _check_schema(json.loads(out.read_text()))
    _check_nesting(events)
    tids = {e["args"]["name"]: e["tid"] for e in events if e["name"] == "thread_name"}
    on = {}
    for e in events:
        on.setdefault(e.get("tid"), []).append(e)
    vcpu = [e["name"] for e in on[tids["CPU 0/KVM"]]]
    assert sum(n.startswith("inject irq 32") for n in vcpu) == 10  # IRQ 0 at vector 0x20
    if irqchip == "userspace":
        loop = [e for e in on[tids["qemu-system-x86 (main loop)"]]]
        wakes = [e for e in loop if e["ph"] == "X" and e["name"] == "main loop"]
        timers = [e for e in loop if e["name"] == "qemu_timer i8254"]
        assert len(wakes) >= 10 and len(timers) >= 10
        assert all(any(w["ts"] <= t["ts"] <= w["ts"] + w["dur"] for w in wakes) for t in timers)
        assert sum(n.startswith("kick") for n in vcpu) >= 10
    else:
        assert vcpu.count("kvm_vcpu_block") == 10
        assert "qemu-system-x86 (main loop)" not in tids or not any(
            e["name"] == "qemu_timer i8254" for e in on[tids["qemu-system-x86 (main loop)"]])


@pytest.mark.parametrize("ioeventfd", [True, False])
def test_timeline_puts_the_virtio_dataplane_on_the_thread_that_runs_it(
        tmp_path: Path, capsys, ioeventfd: bool) -> None:
    """virtio_blk.asm's 12 requests: with an ioeventfd the iothread pops and completes
    them (QEMU's "IO iothread0" thread); without, the vCPU thread does, under the BQL."""
    out, disk = tmp_path / "t.json", tmp_path / "disk.img"
    disk.write_bytes(bytes(64 << 10))
    main(["run", "--trace", str(out), "--trace-format", "perfetto", "--disk", str(disk),
          *([] if ioeventfd else ["--no-ioeventfd"]),
          str(ROOT / "sample_guests" / "virtio_blk.asm")])
    assert "virtio-blk: done" in capsys.readouterr().out
    events = _check_schema(json.loads(out.read_text()))
    _check_nesting(events)
    names = {e["tid"]: e["args"]["name"] for e in events if e["name"] == "thread_name"}
    pops = [names[e["tid"]] for e in events if e["name"] == "virtqueue_pop"]
    assert len(pops) == 12
    assert set(pops) == ({"IO iothread0"} if ioeventfd else {"CPU 0/KVM"})


def test_timeline_shows_coalesced_stores_and_their_flush_on_the_vcpu(tmp_path: Path,
                                                                     capsys) -> None:
    """The VGA window coalesced (the default): each VGA store kvm.ko queued is an instant
    on the vCPU's track, and so is each flush QEMU makes (as many writes in all as the
    stores queued, bar those still waiting at the end); the JSON Lines trace of the same
    run is the count's source."""
    out, lines = tmp_path / "t.json", tmp_path / "t.jsonl"
    guest = str(ROOT / "sample_guests" / "vga.asm")
    assert main(["run", "--trace", str(out), "--trace-format", "perfetto", guest]) == 1
    assert main(["run", "--trace", str(lines), guest]) == 1
    capsys.readouterr()
    events = _check_schema(json.loads(out.read_text()))
    kinds = [json.loads(x)["kind"] for x in lines.read_text().splitlines()]
    writes = [e for e in events if e["name"].startswith("coalesced MMIO write ")]
    flushes = [e for e in events if e["name"].startswith("coalesced MMIO flush (")]
    assert len(writes) == kinds.count("coalesced_mmio_write") > 0
    assert len(flushes) == kinds.count("kvm_flush_coalesced_mmio_buffer") > 0
    vcpu = {e["tid"] for e in events if e["ph"] == "M" and e["args"]["name"] == "CPU 0/KVM"}
    assert {e["tid"] for e in writes + flushes} == vcpu
