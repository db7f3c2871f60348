"""QEMU's microvm machine as the oracle for virtio guests (docs/virtio.md).

`qemu-system-i386 -M microvm` has virtio-mmio transports at 0xFEB00000 + 0x200 * i and
boots a flat guest with a multiboot header through its firmware (qboot,
bios-microvm.bin: QEMU's multiboot loader puts the image in fw_cfg, qboot copies it and
jumps to the header's entry_addr with EAX=0x2BADB002). Serial goes to stdout; the guest
ends with a write to isa-debug-exit, which makes QEMU exit with status (v << 1) | 1.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.guests.guestrun import QEMU_TIMEOUT, qemu_path


@dataclass(frozen=True)
class MicrovmRun:
    serial: bytes
    exit_status: int  # (v << 1) | 1 after the guest wrote v to 0x501; 0 for -no-reboot
    stderr: str


def microvm_command(kernel: Path, disk: Path | None, *, serial: str | None = None,
                    modern: bool = True, acpi: bool = True) -> list[str]:
    """The command line docs/virtio.md gives: one virtio-blk-device on a raw image.

    Without `disk`, no device: the transports are there, empty (DeviceID 0).
    `serial` is the virtio-blk serial property, what GET_ID returns (QEMU returns "" when
    it is not set). `modern=False` leaves virtio-mmio in its legacy mode (Version 1).
    `acpi=False` is microvm without ACPI and without the second IO-APIC: 8 transports on
    GSI 5 + i (ISA lines the PIC also serves) instead of 24 on GSI 24 + i; a device goes
    to the last free transport either way (7 or 23).
    """
    exe = qemu_path()
    if exe is None:
        raise FileNotFoundError("qemu-system-i386")
    device = "virtio-blk-device,drive=d0" + (f",serial={serial}" if serial else "")
    cmd = [exe, "-M", "microvm" if acpi else "microvm,acpi=off", "-m", "16",
           "-display", "none", "-nodefaults", "-no-reboot", "-serial", "stdio",
           "-device", "isa-debug-exit,iobase=0x501,iosize=2"]
    if modern:
        cmd += ["-global", "virtio-mmio.force-legacy=false"]
    if disk is None:
        return [*cmd, "-kernel", str(kernel)]
    return [*cmd, "-drive", f"id=d0,file={disk},format=raw,if=none", "-device", device,
            "-kernel", str(kernel)]


def run_microvm(kernel: Path, disk: Path | None, *, serial: str | None = None,
                modern: bool = True, acpi: bool = True) -> MicrovmRun:
    """Run `kernel` on QEMU microvm with `disk` as its virtio-blk image (changed in place)."""
    env = dict(os.environ, QEMU_AUDIO_DRV="none")
    p = subprocess.run(microvm_command(kernel, disk, serial=serial, modern=modern, acpi=acpi),
                       capture_output=True, timeout=QEMU_TIMEOUT, env=env,
                       stdin=subprocess.DEVNULL)
    return MicrovmRun(p.stdout, p.returncode, p.stderr.decode(errors="replace"))
