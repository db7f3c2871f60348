"""Issue 10's sample guests (sample_guests/timer.asm, apic.asm, smp.asm) on every runner.

- vmsim's assembler gives the bytes NASM gives (NASM is the encoding oracle);
- qemu-system-i386 (-M pc, one vCPU, TCG) prints the text derived below from the
  datasheets and the SDM, so the expected text is checked by an independent machine;
- `vmsim run` prints the same, byte for byte, in both --irqchip modes (timer), with the
  in-kernel APIC (apic), and for --smp 1, 2, 4, 8 (smp); the host's /dev/kvm gives the
  same totals for --smp 1 and 2 (smp only: the host's software KVM cannot run IRET).
Runs go through the command line, as a user starts them. Options that do not exist yet
(--irqchip, --smp) make their tests skip, with the reason.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import pytest

from tests.asm.oracle import NASM, first_difference, nasm_bin
from tests.guests.guestrun import QEMU_TIMEOUT, Outcome, qemu_path
from vmsim.asm.assembler import Assembler
from vmsim.asm.image import GuestImage
from vmsim.bare import BareMetal
from vmsim.hw.cpu import StopReason
from vmsim.vmm.machine import Machine, MachineConfig

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_guests"
GUESTS = ["timer", "apic", "smp"]
SUCCESS = 1  # isa-debug-exit status after the guest writes 0: (0 << 1) | 1
VMSIM_TIMEOUT = 600  # seconds; a hang fails the test instead of stopping the suite
BUDGET = "20000000"  # instructions: smp.asm --smp 8 needs 2.4 million; a spinning guest stops
IRQ_BUDGET = "1000000"  # timer.asm and apic.asm need about 8000 (they wait in HLT)

ADDS, LOCKED_ADDS = 100_000, 1_000  # per vCPU, as in smp.asm

EXPECTED: dict[str, str] = {
    # 8259A datasheet, "Reading the 8259A status": after initialization a read of the odd
    # port gives the IMR (OCW1 as written: only IRQ 0 open on the master, the slave shut);
    # OCW3 0x0B selects the ISR for reads of the even port: IR0 is in service from the
    # INTA until the non-specific EOI (OCW2 0x20), and nothing is after it. The handler
    # masks IRQ 0 at the tenth tick, so exactly 10 are taken. SDM Vol. 2 STI: interrupts
    # stay blocked until after the next instruction, so every tick arrives in the HLT and
    # its frame's EIP is the instruction after it (SDM HLT: resumes after the HLT), with
    # CS 0x08 and IF=1 in the pushed EFLAGS.
    "timer": "pic: vectors 0x20-0x2F, imr FE FF\n"
             "pit: channel 0, mode 2, reload 11932 (100 Hz)\n"
             + "".join(f"tick {i}\n" for i in range(1, 11))
             + "pic: isr 01 in the handler, 00 after the eoi\n"
               "timer: 10 ticks, 10 of them woke the hlt\n",
    # SDM Vol. 3A, APIC chapter: vCPU 0's APIC ID is 0 (ID register bits 31:24); the SVR
    # reads back 0x1FF as written (software enable, spurious vector 0xFF). APIC timer: in
    # one-shot mode the current count stops at 0 after the one interrupt; the LVT timer
    # reads back mask (bit 16), periodic (bit 17) and vector 0x41 = 0x00030041; a write of
    # 0 to the initial count stops the timer in both modes, and the current count reads 0.
    # A fixed interrupt's ISR bit is set from acceptance until the EOI: vector 0x42 is bit
    # 2 of ISR register 0x120 (vectors 64-95), so its low byte reads 04, then 00.
    "apic": "apic: id 0, svr 000001FF\n"
            "one-shot: 1 interrupt, then current count 00000000\n"
            "periodic: 5 ticks, then lvt timer 00030041, current count 00000000\n"
            "self-ipi: vector 0x42 taken 1 time, isr 04 in the handler, 00 after the eoi\n"
            "apic: done\n",
    # Atomic read-modify-writes lose no update: N * 100000 and N * 1000. One vCPU on QEMU:
    # CPUID.1:EBX[23:16] is 0 there, which the guest reads as 1.
    "smp": f"smp: vcpus 1, counter {ADDS}, under the lock {LOCKED_ADDS}\n",
}


def expected_smp(n: int) -> str:
    return f"smp: vcpus {n}, counter {n * ADDS}, under the lock {n * LOCKED_ADDS}\n"


def expected_apic(n: int) -> str:
    """With 2+ vCPUs vCPU 0 also sends vector 0x43 to APIC ID 1, whose handler answers."""
    if n < 2:
        return EXPECTED["apic"]
    return EXPECTED["apic"].replace(
        "apic: done\n", "ipi: vector 0x43 to apic 1, answered by apic 1\napic: done\n")


def source(name: str) -> Path:
    return SAMPLES / f"{name}.asm"


@cache
def image(name: str) -> bytes:
    return Assembler(source(name).read_text(), str(source(name))).run().data


# -- (a) vmsim's assembler against NASM ---------------------------------------------------

@pytest.mark.parametrize("name", GUESTS)
def test_assembles_as_nasm_does(name: str) -> None:
    if NASM is None:
        pytest.skip("nasm is not installed (Debian package nasm)")
    ours, theirs = image(name), nasm_bin(source(name).read_text())
    at = first_difference(ours, theirs)
    assert ours == theirs, (f"{name}.asm: first difference at byte {at:#x}: nasm "
                            f"{theirs[at:at + 8].hex()}, vmsim {ours[at:at + 8].hex()}")


def test_expected_texts_agree() -> None:
    assert expected_smp(1) == EXPECTED["smp"]
    assert expected_apic(1) == EXPECTED["apic"]
    assert EXPECTED["timer"].count("tick ") == 10


# -- XADD, which smp.asm counts with, in vmsim's CPU --------------------------------------

XADD_GUEST = """
bits 32
org 0x100000
        mov dword [x], 1
        mov eax, 0xFFFFFFFF
        lock xadd [x], eax
        pushfd
        pop ebx
        mov ecx, 5
        xadd ecx, ecx
        mov edx, 0x017F
        xadd dl, dh
        pushfd
        pop esi
        mov edi, [x]
        hlt
x:      dd 0
"""


def test_xadd_as_the_sdm_defines_it() -> None:
    # SDM Vol. 2B XADD: TEMP = SRC + DEST; SRC = DEST; DEST = TEMP; flags as ADD.
    m = Machine(MachineConfig(memory_mib=16))
    m.load_image(GuestImage(data=Assembler(XADD_GUEST, "xadd").run().data, origin=0x100000))
    bare = BareMetal(m)
    assert bare.run(max_instructions=100).reason is StopReason.HLT
    eax, ecx, edx, ebx, _, _, esi, edi = bare.cpu.r
    assert (edi, eax) == (0, 1)  # memory 1 + 0xFFFFFFFF: the sum wraps to 0, EAX the old 1
    assert ebx & 0x8D5 == 0x55  # CF, PF, AF, ZF; not SF, OF
    assert ecx == 10  # one register as both operands: DEST is written last, the sum
    assert edx & 0xFFFF == 0x7F80  # DL 0x7F + DH 1 = 0x80, DH the old 0x7F
    assert esi & 0x8D5 == 0x890  # OF, SF, AF: signed overflow; not CF, ZF, PF (0x80 is odd)


# -- (b) QEMU prints the expected text -----------------------------------------------------

def run_qemu(name: str, tmp: Path) -> Outcome:
    """The command tests/guests/guestrun.py runs, on the image vmsim's assembler made."""
    exe = qemu_path()
    assert exe is not None
    binary = tmp / f"{name}.bin"
    binary.write_bytes(image(name))
    cmd = [exe, "-M", "pc", "-m", "16", "-display", "none", "-nodefaults", "-device", "VGA",
           "-serial", "stdio", "-device", "isa-debug-exit,iobase=0x501,iosize=1",
           "-kernel", str(binary), "-no-reboot"]
    env = dict(os.environ, QEMU_AUDIO_DRV="none")
    p = subprocess.run(cmd, capture_output=True, timeout=QEMU_TIMEOUT, env=env,
                       stdin=subprocess.DEVNULL)
    shutdown = p.returncode == 0
    return Outcome(p.stdout, None if shutdown else p.returncode, shutdown,
                   p.stderr.decode(errors="replace"))


@pytest.fixture(scope="module")
def qemu(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    if qemu_path() is None:
        pytest.skip("qemu-system-i386 is not installed (Debian package qemu-system-x86)")
    tmp = tmp_path_factory.mktemp("irq-guests")
    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(GUESTS, pool.map(lambda n: run_qemu(n, tmp), GUESTS), strict=True))


@pytest.mark.parametrize("name", GUESTS)
def test_qemu_prints_the_expected_text(name: str, qemu: dict[str, Outcome]) -> None:
    got = qemu[name]
    assert got.serial.decode(errors="replace") == EXPECTED[name], f"QEMU stderr: {got.detail}"
    assert got.exit_status == SUCCESS and not got.shutdown


# -- (c) the simulator, through `vmsim run` -------------------------------------------------

@cache
def _run_help() -> str:
    p = subprocess.run([sys.executable, "-m", "vmsim", "run", "--help"], capture_output=True,
                       text=True, cwd=ROOT, timeout=120)
    return p.stdout


def _cli_has_option(option: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", _run_help()) is not None


needs_irqchip = pytest.mark.skipif(not _cli_has_option("--irqchip"),
                                   reason="awaiting vmsim run --irqchip (issue 10)")
needs_smp = pytest.mark.skipif(not _cli_has_option("--smp"),
                               reason="awaiting vmsim run --smp (issue 10)")


@cache
def vmsim_run(name: str, *options: str) -> tuple[str, str, int]:
    """(stdout, stderr, exit status) of `vmsim run OPTIONS sample_guests/NAME.asm`."""
    p = subprocess.run([sys.executable, "-m", "vmsim", "run", *options, str(source(name))],
                       capture_output=True, text=True, cwd=ROOT, timeout=VMSIM_TIMEOUT)
    return p.stdout, p.stderr, p.returncode


def _check(name: str, options: tuple[str, ...], expected: str) -> None:
    out, err, rc = vmsim_run(name, *options)
    assert "Traceback" not in err, err
    assert out == expected, f"vmsim run {' '.join(options)} {name}.asm; stderr: {err}"
    assert rc == SUCCESS, err


SIM = ("--max-instructions", BUDGET)
IRQ_SIM = ("--max-instructions", IRQ_BUDGET)


@needs_irqchip
@pytest.mark.parametrize("irqchip", ["kernel", "userspace"])
def test_sim_timer(irqchip: str) -> None:
    _check("timer", (*IRQ_SIM, "--irqchip", irqchip), EXPECTED["timer"])


@needs_irqchip
@pytest.mark.parametrize("irqchip", ["kernel", "userspace"])
def test_sim_timer_matches_qemu(irqchip: str, qemu: dict[str, Outcome]) -> None:
    # the check: byte-identical serial output in both irqchip modes
    out, err, rc = vmsim_run("timer", *IRQ_SIM, "--irqchip", irqchip)
    assert out.encode() == qemu["timer"].serial, err
    assert rc == qemu["timer"].exit_status


@needs_irqchip
def test_sim_apic_matches_qemu(qemu: dict[str, Outcome]) -> None:
    _check("apic", (*IRQ_SIM, "--irqchip", "kernel"), EXPECTED["apic"])
    assert vmsim_run("apic", *IRQ_SIM, "--irqchip", "kernel")[0].encode() == qemu["apic"].serial


@needs_irqchip
@needs_smp
@pytest.mark.parametrize("n", [1, 2, 4])
def test_sim_apic_smp(n: int) -> None:
    # with 2+ vCPUs: a fixed IPI from vCPU 0 to APIC ID 1, answered; vCPUs 2+ park
    _check("apic", (*IRQ_SIM, "--irqchip", "kernel", "--smp", str(n)), expected_apic(n))


@needs_smp
@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_sim_smp_totals(n: int) -> None:
    _check("smp", (*SIM, "--smp", str(n)), expected_smp(n))


@needs_smp
def test_sim_smp_matches_qemu(qemu: dict[str, Outcome]) -> None:
    out, err, rc = vmsim_run("smp", *SIM, "--smp", "1")
    assert out.encode() == qemu["smp"].serial, err
    assert rc == qemu["smp"].exit_status


@needs_smp
def test_sim_smp_trace_is_deterministic(tmp_path: Path) -> None:
    # several vCPUs interleave on the virtual clock in an order fixed by the configuration:
    # the same run twice gives the same trace, byte for byte
    traces = []
    for i in range(2):
        trace = tmp_path / f"{i}.jsonl"
        out, err, _ = vmsim_run("smp", *SIM, "--smp", "2", "--trace", str(trace))
        assert out == expected_smp(2), err
        traces.append(trace.read_bytes())
    assert traces[0].count(b'"source":"vcpu1"') > 10  # both vCPUs are in it
    assert traces[0] == traces[1]


def test_sim_smp_default_is_one_vcpu() -> None:
    # without --smp (today's CLI, and the default afterwards): one vCPU
    _check("smp", SIM, expected_smp(1))


# -- the host's KVM -------------------------------------------------------------------------

def _host_kvm() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


@pytest.mark.skipif(not _host_kvm(), reason="no usable /dev/kvm on this host")
@needs_smp
@pytest.mark.parametrize("n", [1, 2])
def test_host_kvm_smp_totals(n: int) -> None:
    # NR_VCPUS is 2 on this project's host KVM (oracles.md); its vCPU threads run truly in
    # parallel, so the totals check LOCK XADD and XCHG on real hardware
    _check("smp", ("--backend", "kvm", "--smp", str(n)), expected_smp(n))


@pytest.mark.skipif(not _host_kvm(), reason="no usable /dev/kvm on this host")
def test_host_kvm_smp_default_one_vcpu() -> None:
    _check("smp", ("--backend", "kvm"), expected_smp(1))
