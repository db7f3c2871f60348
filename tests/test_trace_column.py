"""InstructionColumn, the column a trace at level insn records into, against a plain array:
the CPU records a block's instructions there as one item per group (expanded when the
column is read) and into an array one EIP at a time. Both must hold the same EIPs, and at
every event exactly the instructions begun before it (the trace writer reads the column
before each event's line): through exits, faults, interrupts, self-modifying code, TF
single steps, paging, and without translated blocks."""

from __future__ import annotations

from array import array
from pathlib import Path

import pytest

from vmsim.events import EventStream
from vmsim.session import Session
from vmsim.trace import HIGH_RATE, InstructionColumn

ROOT = Path(__file__).resolve().parents[1]
CASES = [
    ("sample_guests/exceptions.asm", "sim", "ept", False),
    ("sample_guests/timer.asm", "sim", "ept", False),
    ("sample_guests/address_spaces.asm", "sim", "shadow", False),
    ("sample_guests/hello.asm", "bare", "ept", False),
    ("benchmarks/guests/pages.asm", "sim", "shadow", True),
    ("tests/guests/single_step.asm", "sim", "shadow", False),
    ("benchmarks/guests/mmio_loop.asm", "sim", "ept", False),
]


# Stores into the next instruction of its own block, every iteration and once through
# another address (the block ends after the store; the instruction is decoded anew).
SMC = """bits 32
org 0x100000
SCRATCH equ 0x200040
        mov ecx, 300
        xor esi, esi
top:
        mov edx, SCRATCH
        cmp ecx, 1
        jne keep
        mov edx, target + 2
keep:
        mov byte [edx], 7
        mov byte [patch + 2], cl
patch:
        add edi, strict byte 1
target:
        add esi, strict byte 1
        loop top
        mov al, 0
        mov dx, 0x501
        out dx, al
        hlt
"""


def _record(guest: str, backend: str, paging: str, every: bool, column: bool,
            blocks: bool = True) -> tuple[list[int], list[tuple[str, int]]]:
    """The EIPs recorded, and (event kind, EIPs recorded so far) at each event."""
    events = EventStream()
    s = Session(str(ROOT / guest) if guest.endswith(".asm") else guest, backend, serial_out=lambda b: None,
                max_instructions=30_000, events=events, paging=paging, history=False)
    rec: InstructionColumn | array = InstructionColumn("vcpu0") if column else array("I")
    seen: list[tuple[str, int]] = []
    if column:  # (waiting() leaves the column as the CPU made it: lanes, see its doc)
        events.subscribe(lambda e: seen.append((e.kind, rec.waiting())),
                         None if every else [k for k in _KINDS if k not in HIGH_RATE])
    else:
        events.subscribe(lambda e: seen.append((e.kind, len(rec))),
                         None if every else [k for k in _KINDS if k not in HIGH_RATE])
    cpu = s.cpus[0]
    cpu.recorder = rec
    cpu.use_blocks = blocks
    s.run()
    eips = list(rec.eips if column else rec)
    return eips, seen


_KINDS = __import__("vmsim.events", fromlist=["CATALOGUE"]).CATALOGUE


@pytest.mark.parametrize(("guest", "backend", "paging", "every"), CASES,
                         ids=[c[0].rsplit("/", 1)[1] + "-" + c[1] + "-" + c[2] for c in CASES])
def test_the_column_records_what_an_array_records(guest, backend, paging, every) -> None:
    want = _record(guest, backend, paging, every, column=False)
    got = _record(guest, backend, paging, every, column=True)
    assert len(want[0]) > 400
    assert got[0] == want[0]
    assert got[1] == want[1]


@pytest.mark.parametrize("every", [False, True])
def test_the_column_through_self_modifying_code(tmp_path: Path, every: bool) -> None:
    src = tmp_path / "smc.asm"
    src.write_text(SMC)
    want = _record(str(src), "sim", "ept", every, column=False)
    got = _record(str(src), "sim", "ept", every, column=True)
    assert len(want[0]) > 2000 and any(k == "smc" for k, _ in want[1])
    assert got == want


def test_the_column_without_blocks() -> None:
    """VMSIM_BLOCKS=0's loop records single EIPs into the same column."""
    want = _record("sample_guests/exceptions.asm", "sim", "ept", False, column=False,
                   blocks=False)
    got = _record("sample_guests/exceptions.asm", "sim", "ept", False, column=True,
                  blocks=False)
    assert got == want


def test_direct_writes_and_recorded_groups_keep_their_order() -> None:
    from vmsim.hw.blocks import RecordedGroup

    col = InstructionColumn("vcpu0")
    col.eips.extend([1, 2])
    col.tokens.opens.append(0)
    col.tokens.append(RecordedGroup.make([3, 4], None))
    col.append(5)  # the look-up the CPU makes, then one instruction (a TF step)
    col.tokens.append(RecordedGroup.make([6, 9], 5))  # recorded after 5: not marked
    assert list(col.eips) == [1, 2, 3, 4, 5, 6, 9]
    assert not col.tokens
