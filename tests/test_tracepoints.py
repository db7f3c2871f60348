"""Events named and shaped after Linux's tracepoints and QEMU's trace events, in the order
a host records them, the `text` trace format against lines from real hosts' traces, and
`vmsim stats TRACEFILE` (docs/trace-format.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from vmsim.asm import assemble
from vmsim.cli import main
from vmsim.events import Event, EventStream
from vmsim.session import Session
from vmsim.tracecmd import format_line
from vmsim.vmm.machine import MachineConfig

ROOT = Path(__file__).resolve().parents[1]
HELLO = str(ROOT / "sample_guests" / "hello.asm")
REAL_LINES = ROOT / "tests" / "data" / "trace-cmd-kvm.txt"

# One OUT to COM1, a CPUID, MSR accesses, then isa-debug-exit.
OUT_GUEST = """
bits 32
org 0x100000
        mov dx, 0x3F8
        mov al, 'A'
the_out:
        out dx, al
        xor eax, eax
        xor ecx, ecx
the_cpuid:
        cpuid
        mov ecx, 0x1A0              ; IA32_MISC_ENABLE (intercepted)
        mov eax, 0x01
        xor edx, edx
        wrmsr
        rdmsr
        mov dx, 0x501
        xor al, al
        out dx, al
        hlt
"""


def _run(source: str, config: MachineConfig | None = None
         ) -> tuple[Session, list[Event], dict[str, int]]:
    image = assemble(source, "t.asm")
    events = EventStream()
    seen: list[Event] = []
    events.subscribe(seen.append)
    s = Session(image, "sim", config, events=events)
    s.run()
    return s, seen, image.symbols


@pytest.fixture(scope="module")
def out_run() -> tuple[list[Event], dict[str, int]]:
    _, seen, symbols = _run(OUT_GUEST)
    return seen, symbols


def test_an_out_is_traced_in_the_order_a_host_records_it(out_run) -> None:
    seen, symbols = out_run
    at = next(i for i, e in enumerate(seen) if e.kind == "kvm_exit"
              and e["guest_rip"] == symbols["the_out"])
    # From that VM exit to the next VM entry: kernel side, then QEMU's, then the device,
    # then KVM_RUN again (Linux: kvm_exit, kvm_pio, kvm_userspace_exit; QEMU: kvm_run_exit
    # after KVM_RUN returned, then the MemoryRegion access, then kvm_vcpu_ioctl(KVM_RUN)
    # and vcpu_enter_guest's last check for a pending signal before the entry).
    end = next(i for i in range(at + 1, len(seen)) if seen[i].kind == "kvm_entry")
    order = [e.kind for e in seen[at:end + 1] if e.layer != "hw" or e.kind.startswith("kvm_")]
    order = [k for k in order if k not in ("kvm_handler", "bql")]
    assert order == ["kvm_exit", "kvm_pio", "kvm_userspace_exit", "kvm_run_exit",
                     "device_access", "kvm_vcpu_ioctl", "kvm_signal_check", "kvm_entry"]
    assert [e.kind for e in seen[:at] if e.kind.startswith("kvm_")][-1] == "kvm_entry"
    run_ioctl = next(e for e in seen[at:end] if e.kind == "kvm_vcpu_ioctl")
    assert (run_ioctl["name"], run_ioctl["type"], run_ioctl["cpu_index"]) == ("KVM_RUN", 0xAE80, 0)
    device = next(e for e in seen[at:end] if e.kind == "device_access")
    assert (device.source, device["address"], device["value"]) == ("serial0", 0x3F8, ord("A"))
    run_exit = next(e for e in seen[at:end] if e.kind == "kvm_run_exit")
    assert (run_exit["cpu_index"], run_exit["reason"]) == (0, 2)  # KVM_EXIT_IO


def test_kvm_exit_pio_and_userspace_exit_fields(out_run) -> None:
    seen, symbols = out_run
    at = next(i for i, e in enumerate(seen) if e.kind == "kvm_exit"
              and e["guest_rip"] == symbols["the_out"])
    ex, pio, us = (next(e for e in seen[at:] if e.kind == k)
                   for k in ("kvm_exit", "kvm_pio", "kvm_userspace_exit"))
    # TRACE_EVENT_KVM_EXIT's fields: info1 is the exit qualification (SDM: port 0x3F8 in
    # 31:16, size 1, OUT, DX operand), no IDT vectoring, no interruption information.
    assert dict(ex.fields) == {
        "vcpu_id": 0, "exit_reason": "IO_INSTRUCTION", "exit_reason_number": 30,
        "guest_rip": symbols["the_out"], "isa": "VMX", "info1": 0x03F80000, "info2": 0,
        "intr_info": 0, "error_code": 0, "instruction_len": 1,
        "guest_linear_address": None, "guest_physical_address": None}
    # "vcpu %u reason %s%s%s rip 0x%lx info1 0x%016llx info2 0x%016llx intr_info 0x%08x
    # error_code 0x%08x" (arch/x86/kvm/trace.h)
    assert format_line(ex).endswith(
        f": kvm_exit: vcpu 0 reason IO_INSTRUCTION rip {symbols['the_out']:#x} "
        "info1 0x0000000003f80000 info2 0x0000000000000000 intr_info 0x00000000 "
        "error_code 0x00000000")
    # "pio_%s at 0x%x size %d count %d val 0x%x %s": "" for count 1 leaves a trailing space
    assert dict(pio.fields) == {"rw": 1, "port": 0x3F8, "size": 1, "count": 1, "val": 0x41}
    assert format_line(pio).endswith(": kvm_pio: pio_write at 0x3f8 size 1 count 1 val 0x41 ")
    # "reason %s (%d)" (include/trace/events/kvm.h), and the struct kvm_run fields
    assert (us["reason"], us["reason_number"], us["errno"], us["direction"], us["port"],
            us["size"], us["count"], us["data"]) == ("KVM_EXIT_IO", 2, 0, "out", 0x3F8, 1, 1, "41")
    assert format_line(us).endswith(": kvm_userspace_exit: reason KVM_EXIT_IO (2)")


def test_cpuid_and_msr_tracepoints(out_run) -> None:
    seen, _ = out_run
    cpuid = next(e for e in seen if e.kind == "kvm_cpuid")
    assert (cpuid["function"], cpuid["index"], cpuid["found"], cpuid["used_max_basic"]) == \
        (0, 0, True, False)
    # "func %x idx %x rax %lx rbx %lx rcx %lx rdx %lx, cpuid entry %s%s"
    line = format_line(cpuid)
    assert re.search(r": kvm_cpuid: func 0 idx 0 rax [0-9a-f]+ rbx 756e6547 rcx 6c65746e "
                     r"rdx 49656e69, cpuid entry found$", line), line  # "GenuineIntel"
    msrs = [e for e in seen if e.kind == "kvm_msr"]
    # "msr_%s %x = 0x%llx%s" (trace_kvm_msr_write, then trace_kvm_msr_read)
    assert [format_line(e).split(": kvm_msr: ")[1] for e in msrs] == [
        "msr_write 1a0 = 0x1", "msr_read 1a0 = 0x1"]


def test_mmio_and_emulation_tracepoints() -> None:
    # Every VGA store to QEMU (--no-coalesced-mmio): the whole path to KVM_EXIT_MMIO.
    _, seen, _ = _run(Path(HELLO).read_text(), MachineConfig(coalesced_mmio=False))
    first = [e for e in seen if e.kind in ("kvm_emulate_insn", "kvm_mmio", "kvm_userspace_exit")
             and (e.kind != "kvm_userspace_exit" or e["reason"] == "KVM_EXIT_MMIO")][:3]
    assert [e.kind for e in first] == ["kvm_emulate_insn", "kvm_mmio", "kvm_userspace_exit"]
    emu, mmio, us = first
    # "%x:%llx:%s (%s)%s": hello.asm's first VGA store is `stosw` (66 AB) at CS base 0
    assert format_line(emu).split(": kvm_emulate_insn: ")[1] == f"0:{emu['rip']:x}:66 ab (prot32)"
    # "mmio %s len %u gpa 0x%llx val 0x%llx": 'H' in white on blue at 0xB8000
    assert format_line(mmio).split(": kvm_mmio: ")[1] == "mmio write len 2 gpa 0xb8000 val 0x1f48"
    assert (us["phys_addr"], us["len"], us["is_write"], us["data"]) == (0xB8000, 2, True, "481f")


def test_emulate_insn_names_every_byte_of_an_instruction_across_a_page() -> None:
    # MOV r/m32, imm32 (C7 /0), ModRM 05: disp32 (SDM Vol. 2 "MOV"), ten bytes, the last six
    # of them on the next page: the emulator's fetch reads both pages (ctxt->fetch).
    _, seen, symbols = _run("""bits 32
org 0x100000
        jmp store
        times 0x1000 - 4 - ($ - $$) db 0x90
store:  mov dword [0xB8000], 0x12345678
        mov dx, 0x501
        out dx, al
""")
    assert symbols["store"] & 0xFFF == 0xFFC
    emu = next(e for e in seen if e.kind == "kvm_emulate_insn")
    assert emu["rip"] == symbols["store"]
    assert format_line(emu).split(": kvm_emulate_insn: ")[1] == \
        f"0:{symbols['store']:x}:c7 05 00 80 0b 00 78 56 34 12 (prot32)"


def test_shadow_mmu_tracepoints() -> None:
    from tests.mmu.test_memory_virtualization import PROBE

    events = EventStream()
    seen: list[Event] = []
    events.subscribe(seen.append)
    Session(PROBE, "sim", paging="shadow", events=events).run()
    kinds = {e.kind for e in seen}
    assert {"kvm_mmu_get_page", "kvm_mmu_pagetable_walk", "kvm_mmu_paging_element",
            "kvm_page_fault", "kvm_inj_exception"} <= kinds
    walk = next(i for i, e in enumerate(seen) if e.kind == "kvm_mmu_pagetable_walk"
                and e["addr"] == 0x6010)
    # "addr %llx pferr %x %s": then one "pte %llx level %u" per guest entry read
    assert re.fullmatch(r"addr 6010 pferr [0-9a-f]+ [PWURSVDF|]*",
                        format_line(seen[walk]).split(": kvm_mmu_pagetable_walk: ")[1])
    assert seen[walk + 1].kind == "kvm_mmu_paging_element" and seen[walk + 1]["level"] == 2
    get_page = next(e for e in seen if e.kind == "kvm_mmu_get_page")
    assert re.fullmatch(r"sp gen 0 gfn [0-9a-f]+ l[12] 4-byte q0( direct)? wux !nxe ad "
                        r"root [01] sync new",
                        format_line(get_page).split(": kvm_mmu_get_page: ")[1])
    inj = next(e for e in seen if e.kind == "kvm_inj_exception")
    assert format_line(inj).split(": kvm_inj_exception: ")[1] == f"#PF ({inj['error_code']:#x})"


# -- the text format against real hosts' lines ----------------------------------------------

# A line of `trace-cmd report` (or of the ftrace buffer, which adds the irq-flags column):
# task-pid, [CPU], optional flags, seconds with microseconds, event name, fields.
LINE = re.compile(r"^\s*(?P<task>.+?)-(?P<pid>\d+)\s+\[(?P<cpu>\d{3})\]\s+"
                  r"(?:(?P<flags>[a-zA-Z.]{4,5})\s+)?(?P<time>\d+\.\d{6}):\s+"
                  r"(?P<event>\w+):\s(?P<fields>.*)$")
# The fields of each event, as its TP_printk prints them.
FIELDS = {
    "kvm_exit": re.compile(r"^vcpu (?P<vcpu>\d+) reason (?P<reason>[A-Z_]+) rip 0x(?P<rip>[0-9a-f]+) "
                           r"info1 0x(?P<info1>[0-9a-f]{16}) info2 0x(?P<info2>[0-9a-f]{16}) "
                           r"intr_info 0x(?P<intr_info>[0-9a-f]{8}) "
                           r"error_code 0x(?P<error_code>[0-9a-f]{8})$"),
    "kvm_entry": re.compile(r"^vcpu (?P<vcpu>\d+), rip 0x(?P<rip>[0-9a-f]+)$"),
    "kvm_pio": re.compile(r"^pio_(?P<rw>read|write) at 0x(?P<port>[0-9a-f]+) size (?P<size>\d+) "
                          r"count (?P<count>\d+) val 0x(?P<val>[0-9a-f]+) (?P<more>\(\.\.\.\))?$"),
    "kvm_userspace_exit": re.compile(r"^reason (?P<reason>\w+) \((?P<n>\d+)\)$"),
    "kvm_page_fault": re.compile(r"^address (?P<address>[0-9a-f]+) error_code (?P<code>[0-9a-f]+)$"),
}


def _real_lines() -> list[str]:
    return [ln for ln in REAL_LINES.read_text().splitlines() if ln and not ln.startswith("#")]


def test_real_host_lines_parse() -> None:
    """The regular expressions are the real format: every captured line matches them."""
    seen = set()
    for ln in _real_lines():
        m = LINE.match(ln)
        assert m, ln
        fields = FIELDS[m["event"]].match(m["fields"])
        assert fields, ln
        seen.add(m["event"])
    assert seen == set(FIELDS)


def test_text_trace_lines_parse_like_a_hosts(tmp_path: Path, capsys) -> None:
    out = tmp_path / "t.txt"
    assert main(["run", "--trace", str(out), "--trace-format", "text", HELLO]) == 1
    assert capsys.readouterr().out == "Hello from a vmsim guest!\n"
    lines = out.read_text().splitlines()
    assert lines
    groups: dict[str, set[str]] = {}
    for ln in lines:
        m = LINE.match(ln)
        assert m, ln
        assert (m["task"], m["cpu"], m["flags"]) == ("qemu-system-x86", "000", None)
        fields = FIELDS.get(m["event"])
        if fields is not None:
            f = fields.match(m["fields"])
            assert f, ln
            groups[m["event"]] = set(f.groupdict())
    # The same fields as the real lines give, for each event both have.
    real = {}
    for ln in _real_lines():
        m = LINE.match(ln)
        real[m["event"]] = set(FIELDS[m["event"]].match(m["fields"]).groupdict())
    assert set(groups) == set(FIELDS)
    assert groups == {k: real[k] for k in groups}
    times = [float(LINE.match(ln)["time"]) for ln in lines]
    assert times == sorted(times) and times[-1] > 0


def test_text_trace_is_the_jsonl_trace_formatted(tmp_path: Path) -> None:
    from types import MappingProxyType

    jsonl, text = tmp_path / "t.jsonl", tmp_path / "t.txt"
    assert main(["run", "--trace", str(jsonl), HELLO]) == 1
    assert main(["run", "--trace", str(text), "--trace-format", "text", HELLO]) == 1
    expected = []
    for ln in jsonl.read_text().splitlines():
        d = json.loads(ln)
        if d["kind"] == "insn_run":
            continue
        keys = ("seq", "time", "layer", "source", "kind")
        ev = Event(*(d[k] for k in keys),
                   MappingProxyType({k: v for k, v in d.items() if k not in keys}))
        line = format_line(ev)
        if line is not None:
            expected.append(line)
    assert text.read_text().splitlines() == expected


# -- vmsim stats TRACEFILE ----------------------------------------------------------------------

@pytest.mark.parametrize("paging", ["ept", "shadow"])
def test_stats_of_a_trace_is_what_stats_printed(tmp_path: Path, capsys, paging: str) -> None:
    trace = tmp_path / "t.jsonl"
    guest = str(ROOT / "sample_guests" / "paging.asm")
    main(["run", "--trace", str(trace), "--stats", "--paging", paging, guest])
    printed = capsys.readouterr().err
    assert "VM-EXIT" in printed and "Samples%" in printed
    assert main(["stats", str(trace)]) == 0
    out = capsys.readouterr()
    assert out.out == printed and out.err == ""


def test_stats_refuses_what_is_not_a_trace(tmp_path: Path, capsys) -> None:
    trace = tmp_path / "t.jsonl"
    main(["run", "--trace", str(trace), HELLO])
    capsys.readouterr()
    lines = trace.read_text().splitlines()
    cases = {
        "broken.jsonl": "\n".join([*lines[:5], '{"seq": 6, "kind": "kvm_exit"', *lines[6:]]),
        "old.jsonl": "\n".join([*lines[:3], json.dumps({**json.loads(lines[3]), "kind": "vmexit"})]),
        "fields.jsonl": "\n".join([*lines[:2], json.dumps({"seq": 3, "time": 0, "layer": "hw",
                                                           "source": "vcpu0", "kind": "kvm_exit"})]),
        "empty.jsonl": "",
    }
    where = {"broken.jsonl": 6, "old.jsonl": 4, "fields.jsonl": 3, "empty.jsonl": 1}
    for name, text in cases.items():
        p = tmp_path / name
        p.write_text(text)
        assert main(["stats", str(p)]) == 2
        out = capsys.readouterr()
        assert out.out == ""
        err = out.err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"vmsim: {p}:{where[name]}: "), err
    png = tmp_path / "image.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    assert main(["stats", str(png)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"vmsim: {png}:1: "), err
    assert main(["stats", str(tmp_path / "missing.jsonl")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_stats_of_a_trace_cut_short_says_what_it_lacks(tmp_path: Path, capsys) -> None:
    trace = tmp_path / "t.jsonl"
    main(["run", "--trace", str(trace), "--stats", HELLO])
    printed = capsys.readouterr().err
    lines = trace.read_text().splitlines()
    assert json.loads(lines[-1])["kind"] == "run_end"
    trace.write_text("\n".join(lines[:-1]) + "\n")
    assert main(["stats", str(trace)]) == 0
    out = capsys.readouterr().out
    table = printed.split("\nGuest instructions:")[0]
    assert out.startswith(table) and "not in the trace" in out
