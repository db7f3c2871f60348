"""The session facade: stepping at each granularity, on the simulated stack."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmsim.session import Session
from vmsim.vmm.devices.vga import screen_text

HELLO = str(Path(__file__).resolve().parents[1] / "sample_guests" / "hello.asm")


def test_step_instruction_executes_exactly_one() -> None:
    s = Session(HELLO)
    cpu = s.cpus[0]
    eips = []
    for _ in range(5):
        s.step_instruction()
        eips.append(cpu.eip)
    assert s.instructions == 5
    # hello.asm: jmp entry; mov esp, ...; lgdt [...]; jmp 0x08:...; mov ax, 0x10
    assert len(set(eips)) == 5


def test_step_to_next_vmexit_then_userspace_exit() -> None:
    s = Session(HELLO)
    out = s.step_vmexit()
    last = out.events[-1]
    assert last.kind == "kvm_exit"
    # The very first fetch finds no EPT mapping: an EPT violation for the entry point's
    # page, qualification fetch (bit 2) | guest-linear valid (7) | final translation (8).
    assert (last["exit_reason"], last["info1"]) == ("EPT_VIOLATION", 0x184)
    assert last["guest_physical_address"] == 0x100000
    while last["exit_reason"] != "IO_INSTRUCTION":
        last = s.step_vmexit().events[-1]
    # putc's IN from LSR (0x3FD): qualification 0x03FD0008 (SDM: IN, port in DX).
    assert last["info1"] == 0x03FD0008
    out = s.step_userspace_exit()
    kinds = [e.kind for e in out.events]
    last = out.events[kinds.index("kvm_userspace_exit")]
    assert last["reason"] == "KVM_EXIT_IO"
    # The device has not answered yet: QEMU dispatches after KVM_RUN has returned.
    assert (last["direction"], last["port"], last["data"]) == ("in", 0x3FD, None)
    assert kinds[kinds.index("kvm_userspace_exit") + 1] == "kvm_run_exit"
    # Then one event at a time: QEMU takes the BQL, the device answers, the BQL is let go.
    lock = s.step_event().events
    assert [(e.kind, e["action"]) for e in lock] == [("bql", "lock")]
    answer = s.step_event().events
    assert [(e.source, e["address"], e["value"]) for e in answer] == [("serial0", 0x3FD, 0x60)]
    assert s.registers()["EAX"] & 0xFF != 0x60  # the guest's AL gets it at the VM entry
    unlock = s.step_event().events
    assert [(e.kind, e["action"]) for e in unlock] == [("bql", "unlock")]


def test_step_event_returns_one_event_at_a_time() -> None:
    s = Session(HELLO)
    kinds = []
    for _ in range(12):
        out = s.step_event()
        assert len(out.events) == 1
        kinds.append(out.events[0].kind)
    # The first VM entry comes after QEMU's KVM_RUN, each its own step.
    assert "kvm_entry" in kinds
    assert kinds.index("kvm_vcpu_ioctl") < kinds.index("kvm_entry")


def test_run_to_the_end_and_views() -> None:
    s = Session(HELLO)
    outcome = s.run()
    assert outcome.finished and outcome.exit_status == 1
    assert bytes(s.serial) == b"Hello from a vmsim guest!\n"
    # What a display refresh draws: the VGA model, and the stores kvm.ko still holds in
    # its coalesced-MMIO ring (QEMU's vga_update_display flushes them first).
    assert screen_text(s.machine.vga_display()).startswith("Hello from a vmsim guest!")
    assert s.virtual_time > s.instructions > 0


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown backend"):
        Session(HELLO, backend="xen")


def test_a_vm_s_options_are_refused_on_the_bare_cpu() -> None:
    from vmsim.vmm.machine import MachineConfig

    with pytest.raises(ValueError, match=r"needs a VM \(--backend sim or kvm\)"):
        Session(HELLO, backend="bare", config=MachineConfig(smp=2))


def test_the_bare_cpu_has_no_coalesced_mmio_to_use() -> None:
    """The default machine coalesces the VGA window (kvm.ko's ring); the bare CPU, with
    no kvm.ko, writes every store to the screen itself, and shows the same."""
    bare = Session(HELLO, backend="bare")
    assert bare.run().exit_status == 1
    vm = Session(HELLO)
    vm.run()
    assert vm.machine.coalesced.ring is not None
    assert bytes(bare.machine.vga.buffer) == vm.machine.vga_display()


# -- run_for, breakpoints and views (front ends) ------------------------------------------------
def _line(needle: str) -> int:
    for n, text in enumerate(Path(HELLO).read_text().splitlines(), 1):
        if needle in text:
            return n
    raise AssertionError(needle)


def test_run_for_stops_at_an_address_breakpoint_and_resumes_past_it() -> None:
    s = Session(HELLO)
    addr = s.image.address_of_line(_line("mov dx, DEBUG_EXIT"))
    s.breakpoints.addresses.add(addr)
    out = s.run_for(None)
    assert not out.finished and out.breakpoint == f"address {addr:#x}"
    assert s.cpus[0].eip == addr
    out = s.run_for(None)  # not stuck on the breakpoint it stopped at
    assert out.finished and out.exit_status == 1
    assert bytes(s.serial) == b"Hello from a vmsim guest!\n"


def test_run_for_exit_reason_and_port_breakpoints() -> None:
    s = Session(HELLO)
    s.breakpoints.exit_reasons.add("EPT_MISCONFIG")
    out = s.run_for(None)
    assert out.breakpoint == "exit EPT_MISCONFIG" and s.last_exit()["reason"] == "EPT_MISCONFIG"
    s.breakpoints.exit_reasons.clear()
    s.breakpoints.ports.add(0x501)
    out = s.run_for(None)
    assert out.breakpoint == "port 0x501" and not out.finished


def test_run_for_is_time_boxed_in_an_endless_loop(monkeypatch) -> None:
    """run_for looks at the clock between batches and stops once the box is used up. The
    clock is a fake one that advances 1 ms per reading, so the bound is checked exactly,
    not against a busy machine's wall time."""
    import time

    from vmsim.asm import assemble

    s = Session(assemble("bits 32\norg 0x100000\njmp $\n", "loop.asm"))
    s.run_for(None, instructions=10)  # one-off work (first decode, first VM entry) done
    readings = []

    def fake_clock() -> float:
        readings.append(None)
        return len(readings) * 0.001

    monkeypatch.setattr(time, "perf_counter", fake_clock)
    before = s.instructions
    out = s.run_for(0.02)
    monkeypatch.undo()
    assert not out.finished and out.reason == "time"
    assert s.instructions > before
    assert len(readings) <= 21 + 1  # the deadline, then one reading per batch up to it
    out = s.run_for(None, instructions=1000)
    assert out.reason == "instructions" and s.instructions > 0
    # A step looking for an event that never comes gives up without finishing.
    out = s.step_vmexit(max_steps=3)
    assert not out.finished and out.reason == "max steps"


def test_views_are_plain_data() -> None:
    from vmsim.session import eflags_decoded

    s = Session(HELLO)
    s.step_vmexit()
    regs = s.registers()
    assert regs["EIP"] == s.cpus[0].eip and regs["ESP"] == s.cpus[0].r[4]
    assert dict(eflags_decoded(0x46))["ZF"]
    dis = s.disassembly(2, 3)
    assert any(addr == s.cpus[0].eip for addr, _, _ in dis)
    areas = {a for a, *_ in s.vmcs_fields()}
    assert areas == {"guest state", "host state", "control", "exit information"}
    assert s.last_exit()["reason"] == "EPT_VIOLATION"
    assert s.guest_page_tables() == []  # paging off
    assert s.read_linear(s.image.origin, 2) == bytes(s.image.data[:2])
    s.run()
    assert s.ept_entries() and s.shadow_pages() == []


def test_disassembly_is_the_images_instructions_around_eip() -> None:
    """The lines start at the fourth-last of the image's own line starts before EIP (x86
    does not decode backwards) and go on decoding forward through EIP; each line's bytes
    and text are what iced-x86 makes of the image's bytes there; they follow EIP as the
    guest runs."""
    import iced_x86

    s = Session(HELLO)
    img = s.image
    starts = sorted({sl.address for sl in img.lines if sl.size})
    fmt = iced_x86.Formatter(iced_x86.FormatterSyntax.NASM)
    seen = set()
    for _ in range(12):
        s.step_instruction()
        eip = s.cpus[0].eip
        dis = s.disassembly(4, 5)
        earlier = [a for a in starts if a < eip][-4:]
        assert dis[0][0] == (earlier[0] if earlier else eip)
        assert eip in [a for a, _, _ in dis]
        for k, (addr, raw, text) in enumerate(dis):
            if k and addr != eip:  # (decoding forward, resynchronised at EIP)
                assert addr == dis[k - 1][0] + len(bytes.fromhex(dis[k - 1][1])), hex(addr)
            data = bytes(img.data[addr - img.origin:addr - img.origin + 15])
            ins = iced_x86.Decoder(32, data, ip=addr).decode()
            assert (raw, text) == (data[:ins.len].hex(" "), fmt.format(ins)), hex(addr)
        seen.add(eip)
    assert len(seen) > 8


def test_shadow_views_show_the_guest_cr3_and_shadow_pages() -> None:
    from pathlib import Path as P

    guest = str(P(HELLO).with_name("address_spaces.asm"))
    s = Session(guest, paging="shadow")
    s.run()
    assert s.shadow_pages()
    e = Session(guest)
    e.run()
    assert s.registers()["CR3"] == e.registers()["CR3"]  # the guest's value, not the shadow root
    assert s.guest_page_tables() == e.guest_page_tables()


def test_serial_output_kept_is_bounded(monkeypatch) -> None:
    """A guest that writes without end must not grow the session's memory without end:
    the session keeps the newest bytes (at least SERIAL_KEEP) and counts them all."""
    from vmsim.asm import assemble

    monkeypatch.setattr(Session, "SERIAL_KEEP", 64)
    src = """bits 32
org 0x100000
        mov dx, 0x3f8
        mov ecx, 1000
        xor eax, eax
again:  out dx, al
        inc eax
        loop again
        hlt
"""
    s = Session(assemble(src, "chatty.asm"))
    assert s.run().halted
    assert s.serial_total == 1000
    assert 64 <= len(s.serial) <= 128
    assert bytes(s.serial) == bytes(i & 0xFF for i in range(1000))[-len(s.serial):]


@pytest.mark.parametrize("backend", ["sim", "bare"])
def test_stepping_into_an_unmodelled_mode_says_why(backend: str) -> None:
    """Single-stepping ends as run() does: clearing CR0.PE names real mode (the GUI shows
    this), on the simulated stack and on the bare CPU alike."""
    from vmsim.asm import assemble

    src = "bits 32\norg 0x100000\n mov eax, cr0\n and eax, 0xfffffffe\n mov cr0, eax\n hlt\n"
    s = Session(assemble(src, "pe.asm"), backend)
    steps = [s.step_instruction() for _ in range(4)]
    assert [o.finished for o in steps] == [False, False, True, True]
    assert "real mode" in steps[2].unsupported and steps[3] is steps[2]
    assert s.registers()["EIP"] == 0x100006  # at the MOV to CR0, which did not complete
