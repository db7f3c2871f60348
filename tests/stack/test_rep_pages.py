"""REP STOS and MOVS a page at a time (vmsim.hw.cpu MemFns.fill / copy), and CMPS and SCAS
(MemFns.peek), against the same
runs element by element (BULK_REP off), through the whole stack, and against
qemu-system-i386: a guest whose string instructions cross pages that are absent,
read-only, MMIO, aliased and scrambled, and code (tests/stack/rep_pages.asm). Every event
but tlb_hit (which turns the page-at-a-time path off), every byte the guest wrote and the
faults it logged must be the same; what it prints (the faults, a hash of every frame and
of the VGA page) must be QEMU's."""

from __future__ import annotations

from pathlib import Path

import pytest

import vmsim.hw.cpu as cpu_mod
from tests.stack.test_qemu import run_qemu
from vmsim.asm import assemble
from vmsim.events import CATALOGUE
from vmsim.session import Session

GUEST = Path(__file__).resolve().parent / "rep_pages.asm"
WINDOW, PAGE = 0x400000, 0x1000
LOG, FRAMES, VGA = 0x202000, 0x300000, 0xB8000
WAYS = [("bare", "ept"), ("sim", "ept"), ("sim", "shadow")]


# MOVS from where nothing is (physical 32 MiB), into RAM over bytes that are not 0, with
# paging off: the loads give 0, as QEMU's unassigned memory (tests/stack/test_unassigned.py
# holds that to qemu-system-i386).
FROM_NOTHING = """bits 32
org 0x100000
        mov edi, 0x300008
        mov eax, 0xA5A5A5A5
        mov ecx, 0x4000
        rep stosd
        mov esi, 0x2000000 - 0x10
        mov edi, 0x300008
        mov ecx, 0x1400
        rep movsd
        std
        mov esi, 0x2001FF0
        mov edi, 0x30FFF0
        mov ecx, 0x500
        rep movsw
        mov dx, 0x501
        mov al, 0
        out dx, al
"""


def _run(backend: str, paging: str, bulk: bool, monkeypatch, text: str | None = None) -> tuple:
    monkeypatch.setattr(cpu_mod, "BULK_REP", bulk)
    image = assemble(GUEST.read_text() if text is None else text, str(GUEST))
    out = bytearray()
    kw = {"paging": paging} if backend == "sim" else {}
    s = Session(image, backend, serial_out=out.extend, **kw)
    events: list = []
    s.events.subscribe(lambda e: events.append((e.seq, e.time, e.kind, e.source, e.values)),
                       [k for k in CATALOGUE if k != "tlb_hit"])
    outcome = s.run()
    ram = s.machine.mem.ram
    return (outcome.exit_status, bytes(ram[LOG:LOG + PAGE]), bytes(ram[FRAMES:FRAMES + 17 * PAGE]),
            s.read_linear(WINDOW + 6 * PAGE, PAGE), bytes(out), s.instructions, events)


@pytest.mark.parametrize(("backend", "paging"), WAYS, ids=[f"{b}-{p}" for b, p in WAYS])
def test_a_page_at_a_time_is_element_by_element(backend: str, paging: str, monkeypatch) -> None:
    fast = _run(backend, paging, True, monkeypatch)
    slow = _run(backend, paging, False, monkeypatch)
    assert fast[:6] == slow[:6]
    assert len(fast[6]) == len(slow[6])
    for a, b in zip(fast[6], slow[6], strict=True):
        assert a == b


@pytest.mark.parametrize(("backend", "paging"), WAYS, ids=[f"{b}-{p}" for b, p in WAYS])
def test_moves_from_nothing(backend: str, paging: str, monkeypatch) -> None:
    fast = _run(backend, paging, True, monkeypatch, FROM_NOTHING)
    assert fast[:6] == _run(backend, paging, False, monkeypatch, FROM_NOTHING)[:6]
    frames = fast[2]
    assert frames[:8] == bytes(8) and frames[8:8 + 0x5000] == bytes(0x5000)
    assert frames[0x5008:0xF5F2] == b"\xa5" * (0xF5F2 - 0x5008)
    assert frames[0xF5F2:0xFFF2] == bytes(0xA00) and frames[0xFFF2:0x10008] == b"\xa5" * 0x16


def test_what_the_guest_did(monkeypatch) -> None:
    runs = {way: _run(*way, True, monkeypatch) for way in WAYS}
    status, log, frames, vga, printed, _, _ = runs[("bare", "ept")]
    for way, run in runs.items():
        assert run[:5] == (status, log, frames, vga, printed), way  # bare, EPT, shadow: alike
    assert status == 1 and printed.count(b"\n") == 8  # seven faults, then the hashes
    # The two faults of the first STOSD: the absent page 3, then the read-only page 8, each
    # at its first byte, with ECX and EDI at the element that faulted.
    faults = [tuple(int.from_bytes(log[4 + 16 * i + 4 * j:8 + 16 * i + 4 * j], "little")
                    for j in range(4)) for i in range(int.from_bytes(log[:4], "little"))]
    first = (16 * PAGE - 0x30) // 4
    assert [(cr2, ecx, edi) for cr2, ecx, _, edi in faults[:2]] == [
        (WINDOW + p * PAGE, first - (p * PAGE - 0x10) // 4, WINDOW + p * PAGE) for p in (3, 8)]
    # REP INSW down from page 12 + 0x7FE faults at page 11's last word, 0x400 words on;
    # REP OUTSD up from page 1 + 0x404 faults loading page 4's first dword; RCX is the
    # count left at the element that faulted (kvm.ko's emulator too: Linux's writeback),
    # and the OUTSD ends 7 pages on (LOG + 0xF08).
    ins_fault, outs_fault, movs_fault, stos_fault, scas_fault = faults[2:]
    assert (ins_fault[0], ins_fault[1], ins_fault[3]) == (
        WINDOW + 11 * PAGE + 0xFFE, 7 * PAGE // 2 - 0x400, WINDOW + 11 * PAGE + 0xFFE)
    assert outs_fault[:3] == (WINDOW + 4 * PAGE, 7 * PAGE // 4 - (3 * PAGE - 0x404) // 4,
                              WINDOW + 4 * PAGE)
    assert log[0xF08:0xF0C] == (WINDOW + 8 * PAGE + 0x404).to_bytes(4, "little")
    # The MOVSW out of VGA faults at page 7's first word, 0x10 words on (the emulator's
    # element: VGA is read first); the STOSD down out of VGA at page 5's last dword, 5 on.
    assert movs_fault == (WINDOW + 7 * PAGE, 0x100 - 0x10, WINDOW + 6 * PAGE + 0x30,
                          WINDOW + 7 * PAGE)
    assert (stos_fault[0], stos_fault[1], stos_fault[3]) == (
        WINDOW + 5 * PAGE + 0xFFC, 0x100 - 5, WINDOW + 5 * PAGE + 0xFFC)
    # The VGA page (MMIO) read back after each of the first two STOS: their values.
    assert log[0xF00:0xF08] == bytes.fromhex("44332211") + bytes.fromhex("5a5a5a5a")
    # The STOSB over the code that ran next: its stores did not run, the INC after did.
    assert log[0xFF0:0xFF3] == b"\x00\x00\x01"
    # The last STOSD, longer than a REP chunk, filled page 9 (frame 11: ORDER) whole.
    assert frames[11 * PAGE:12 * PAGE] == (0x77665544).to_bytes(4, "little") * (PAGE // 4)
    # REPE SCASD over those 5000 faults at page 10 (made not present) after page 9's 1024,
    # and ends at the 5001st dword, the first other one: ZF clear. What the guest kept of
    # it (ECX, ESI, EDI, EFLAGS) is in page 14 (frame 10) at 0x800.
    assert (scas_fault[0], scas_fault[1], scas_fault[3]) == (
        WINDOW + 10 * PAGE, 6000 - PAGE // 4, WINDOW + 10 * PAGE)
    kept = [int.from_bytes(frames[10 * PAGE + 0x800 + 4 * i:10 * PAGE + 0x804 + 4 * i], "little")
            for i in range(4 * 5)]
    assert (kept[0], kept[2], kept[3] & 0x40) == (6000 - 5001, WINDOW + 9 * PAGE + 4 * 5001, 0)
    # REPE CMPSD of nothing (zeros) against page 14's zeros ends at what 12 kept at 0x800:
    # the 0x201st dword.
    assert kept[8:11] == [0x300 - 0x201, WINDOW + 16 * PAGE + 0x10 + 4 * 0x201,
                          WINDOW + 14 * PAGE + 4 * 0x201]
    assert not kept[11] & 0x40


def test_qemu_agrees(tmp_path: Path, monkeypatch) -> None:
    image = assemble(GUEST.read_text(), str(GUEST)).data
    printed, status = run_qemu(image, tmp_path)
    assert (status, printed) == (1, _run("sim", "ept", True, monkeypatch)[4])
