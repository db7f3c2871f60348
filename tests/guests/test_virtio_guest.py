"""sample_guests/virtio_blk.asm, a polling virtio-blk driver, on every runner (issue 11).

- vmsim's assembler gives the bytes NASM gives (NASM is the encoding oracle);
- QEMU microvm (tests/guests/microvm.py) prints the text derived below from the VIRTIO
  1.2 spec, QEMU's device and checksums computed here from the image's bytes, and leaves
  the image with the pattern in sector 5 and every other byte as it was;
- `vmsim run --disk IMG` prints QEMU's output byte for byte and leaves the image
  byte-identical to QEMU's, in both --irqchip modes, with and without ioeventfd, and on
  --backend kvm (the guest polls: no IRET). These skip until `vmsim run` has --disk
  (and --no-ioeventfd), and without /dev/kvm.
"""

from __future__ import annotations

import os
import random
import re
import struct
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from tests.asm.oracle import NASM, first_difference, nasm_bin
from tests.guests.guestrun import qemu_path
from tests.guests.microvm import MicrovmRun, run_microvm
from vmsim.asm.assembler import Assembler

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "sample_guests" / "virtio_blk.asm"
SECTOR = 512
WSECT = 5  # the sector the guest writes its pattern to
SUCCESS, FAILURE = 1, 3  # isa-debug-exit status after the guest writes 0 / 1
VMSIM_TIMEOUT = 600  # seconds; a hang fails the test instead of stopping the suite
BUDGET = "50000000"  # instructions: the polling loops spin while the device works
ID_BYTES = 20  # VIRTIO_BLK_ID_BYTES
NO_DEVICE = b"virtio-blk: no modern block device on the virtio-mmio transports\n"

# Where QEMU microvm (7.2) puts the device: a -device goes to the last free transport
# (oracles.md). With ACPI (the default) microvm has 24 transports on the second IO-APIC
# (GSI 24 + i); with acpi=off 8, on GSI 5 + i, lines the 8259A PIC serves too.
TRANSPORT = {True: (23, 0xFEB02E00), False: (7, 0xFEB00E00)}  # by acpi
# vmsim's machine has the PIC pair and no IO-APIC: the microvm it can be is the one
# without ACPI (the device on transport 7, IRQ 12). The comparison runs QEMU so.
VMSIM_ACPI = False


def checksum(data: bytes) -> int:
    """The guest's checksum: h = rol(h, 5) xor d for each little-endian dword d."""
    h = 0
    for (d,) in struct.iter_unpack("<I", data):
        h = ((h << 5 | h >> 27) & 0xFFFFFFFF) ^ d
    return h


def pattern() -> bytes:
    """What the guest writes to sector 5: dword k = (k + 1) * 0x9E3779B9 mod 2^32."""
    return b"".join(struct.pack("<I", (k + 1) * 0x9E3779B9 & 0xFFFFFFFF)
                    for k in range(SECTOR // 4))


def make_disk(sectors: int, seed: int = 11) -> bytes:
    return random.Random(seed).randbytes(sectors * SECTOR)


def after_run(disk: bytes) -> bytes:
    """The image after the guest: sector 5 holds the pattern, nothing else changed."""
    return disk[:WSECT * SECTOR] + pattern() + disk[(WSECT + 1) * SECTOR:]


def expected_serial(disk: bytes, ident: bytes = b"", acpi: bool = True) -> str:
    """What the guest prints on QEMU microvm for this image and virtio-blk serial.

    VIRTIO 1.2: FEATURES_OK reads back set (§3.1.1 step 6: status 0B = ACKNOWLEDGE 1 |
    DRIVER 2 | FEATURES_OK 8), DRIVER_OK 4 makes 0F; the guest accepts VIRTIO_F_VERSION_1
    (bit 32) and VIRTIO_BLK_F_FLUSH (bit 9), both of which QEMU offers (write cache on, the
    -drive default). Capacity in 512-byte sectors (§5.2.4). Status OK 0, IOERR 1, UNSUPP 2
    (§5.2.6): a request with sector + sectors > capacity is IOERR, an unknown type UNSUPP.
    Writing 0 to Status resets the device (§4.2.3.1): Status and QueueReady read 0.
    QEMU's side: VendorID 0x554D4551 ("QEMU"); virtio-mmio answers QueueNumMax with
    VIRTQUEUE_MAX_SIZE (1024) for every queue that exists; hw/block/virtio-blk.c puts the
    size of the whole device-writable part in the used element ("We always touch the last
    byte, so just see how big in_iov is": data + status byte, even for IOERR); GET_ID
    copies min(strlen(serial) + 1, 20) bytes (no NUL when the serial has 20 or more);
    the device sets InterruptStatus bit 0 (used buffer) after every request (no
    VIRTIO_RING_F_EVENT_IDX, avail flags 0).
    """
    n = len(disk) // SECTOR
    index, base = TRANSPORT[acpi]

    def sector(s: int) -> bytes:
        return disk[s * SECTOR:(s + 1) * SECTOR]

    def read(s: int, data: bytes) -> str:
        return (f"read sector {s}: status 0 (OK), used len {SECTOR + 1}, isr 1, "
                f"checksum {checksum(data):08X}\n")

    shown = ident[:ID_BYTES].split(b"\0")[0].decode("ascii")
    return (f"virtio-blk: transport {index} at {base:08X}, vendor 554D4551\n"
            "features: accepted 00000001 00000200, status 0B\n"
            "queue 0: max 1024, size 8\n"
            "driver ok: status 0F\n"
            f"capacity: {n} sectors\n"
            + read(0, sector(0)) + read(1, sector(1)) + read(n - 1, sector(n - 1))
            + read(WSECT, sector(WSECT))
            + f"write sector {WSECT}: status 0 (OK), used len 1, isr 1, "
              f"checksum {checksum(pattern()):08X}\n"
            + read(WSECT, pattern())
            + "flush: status 0 (OK), used len 1, isr 1\n"
              f'get id: status 0 (OK), used len {ID_BYTES + 1}, isr 1, id "{shown}"\n'
              f"read past the end, sector {n}: status 1 (IOERR), used len {SECTOR + 1}, "
              "isr 1\n"
              f"read 2 sectors across the end, sector {n - 1}: status 1 (IOERR), used len "
              f"{2 * SECTOR + 1}, isr 1\n"
              f"write past the end, sector {n}: status 1 (IOERR), used len 1, isr 1\n"
              "unknown request type 0x7E: status 2 (UNSUPP), used len 1, isr 1\n"
              "rings: avail idx 12, used idx 12\n"
              "reset: status 00, queue ready 0\n"
              "virtio-blk: done\n")


@cache
def image() -> bytes:
    return Assembler(SOURCE.read_text(), str(SOURCE)).run().data


def test_checksum_and_pattern_as_the_guest_computes_them() -> None:
    # the definitions in virtio_blk.asm's header, worked by hand
    assert pattern()[:8] == bytes.fromhex("b979379e72f36e3c")
    assert checksum(struct.pack("<II", 1, 2)) == (1 << 5) ^ 2
    assert checksum(struct.pack("<I", 0x80000000) * 2) == 0x10 ^ 0x80000000


# -- (a) vmsim's assembler against NASM ---------------------------------------------------

def test_assembles_as_nasm_does() -> None:
    if NASM is None:
        pytest.skip("nasm is not installed (Debian package nasm)")
    ours, theirs = image(), nasm_bin(SOURCE.read_text())
    at = first_difference(ours, theirs)
    assert ours == theirs, (f"virtio_blk.asm: first difference at byte {at:#x}: nasm "
                            f"{theirs[at:at + 8].hex()}, vmsim {ours[at:at + 8].hex()}")


def test_guest_keeps_its_data_off_the_code_pages() -> None:
    # the queue, buffers and variables start at 0x110000: the image stays below
    assert 0x100000 + len(image()) <= 0x110000


# -- (b) QEMU microvm ------------------------------------------------------------------------

needs_qemu = pytest.mark.skipif(qemu_path() is None,
                                reason="qemu-system-i386 is not installed "
                                       "(Debian package qemu-system-x86)")


def _qemu(tmp: Path, disk: bytes, *, serial: str | None = None, modern: bool = True,
          acpi: bool = True) -> tuple[MicrovmRun, bytes]:
    """Run the guest on QEMU microvm with an image of `disk`: (the run, the image after)."""
    kernel = tmp / "virtio_blk.bin"
    kernel.write_bytes(image())
    path = tmp / "disk.img"
    path.write_bytes(disk)
    got = run_microvm(kernel, path, serial=serial, modern=modern, acpi=acpi)
    return got, path.read_bytes()


@needs_qemu
@pytest.mark.parametrize("acpi", [True, False], ids=["acpi", "acpi=off"])
@pytest.mark.parametrize("sectors", [64, 2049])
def test_qemu_prints_the_checksums_and_writes_the_sector(tmp_path: Path, sectors: int,
                                                         acpi: bool) -> None:
    disk = make_disk(sectors, seed=sectors)
    got, after = _qemu(tmp_path, disk, acpi=acpi)
    assert got.serial.decode(errors="replace") == expected_serial(disk, acpi=acpi), got.stderr
    assert got.exit_status == SUCCESS, got.stderr
    # the pattern at sector 5, every other byte unchanged, and the writes past the end
    # did not grow the file
    assert len(after) == len(disk)
    assert after == after_run(disk)


@needs_qemu
@pytest.mark.parametrize("serial", ["vmsim-0", "vmsim-disk-0123456789"])
def test_qemu_get_id_returns_the_serial(tmp_path: Path, serial: str) -> None:
    # 20 bytes at most: a serial of 20 or more characters comes without its NUL
    disk = make_disk(64)
    got, after = _qemu(tmp_path, disk, serial=serial)
    assert got.serial.decode() == expected_serial(disk, serial.encode() + b"\0"), got.stderr
    assert f'id "{serial[:ID_BYTES]}"' in got.serial.decode()
    assert after == after_run(disk)


@needs_qemu
def test_qemu_legacy_transport_is_not_taken(tmp_path: Path) -> None:
    # without force-legacy=false QEMU's virtio-mmio reads Version 1: no modern device,
    # the guest says so, exits with status 3 and never touches the disk
    disk = make_disk(64)
    got, after = _qemu(tmp_path, disk, modern=False)
    assert got.serial == NO_DEVICE
    assert got.exit_status == FAILURE
    assert after == disk


@needs_qemu
def test_qemu_without_a_device(tmp_path: Path) -> None:
    # microvm's transports without a backend read Magic, Version and VendorID, DeviceID 0
    kernel = tmp_path / "virtio_blk.bin"
    kernel.write_bytes(image())
    got = run_microvm(kernel, None)
    assert (got.serial, got.exit_status) == (NO_DEVICE, FAILURE), got.stderr


# -- (c) vmsim, through `vmsim run --disk` ---------------------------------------------------

@cache
def _run_help() -> str:
    p = subprocess.run([sys.executable, "-m", "vmsim", "run", "--help"], capture_output=True,
                       text=True, cwd=ROOT, timeout=120)
    return p.stdout


def _cli_has_option(option: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", _run_help()) is not None


needs_disk = pytest.mark.skipif(not _cli_has_option("--disk"),
                                reason="awaiting vmsim run --disk (issue 11)")


def _host_kvm() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


@pytest.fixture(scope="module")
def qemu_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes, bytes]:
    """(disk before, QEMU's serial output, the disk after QEMU) for a 64-sector image,
    on the microvm vmsim models (VMSIM_ACPI)."""
    if qemu_path() is None:
        pytest.skip("qemu-system-i386 is not installed (Debian package qemu-system-x86)")
    disk = make_disk(64)
    got, after = _qemu(tmp_path_factory.mktemp("virtio-qemu"), disk, acpi=VMSIM_ACPI)
    assert got.exit_status == SUCCESS, got.stderr
    return disk, got.serial, after


def vmsim_run(disk: Path, *options: str) -> tuple[bytes, str, int]:
    """(stdout, stderr, exit status) of `vmsim run --disk DISK OPTIONS virtio_blk.asm`."""
    p = subprocess.run([sys.executable, "-m", "vmsim", "run", "--disk", str(disk), *options,
                        str(SOURCE)], capture_output=True, cwd=ROOT, timeout=VMSIM_TIMEOUT)
    return p.stdout, p.stderr.decode(errors="replace"), p.returncode


def _check_against_qemu(tmp_path: Path, ref: tuple[bytes, bytes, bytes],
                        *options: str) -> None:
    disk, serial, qemu_after = ref
    path = tmp_path / "disk.img"
    path.write_bytes(disk)
    out, err, rc = vmsim_run(path, *options)
    assert "Traceback" not in err, err
    assert out == serial, f"vmsim run {' '.join(options)}; stderr: {err}"
    assert rc == SUCCESS, err
    assert path.read_bytes() == qemu_after


@pytest.mark.parametrize("backend", ["sim", "kvm"])
def test_vmsim_without_a_disk(backend: str) -> None:
    # no --disk: nothing answers at 0xFEB00000 (unassigned MMIO), the scan finds nothing
    if backend == "kvm" and not _host_kvm():
        pytest.skip("no usable /dev/kvm on this host")
    p = subprocess.run([sys.executable, "-m", "vmsim", "run", "--backend", backend,
                        str(SOURCE)], capture_output=True, cwd=ROOT, timeout=VMSIM_TIMEOUT)
    assert (p.stdout, p.returncode) == (NO_DEVICE, FAILURE), p.stderr.decode()


IOEVENTFD = [pytest.param((), id="ioeventfd"),
             pytest.param(("--no-ioeventfd",), id="no-ioeventfd", marks=pytest.mark.skipif(
                 not _cli_has_option("--no-ioeventfd"),
                 reason="awaiting vmsim run --no-ioeventfd (issue 11)"))]


@needs_disk
@pytest.mark.parametrize("ioeventfd", IOEVENTFD)
@pytest.mark.parametrize("irqchip", ["kernel", "userspace"])
def test_sim_matches_qemu(tmp_path: Path, qemu_reference: tuple[bytes, bytes, bytes],
                          irqchip: str, ioeventfd: tuple[str, ...]) -> None:
    _check_against_qemu(tmp_path, qemu_reference, "--max-instructions", BUDGET,
                        "--irqchip", irqchip, *ioeventfd)


@needs_disk
def test_sim_prints_the_expected_text_without_qemu(tmp_path: Path) -> None:
    # the same text where QEMU is missing: derived, not recorded
    disk = make_disk(64)
    path = tmp_path / "disk.img"
    path.write_bytes(disk)
    out, err, rc = vmsim_run(path, "--max-instructions", BUDGET)
    assert out.decode(errors="replace") == expected_serial(disk, acpi=VMSIM_ACPI), err
    assert rc == SUCCESS, err
    assert path.read_bytes() == after_run(disk)


@needs_disk
@pytest.mark.skipif(not _host_kvm(), reason="no usable /dev/kvm on this host")
@pytest.mark.parametrize("ioeventfd", IOEVENTFD)
@pytest.mark.parametrize("irqchip", ["kernel", "userspace"])
def test_host_kvm_matches_qemu(tmp_path: Path, qemu_reference: tuple[bytes, bytes, bytes],
                               irqchip: str, ioeventfd: tuple[str, ...]) -> None:
    # the host's KVM_IOEVENTFD, and KVM_IRQFD with the kernel irqchip; the guest polls, so
    # the software KVM's missing IRET does not matter
    _check_against_qemu(tmp_path, qemu_reference, "--backend", "kvm", "--irqchip", irqchip,
                        *ioeventfd)

