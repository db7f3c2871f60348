"""The whole entry state, on every backend (README "Using it"): what the guest finds in its
registers before it has done anything, and what the session's register views show then.

The contract: 32-bit protected mode, paging off, CR0=0x11, flat CS=0x08,
DS/ES/FS/GS/SS=0x10, EFLAGS=0x2, ESP=0x100000, EIP=0x100000, GDTR and IDTR base 0 limit
0, the other GPRs 0. The guest's first instructions store every GPR (ESP before anything
touches the stack), EFLAGS, the selectors, CR0/CR3/CR4, SGDT and SIDT, and its own EIP;
then it sends those bytes to COM1 and exits through isa-debug-exit.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tests.stack.stackrun import host_kvm_problem, run_cli
from vmsim.asm import assemble
from vmsim.session import Session

SAVE = 0x180000  # where the guest stores what it found (RAM, away from its code)
GUEST = f"""
bits 32
org 0x100000
SAVE equ {SAVE:#x}
start:
        mov [SAVE + 0], eax             ; first: nothing has run yet
        mov [SAVE + 4], ecx
        mov [SAVE + 8], edx
        mov [SAVE + 12], ebx
        mov [SAVE + 16], esp            ; before anything uses the stack
        mov [SAVE + 20], ebp
        mov [SAVE + 24], esi
        mov [SAVE + 28], edi
        pushfd
        pop eax
        mov [SAVE + 32], eax
        mov [SAVE + 36], cs
        mov [SAVE + 38], ds
        mov [SAVE + 40], es
        mov [SAVE + 42], fs
        mov [SAVE + 44], gs
        mov [SAVE + 46], ss
        mov eax, cr0
        mov [SAVE + 48], eax
        mov eax, cr3
        mov [SAVE + 52], eax
        mov eax, cr4
        mov [SAVE + 56], eax
        sgdt [SAVE + 60]
        sidt [SAVE + 66]
        call here                       ; EIP, from the return address
here:
        pop eax
        mov [SAVE + 72], eax
        mov esi, SAVE
        mov ecx, 76
        mov dx, 0x3F8
        rep outsb
        mov dx, 0x501
        mov al, 0
        out dx, al
        hlt
"""
FIELDS = ("EAX", "ECX", "EDX", "EBX", "ESP", "EBP", "ESI", "EDI", "EFLAGS",
          "CS", "DS", "ES", "FS", "GS", "SS", "CR0", "CR3", "CR4",
          "GDTR.limit", "GDTR.base", "IDTR.limit", "IDTR.base", "here")
LAYOUT = "<9I6H3IHIHII"
CONTRACT = {"EAX": 0, "ECX": 0, "EDX": 0, "EBX": 0, "ESP": 0x100000, "EBP": 0, "ESI": 0,
            "EDI": 0, "EFLAGS": 0x2, "CS": 0x08, "DS": 0x10, "ES": 0x10, "FS": 0x10,
            "GS": 0x10, "SS": 0x10, "CR0": 0x11, "CR3": 0, "CR4": 0,
            "GDTR.limit": 0, "GDTR.base": 0, "IDTR.limit": 0, "IDTR.base": 0}
BACKENDS = [("sim", "ept"), ("sim", "shadow"), ("bare", "ept")]


def _image():
    return assemble(GUEST, "entry_state.asm")


def _expected() -> dict[str, int]:
    return {**CONTRACT, "here": _image().symbols["here"]}


def _decode(serial: bytes) -> dict[str, int]:
    assert len(serial) == struct.calcsize(LAYOUT), serial
    return dict(zip(FIELDS, struct.unpack(LAYOUT, serial), strict=True))


def _differences(found: dict[str, int], want: dict[str, int]) -> list[str]:
    return [f"{k}: {found.get(k, 'missing')!s:>10} want {v:#x}" if isinstance(found.get(k), str)
            else f"{k}: {found.get(k, -1):#x} want {v:#x}"
            for k, v in want.items() if found.get(k) != v]


@pytest.mark.parametrize("backend,paging", BACKENDS, ids=["sim-ept", "sim-shadow", "bare"])
def test_guest_sees_the_documented_entry_state(backend: str, paging: str) -> None:
    s = Session(_image(), backend, paging=paging, max_instructions=10_000)
    out = s.run()
    assert out.exit_status == 1, out
    diff = _differences(_decode(bytes(s.serial)), _expected())
    assert not diff, f"{backend}/{paging} entry state:\n" + "\n".join(diff)


def test_guest_sees_the_documented_entry_state_on_host_kvm(tmp_path: Path) -> None:
    problem = host_kvm_problem()
    if problem:
        pytest.skip(problem)
    guest = tmp_path / "entry_state.bin"
    guest.write_bytes(_image().data)
    p = run_cli(["run", "--backend", "kvm", str(guest)])
    assert p.returncode == 1, p.stderr
    diff = _differences(_decode(p.stdout), _expected())
    assert not diff, "kvm entry state:\n" + "\n".join(diff)


def _views(s: Session) -> dict[str, int]:
    regs = s.registers()
    segs = s.segments()
    found = {k: regs[k] for k in ("EAX", "ECX", "EDX", "EBX", "ESP", "EBP", "ESI", "EDI",
                                  "EFLAGS", "CR0", "CR3", "CR4", "EIP")}
    for name in ("CS", "DS", "ES", "FS", "GS", "SS"):
        sel, base, limit = segs[name]
        found[name] = sel
        found[f"{name}.base"], found[f"{name}.limit"] = base, limit
    for name in ("GDTR", "IDTR"):
        _, base, limit = segs[name]
        found[f"{name}.base"], found[f"{name}.limit"] = base, limit
    return found


VIEW_CONTRACT = {**CONTRACT, "EIP": 0x100000,
                 **{f"{n}.base": 0 for n in ("CS", "DS", "ES", "FS", "GS", "SS")},
                 **{f"{n}.limit": 0xFFFFFFFF for n in ("CS", "DS", "ES", "FS", "GS", "SS")}}


@pytest.mark.parametrize("backend,paging", BACKENDS, ids=["sim-ept", "sim-shadow", "bare"])
def test_session_views_show_the_entry_state(backend: str, paging: str) -> None:
    """Before the first instruction, the register and segment views show the contract."""
    s = Session(_image(), backend, paging=paging)
    diff = _differences(_views(s), VIEW_CONTRACT)
    assert not diff, f"{backend}/{paging} views at entry:\n" + "\n".join(diff)
    # After one instruction (mov [SAVE], eax) only EIP has moved.
    s.step_instruction()
    after = _views(s)
    assert after["EIP"] == 0x100005
    assert {k: v for k, v in after.items() if k != "EIP"} == \
        {k: v for k, v in VIEW_CONTRACT.items() if k != "EIP"}


def test_session_views_show_the_entry_state_on_host_kvm() -> None:
    problem = host_kvm_problem()
    if problem:
        pytest.skip(problem)
    s = Session(_image(), "kvm")
    diff = _differences(_views(s), VIEW_CONTRACT)
    assert not diff, "kvm views at entry:\n" + "\n".join(diff)
