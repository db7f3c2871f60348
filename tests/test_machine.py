"""The machine's devices and buses, seen from a guest running on the bare CPU."""

from __future__ import annotations

from vmsim.asm.image import GuestImage
from vmsim.bare import BareMetal
from vmsim.events import EventStream
from vmsim.hw.cpu import StopReason
from vmsim.vmm.machine import Machine, MachineConfig

# Each snippet is assembled by nasm (the oracle for encodings) and run at 0x100000.
PROLOGUE = "bits 32\norg 0x100000\n"


def run(nasm, body: str, serial_in: bytes = b"", events: EventStream | None = None):
    out = bytearray()
    m = Machine(MachineConfig(serial_in=serial_in), events=events, serial_out=out.extend)
    m.load_image(GuestImage(nasm(PROLOGUE + body), origin=0x100000))
    bare = BareMetal(m, events)
    result = bare.run(100_000)
    return m, bare.cpu, result, bytes(out)


def test_serial_output_and_idle_lsr(nasm) -> None:
    _, cpu, result, out = run(nasm, """
        mov dx, 0x3FD
        in al, dx            ; LSR when idle: THRE | TEMT
        mov bl, al
        mov dx, 0x3F8
        mov al, 'o'
        out dx, al
        mov al, 'k'
        out dx, al
        hlt
    """)
    assert result.reason is StopReason.HLT
    assert out == b"ok"
    assert cpu.r[3] & 0xFF == 0x60


def test_serial_input_sets_data_ready(nasm) -> None:
    _, cpu, _, _ = run(nasm, """
        mov dx, 0x3FD
        in al, dx
        mov bl, al           ; LSR with a byte waiting: DR set
        mov dx, 0x3F8
        in al, dx
        mov cl, al           ; the byte
        mov dx, 0x3FD
        in al, dx
        mov bh, al           ; LSR after it was read
        hlt
    """, serial_in=b"Z")
    assert cpu.r[3] & 0xFF == 0x61
    assert cpu.r[1] & 0xFF == ord("Z")
    assert (cpu.r[3] >> 8) & 0xFF == 0x60


def test_debug_exit_status_is_odd_and_stops(nasm) -> None:
    m, cpu, result, _ = run(nasm, """
        mov dx, 0x501
        mov al, 0x21
        out dx, al
        mov eax, 0xdead      ; never reached
        hlt
    """)
    assert result.reason is StopReason.REQUESTED
    assert m.exit_status == (0x21 << 1) | 1
    assert cpu.r[0] != 0xDEAD


def test_unclaimed_port_reads_all_ones_and_is_reported(nasm) -> None:
    ev = EventStream()
    seen = []
    ev.subscribe(seen.append, ["io_unclaimed"])
    _, cpu, _, _ = run(nasm, """
        mov dx, 0x1234
        in eax, dx
        mov ebx, eax
        in al, 0x80
        out 0x80, al
        hlt
    """, events=ev)
    assert cpu.r[3] == 0xFFFFFFFF
    assert cpu.r[0] & 0xFF == 0xFF
    assert [(e["address"], e["size"], e["is_write"]) for e in seen] == [
        (0x1234, 4, False), (0x80, 1, False), (0x80, 1, True)]


def test_vga_text_buffer_is_mmio_that_reads_back(nasm) -> None:
    m, cpu, _, _ = run(nasm, """
        mov word [0xB8000], 0x1F48        ; 'H' white on blue
        mov byte [0xB8002], 'i'
        mov eax, [0xB8000]
        hlt
    """)
    assert m.vga.cell(0, 0) == (ord("H"), 0x1F)
    assert m.vga.text().startswith("Hi")
    assert cpu.r[0] & 0xFFFF == 0x1F48
    assert (cpu.r[0] >> 16) & 0xFF == ord("i")


def test_memory_hole_is_not_ram(nasm) -> None:
    # 0xA0000-0xB7FFF belongs to nobody here: reads all ones, writes vanish.
    _, cpu, _, _ = run(nasm, """
        mov dword [0xA0000], 0x12345678
        mov eax, [0xA0000]
        mov dword [0xC0000], 0x87654321   ; RAM again above the hole
        mov ebx, [0xC0000]
        hlt
    """)
    assert cpu.r[0] == 0xFFFFFFFF
    assert cpu.r[3] == 0x87654321


def test_entry_state_matches_the_contract() -> None:
    m = Machine()
    m.load_image(GuestImage(b"\xf4", origin=0x100000))
    cpu = BareMetal(m).cpu
    assert (cpu.eip, cpu.cr0, cpu.cr3, cpu.cr4, cpu.eflags) == (0x100000, 0x11, 0, 0, 0x2)
    assert cpu.r == [0, 0, 0, 0, 0x100000, 0, 0, 0]
    assert [s.selector for s in cpu.seg] == [0x10, 0x08, 0x10, 0x10, 0x10, 0x10]
    assert (cpu.gdtr, cpu.idtr) == ((0, 0), (0, 0))


def test_a_dword_write_to_a_one_port_debug_exit_passes_its_low_byte(nasm) -> None:
    # isa-debug-exit is attached with iosize=1 (as in the QEMU oracle command): QEMU's
    # memory API cuts the access at the region's end, so the device sees the low byte
    # (status (4 << 1) | 1 = 9, what qemu-system-i386 exits with) and 0x502-0x504 are nobody's.
    ev = EventStream()
    seen = []
    ev.subscribe(seen.append, ["io_unclaimed"])
    m, _, _, _ = run(nasm, """
        mov dx, 0x501
        mov eax, 0x01020304
        out dx, eax
        hlt
    """, events=ev)
    assert m.exit_status == 9
    assert [(e["address"], e["size"], e["is_write"]) for e in seen] == [(0x502, 3, True)]
