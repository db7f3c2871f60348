"""The 16550A UART (QEMU hw/char/serial.c) and the I/O bus that splits wide accesses.

Three levels: the device alone (register rules as QEMU's serial.c has them), the bus (a
16- or 32-bit access to a device that implements 1-byte accesses becomes byte accesses,
as QEMU's memory.c access_with_adjusted_size does), and one guest that prints what it
reads, run on vmsim's bare CPU, through the whole stack (simulated kvm.ko, EPT and
shadow paging), on qemu-system-i386 and, for the exits userspace sees, on the host's KVM.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from vmsim.asm.image import GuestImage
from vmsim.bare import BareMetal
from vmsim.events import EventStream
from vmsim.vmm.bus import IoBus
from vmsim.vmm.devices.serial import Serial16550
from vmsim.vmm.machine import Machine, MachineConfig

RBR, IER, IIR, LCR, MCR, LSR, MSR, SCR = range(8)
THR, FCR = RBR, IIR


def uart(rx: bytes = b"") -> tuple[Serial16550, bytearray, list[bool]]:
    out = bytearray()
    levels: list[bool] = []
    return Serial16550(out.extend, rx, irq=levels.append), out, levels


# -- the device ---------------------------------------------------------------------------------

def test_reset_values_are_qemus() -> None:
    # serial_reset: IIR no interrupt, MCR OUT2, LSR THRE|TEMT, MSR DCD|DSR|CTS, 9600 baud.
    s, _, _ = uart()
    assert [s.read(r, 1) for r in (IIR, IER, LCR, MCR, LSR, MSR, SCR)] == [
        0x01, 0x00, 0x00, 0x08, 0x60, 0xB0, 0x00]
    s.write(LCR, 1, 0x80)
    assert (s.read(0, 1), s.read(1, 1)) == (0x0C, 0x00)


def test_thr_empty_interrupt_pends_clears_on_iir_read_and_returns_after_a_byte() -> None:
    s, out, levels = uart()
    s.write(IER, 1, 0x02)  # THRI on, transmitter empty: THR-empty pending at once
    assert s.irq_pending and levels[-1] is True
    assert s.read(IIR, 1) == 0x02
    assert s.read(IIR, 1) == 0x01  # the read that showed it acknowledged it
    assert not s.irq_pending and levels[-1] is False
    s.write(THR, 1, ord("x"))  # writing THR clears it; sending the byte brings it back
    assert out == b"x"
    assert s.read(IIR, 1) == 0x02
    assert s.read(LSR, 1) == 0x60


def test_turning_thri_on_again_rearms_it() -> None:
    s, _, _ = uart()
    s.write(IER, 1, 0x02)
    assert s.read(IIR, 1) == 0x02
    s.write(IER, 1, 0x00)
    assert s.read(IIR, 1) == 0x01
    s.write(IER, 1, 0x02)
    assert s.read(IIR, 1) == 0x02


def test_thri_masked_by_ier_is_not_reported() -> None:
    s, _, _ = uart()
    s.write(THR, 1, ord("y"))
    assert s.read(IIR, 1) == 0x01
    assert not s.irq_pending


def test_priority_line_status_then_data_then_thr_empty() -> None:
    s, out, _ = uart()
    s.write(MCR, 1, 0x1F)  # loopback
    s.write(IER, 1, 0x0F)
    s.write(THR, 1, ord("B"))
    s.write(THR, 1, ord("C"))  # RBR still full: overrun
    assert out == b""  # loopback: nothing goes out
    assert s.read(IIR, 1) == 0x06  # receiver line status (OE)
    assert s.read(LSR, 1) == 0x63  # DR OE THRE TEMT; reading clears OE
    assert s.read(IIR, 1) == 0x04  # received data
    assert s.read(RBR, 1) == ord("C")
    assert s.read(IIR, 1) == 0x02  # THR empty
    assert s.read(IIR, 1) == 0x01


@pytest.mark.parametrize(("mcr", "msr"), [
    (0x10, 0x00), (0x11, 0x20), (0x12, 0x10), (0x14, 0x40), (0x18, 0x80), (0x1F, 0xF0)],
    ids=["none", "dtr-dsr", "rts-cts", "out1-ri", "out2-dcd", "all"])
def test_loopback_msr_reflects_mcr_outputs(mcr: int, msr: int) -> None:
    s, _, _ = uart()
    s.write(MCR, 1, mcr)
    assert s.read(MSR, 1) == msr
    s.write(MCR, 1, mcr & 0x0F)  # out of loopback: the line's status again
    assert s.read(MSR, 1) == 0xB0


def test_loopback_echoes_thr_into_rbr_and_rbr_keeps_the_last_byte() -> None:
    s, out, _ = uart()
    assert s.read(RBR, 1) == 0x00  # nothing ever received
    s.write(MCR, 1, 0x10)
    s.write(THR, 1, ord("A"))
    assert out == b"" and s.transmitted == b""
    assert s.read(LSR, 1) == 0x61
    assert s.read(RBR, 1) == ord("A")
    assert s.read(LSR, 1) == 0x60
    assert s.read(RBR, 1) == ord("A")  # no new data: the last byte again, not 0


def test_line_input_arrives_one_byte_at_a_time_without_fifo() -> None:
    s, _, _ = uart(b"hi")
    assert s.read(LSR, 1) & 0x03 == 0x01  # DR, no overrun: the line waits for room
    assert s.read(RBR, 1) == ord("h")
    assert s.read(LSR, 1) & 0x01  # the next byte came in once RBR was read
    assert s.read(RBR, 1) == ord("i")
    assert s.read(LSR, 1) == 0x60
    assert s.read(RBR, 1) == ord("i")
    s.feed(b"!")
    assert s.read(RBR, 1) == ord("!")


def test_loopback_cuts_the_receiver_off_the_line() -> None:
    s, _, _ = uart()
    s.write(MCR, 1, 0x10)
    s.feed(b"z")
    assert s.read(LSR, 1) & 1 == 0
    s.write(MCR, 1, 0x00)
    assert s.read(LSR, 1) & 1 == 1
    assert s.read(RBR, 1) == ord("z")


def test_fifo_mode_iir_bits_and_an_empty_fifo_reads_zero() -> None:
    s, _, _ = uart()
    s.write(MCR, 1, 0x10)
    s.write(IER, 1, 0x02)
    s.write(FCR, 1, 0x07)  # enable, clear both: THR empty pending again
    assert s.read(IIR, 1) == 0xC2
    assert s.read(IIR, 1) == 0xC1
    s.write(THR, 1, ord("F"))
    s.write(THR, 1, ord("G"))
    assert [s.read(RBR, 1), s.read(RBR, 1), s.read(LSR, 1), s.read(RBR, 1)] == [
        ord("F"), ord("G"), 0x60, 0x00]
    s.write(FCR, 1, 0x00)
    assert s.read(IIR, 1) == 0x02


def test_fifo_trigger_level_gates_the_data_interrupt() -> None:
    s, _, _ = uart()
    s.write(MCR, 1, 0x10)
    s.write(FCR, 1, 0x41)  # FIFO on, trigger at 4 bytes
    s.write(IER, 1, 0x01)
    for b in b"abc":
        s.write(THR, 1, b)
    assert s.read(IIR, 1) == 0xC1
    s.write(THR, 1, ord("d"))
    assert s.read(IIR, 1) == 0xC4


def test_msr_and_lsr_ignore_writes_scr_keeps_them() -> None:
    s, _, _ = uart()
    s.write(LSR, 1, 0)
    s.write(MSR, 1, 0)
    s.write(SCR, 1, 0x5A)
    assert (s.read(LSR, 1), s.read(MSR, 1), s.read(SCR, 1)) == (0x60, 0xB0, 0x5A)


# -- the bus -------------------------------------------------------------------------------------

class Recorder:
    """A device that logs its accesses and answers offset + 0x10 per byte."""

    def __init__(self) -> None:
        self.log: list[tuple[str, int, int, int]] = []

    def read(self, offset: int, size: int) -> int:
        self.log.append(("r", offset, size, 0))
        return int.from_bytes(bytes(offset + 0x10 + i for i in range(size)), "little")

    def write(self, offset: int, size: int, value: int) -> None:
        self.log.append(("w", offset, size, value))


def bus(sizes: tuple[int, ...] = (1,)) -> tuple[IoBus, Recorder, list]:
    ev = EventStream()
    unclaimed: list = []
    ev.subscribe(unclaimed.append, ["io_unclaimed"])
    b = IoBus(ev)
    dev = Recorder()
    b.attach(0x3F8, 8, dev, "dev", sizes=sizes)
    return b, dev, unclaimed


def test_a_word_access_to_a_byte_device_is_two_byte_accesses_low_first() -> None:
    b, dev, unclaimed = bus()
    assert b.read(0x3F8, 2) == 0x1110
    b.write(0x3FA, 2, 0xBBAA)
    assert dev.log == [("r", 0, 1, 0), ("r", 1, 1, 0), ("w", 2, 1, 0xAA), ("w", 3, 1, 0xBB)]
    assert unclaimed == []


def test_a_dword_access_to_a_byte_device_is_four_byte_accesses() -> None:
    b, dev, _ = bus()
    assert b.read(0x3FC, 4) == 0x17161514
    assert [e[1] for e in dev.log] == [4, 5, 6, 7]


def test_an_access_past_the_devices_end_goes_to_nobody_for_the_rest() -> None:
    b, dev, unclaimed = bus()
    assert b.read(0x3FF, 2) == 0xFF17
    b.write(0x3FE, 4, 0x44332211)
    assert dev.log == [("r", 7, 1, 0), ("w", 6, 1, 0x11), ("w", 7, 1, 0x22)]
    assert [(e["address"], e["size"], e["is_write"]) for e in unclaimed] == [
        (0x400, 1, False), (0x400, 2, True)]


def test_an_access_that_starts_unclaimed_reaches_the_device_after() -> None:
    b, dev, unclaimed = bus()
    assert b.read(0x3F6, 4) == 0x1110FFFF
    assert dev.log == [("r", 0, 1, 0), ("r", 1, 1, 0)]
    assert [(e["address"], e["size"]) for e in unclaimed] == [(0x3F6, 2)]


def test_a_device_that_implements_the_size_gets_one_access() -> None:
    b, dev, _ = bus((1, 2, 4))
    assert b.read(0x3F8, 4) == 0x13121110
    b.write(0x3FC, 2, 0x1234)
    assert dev.log == [("r", 0, 4, 0), ("w", 4, 2, 0x1234)]


def test_a_word_device_gets_words_and_its_odd_byte_goes_to_nobody() -> None:
    b, dev, unclaimed = bus((2,))
    assert b.read(0x3F8, 4) == 0x13121110
    assert b.read(0x3F8, 1) == 0xFF  # it implements no byte access
    assert dev.log == [("r", 0, 2, 0), ("r", 2, 2, 0)]
    assert [(e["address"], e["size"]) for e in unclaimed] == [(0x3F8, 1)]


def test_nothing_answers_beyond_port_0xffff() -> None:
    ev = EventStream()
    b = IoBus(ev)
    dev = Recorder()
    b.attach(0xFFFE, 2, dev, "top")
    assert b.read(0xFFFE, 4) == 0xFFFF1110
    assert dev.log == [("r", 0, 2, 0)]


def test_machine_uart_word_access_reaches_both_registers() -> None:
    m = Machine()
    m.address_space_io_write(0x3FB, 1, 0x80)  # DLAB
    m.address_space_io_write(0x3F8, 2, 0x0180)  # divisor 0x0180: DLL then DLM
    assert m.address_space_io_read(0x3F8, 2) == 0x0180
    assert m.serial.divider == 0x0180


# -- one guest, everywhere -----------------------------------------------------------------------
# It reads UART registers into a log (loopback on, interrupts enabled, FIFOs on and off,
# 16- and 32-bit accesses) and only then prints the log, one line per group, in hex.

GUEST = r"""
bits 32
org 0x100000
COM1 equ 0x3F8
start:  jmp entry
        align 4
mb:     dd 0x1BADB002, 0x00010000, -(0x1BADB002 + 0x00010000)   ; multiboot, address fields
        dd mb, 0x100000, 0, 0, entry
%macro RD 1
        mov dx, COM1 + %1
        in al, dx
        movzx eax, al
        stosw
%endmacro
%macro WR 2
        mov dx, COM1 + %1
        mov al, %2
        out dx, al
%endmacro
%macro END_GROUP 0
        mov ax, 0xFFFF
        stosw
%endmacro
entry:  mov esp, 0x90000
        cld
        mov edi, log
        RD 2
        RD 1
        RD 3
        RD 4
        RD 5
        RD 6
        RD 7
        END_GROUP
        WR 1, 0x02
        RD 2
        RD 2
        WR 1, 0x00
        RD 2
        WR 1, 0x02
        RD 2
        RD 2
        END_GROUP
        WR 4, 0x10
        RD 6
        WR 4, 0x11
        RD 6
        WR 4, 0x12
        RD 6
        WR 4, 0x14
        RD 6
        WR 4, 0x18
        RD 6
        WR 4, 0x1F
        RD 6
        WR 0, 'A'
        RD 2
        RD 5
        RD 0
        RD 5
        RD 0
        RD 2
        END_GROUP
        WR 1, 0x0F
        WR 0, 'B'
        WR 0, 'C'
        RD 2
        RD 5
        RD 2
        RD 0
        RD 2
        RD 2
        END_GROUP
        WR 0, 'D'
        mov dx, COM1
        in ax, dx
        call log_ax
        mov ax, 0x0245
        out dx, ax
        mov dx, COM1 + 4
        in ax, dx
        call log_ax
        mov dx, COM1
        in eax, dx
        call log_ax
        shr eax, 16
        call log_ax
        mov dx, COM1 + 6
        mov ax, 0x5A00
        out dx, ax
        in ax, dx
        call log_ax
        END_GROUP
        WR 1, 0x02
        WR 2, 0x07
        RD 2
        RD 2
        WR 0, 'F'
        WR 0, 'G'
        RD 5
        RD 0
        RD 0
        RD 5
        RD 0
        WR 2, 0x00
        RD 2
        RD 0
        END_GROUP
        WR 3, 0x80
        RD 0
        RD 1
        WR 0, 0x01
        WR 1, 0x00
        RD 0
        WR 3, 0x03
        RD 3
        RD 1
        END_GROUP
        WR 4, 0x08
        WR 1, 0x00
        mov ax, 0xFFFE
        stosw
        mov esi, log
.next:  lodsw
        cmp ax, 0xFFFE
        je .done
        cmp ax, 0xFFFF
        jne .byte
        mov al, 10
        call putc
        jmp .next
.byte:  call puthex8
        mov al, ' '
        call putc
        jmp .next
.done:  mov dx, 0x501
        mov al, 0
        out dx, al
        hlt
log_ax: push eax
        movzx eax, al
        stosw
        mov eax, [esp]
        movzx eax, ah
        stosw
        pop eax
        ret
puthex8: push eax
        shr al, 4
        call nib
        mov eax, [esp]
        and al, 0x0F
        call nib
        pop eax
        ret
nib:    add al, '0'
        cmp al, '9'
        jbe putc
        add al, 7
putc:   push edx
        push eax
        mov dx, COM1 + 5
.w:     in al, dx
        test al, 0x20
        jz .w
        pop eax
        mov dx, COM1
        out dx, al
        pop edx
        ret
        align 4
log:    times 256 dw 0
"""

# What QEMU's serial.c gives, line by line (and what qemu-system-i386 7.2 printed).
EXPECTED = "\n".join([
    # After reset: IIR none, IER 0, LCR 0, MCR OUT2, LSR THRE|TEMT, MSR DCD|DSR|CTS, SCR 0.
    "01 00 00 08 60 B0 00 ",
    # IER.THRI on: THR empty (02); read acknowledges it (01, 01); IER 0 then THRI again
    # re-arms it (01, then 02, 01).
    "02 01 01 02 01 ",
    # Loopback: MSR = MCR outputs (none, DSR, CTS, RI, DCD, all); THR 'A' comes back: IIR
    # THR empty again, LSR DR, RBR 'A', LSR no DR, RBR 'A' again, IIR acknowledged.
    "00 20 10 40 80 F0 02 61 41 60 41 01 ",
    # IER all: 'B' then 'C' unread: overrun -> IIR line status 06, LSR 63 (reading clears
    # OE), IIR data 04, RBR 'C', IIR THR empty 02, then none.
    "06 63 04 43 02 01 ",
    # in ax,0x3F8: RBR 'D', IER 0F; out ax=0x0245: THR 'E' then IER 02; in ax,0x3FC: MCR,
    # LSR; in eax,0x3F8: RBR 'E', IER, IIR THR empty, LCR; out ax at 0x3FE: MSR ignored,
    # SCR 5A; in ax: MSR (loopback, all outputs) F0, SCR 5A.
    "44 0F 1F 61 45 02 02 00 F0 5A ",
    # FIFO on (FCR 07): IIR C2 then C1; 'F' 'G' into the FIFO: LSR 61, RBR F, G, LSR 60,
    # an empty FIFO reads 0; FIFO off: THR empty pending (02) and RBR is the last byte
    # received without the FIFO, 'E'.
    "C2 C1 61 46 47 60 00 02 45 ",
    # DLAB: divisor 0x000C (9600 baud), DLL written 01 reads back; LCR 03; IER 02.
    "0C 00 01 03 02 ",
    "",
])


@pytest.fixture(scope="module")
def guest_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    exe = shutil.which("nasm")
    if exe is None:
        pytest.skip("nasm is not installed (Debian package nasm)")
    d = tmp_path_factory.mktemp("uart")
    (d / "uart.asm").write_text(GUEST)
    subprocess.run([exe, "-f", "bin", "-o", str(d / "uart.bin"), str(d / "uart.asm")],
                   check=True, capture_output=True, timeout=60)
    return d / "uart.bin"


def test_guest_on_the_bare_cpu(guest_bin: Path) -> None:
    out = bytearray()
    m = Machine(MachineConfig(), serial_out=out.extend)
    m.load_image(GuestImage(guest_bin.read_bytes(), origin=0x100000))
    res = BareMetal(m).run(1_000_000)
    assert res.exit_status == 1
    assert out.decode() == EXPECTED


@pytest.mark.parametrize("paging", ["ept", "shadow"])
def test_guest_through_the_whole_stack(guest_bin: Path, paging: str) -> None:
    from tests.stack.stackrun import run_sim

    run = run_sim(guest_bin, paging)
    assert run.status == 1, run.detail
    assert run.serial.decode() == EXPECTED
    # KVM does not split: the 16-bit OUT is one KVM_EXIT_IO of size 2 (the VMM splits it).
    wide = [e for e in run.exits if e.get("reason") == "KVM_EXIT_IO" and e["size"] > 1]
    assert [(e["direction"], e["port"], e["size"], e["count"], e["data"]) for e in wide] == [
        ("in", 0x3F8, 2, 1, "440f"), ("out", 0x3F8, 2, 1, "4502"), ("in", 0x3FC, 2, 1, "1f61"),
        ("in", 0x3F8, 4, 1, "45020200"), ("out", 0x3FE, 2, 1, "005a"),
        ("in", 0x3FE, 2, 1, "f05a")]


def test_guest_on_qemu(guest_bin: Path) -> None:
    exe = shutil.which("qemu-system-i386")
    if exe is None:
        pytest.skip("qemu-system-i386 is not installed (Debian package qemu-system-x86)")
    p = subprocess.run([exe, "-M", "pc", "-m", "16", "-display", "none", "-nodefaults",
                        "-device", "VGA", "-serial", "stdio", "-device",
                        "isa-debug-exit,iobase=0x501,iosize=1", "-kernel", str(guest_bin),
                        "-no-reboot"], capture_output=True, timeout=20, stdin=subprocess.DEVNULL)
    assert p.returncode == 1, p.stderr.decode(errors="replace")
    assert p.stdout.decode() == EXPECTED


def test_guest_on_the_host_kvm_gives_the_same_exits(guest_bin: Path, tmp_path: Path) -> None:
    from tests.stack.stackrun import first_difference, host_kvm_problem, run_kvm, run_sim

    problem = host_kvm_problem()
    if problem:
        pytest.skip(problem)
    sim, kvm = run_sim(guest_bin), run_kvm(guest_bin, tmp_path)
    diff = first_difference(sim.exits, kvm.exits)
    assert not diff, diff
    assert kvm.serial.decode() == EXPECTED and kvm.status == 1, kvm.detail
