"""Section types and sections for testing the snapshot file format (vmsim/snapshot_format.py)
before the machine's parts declare theirs: a CPU-like type at version 2 that still reads
version 1 through a migration, a device-like type with every kind of field, and RAM.
Used by tests/test_snapshot_format.py and the format fuzz (tests/fuzz/formats.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vmsim.snapshot_format import RAM, MapOf, Nullable, OlderVersion, SectionData, SectionType

V1_FILE = Path(__file__).parent / "data" / "snapshots" / "format1-demo-cpu1.vmsnap"
CREATED = "2026-11-29T02:00:00Z"

CPU_V1 = {"eax": int, "eip": int}


def cpu_v1_to_v2(old: dict[str, Any]) -> dict[str, Any]:
    """Version 2 groups the registers and adds the halted flag (a v1 CPU was running)."""
    return {"regs": {"eax": old["eax"], "eip": old["eip"]}, "halted": False}


DEMO_CPU = SectionType("demo-cpu", 2, {"regs": {"eax": int, "eip": int}, "halted": bool},
                       older={1: OlderVersion(CPU_V1, cpu_v1_to_v2)})
DEMO_CPU_V1 = SectionType("demo-cpu", 1, CPU_V1)  # as the vmsim that wrote V1_FILE knew it

DEMO_DEVICE = SectionType("demo-device", 1, {
    "irr": int,
    "label": str,
    "enabled": bool,
    "fifo": [int],
    "blob": bytes,
    "names": [[str]],
    "timers": MapOf({"deadline": Nullable(int), "period": int}),
    "pending": Nullable(bytes),
})

TYPES = {t.name: t for t in (DEMO_CPU, DEMO_DEVICE, RAM)}
V1_TYPES = {t.name: t for t in (DEMO_CPU_V1, RAM)}


def sections() -> dict[str, SectionData]:
    """Two CPUs, a device with nested fields, and 64 KiB of RAM with some bytes set."""
    ram = bytearray(64 << 10)
    ram[0x7C00:0x7C05] = b"\xb8\x01\x00\x00\x00"
    ram[-1] = 0xFF
    return {
        "cpu0": SectionData("demo-cpu", {"regs": {"eax": 0xFFFFFFFF, "eip": 0x7C00}, "halted": True}),
        "cpu1": SectionData("demo-cpu", {"regs": {"eax": 0, "eip": 0x1000}, "halted": False}),
        "pic": SectionData("demo-device", {
            "irr": -1 << 70, "label": "i8259 \u4e3b\u7247 \"master\"\n", "enabled": True,
            "fifo": [0, 1, 2**64 - 1], "blob": bytes(range(256)), "names": [["a", "b"], []],
            "timers": {"pit.0": {"deadline": 12345678901234, "period": 65536},
                       "rtc": {"deadline": None, "period": 0}},
            "pending": None,
        }),
        "ram": SectionData("ram", bytes(ram)),
    }


def v1_sections() -> dict[str, SectionData]:
    """What V1_FILE holds: one demo-cpu at version 1, and 4 KiB of RAM."""
    return {"cpu0": SectionData("demo-cpu", {"eax": 0x1234, "eip": 0x7C05}),
            "ram": SectionData("ram", b"\xf4" + bytes(4095))}
