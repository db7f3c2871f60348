"""EPT and shadow paging: both invisible to the guest, each with its own mechanism."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.mmu.guests import guest
from vmsim.hw.ept import EPT_IGNORE_PAT, EPT_MT_WB, EPT_RWX
from vmsim.session import Session

ROOT = Path(__file__).resolve().parents[2]
AS = ROOT / "sample_guests" / "address_spaces.asm"
MODES = ("ept", "shadow")


def run(image, paging: str = "ept", backend: str = "sim", kinds: tuple[str, ...] = ()):
    s = Session(image, backend, paging=paging) if backend != "bare" else Session(image, "bare")
    seen = []
    if kinds:
        s.events.subscribe(seen.append, list(kinds))
    outcome = s.run()
    return s, outcome, seen


# A guest that pages, touches memory, edits a PTE and reports what it sees, including
# #PF error codes and CR2 from its own handler, and the A/D bits of its PTEs.
PROBE = guest("""
        ; IDT with a #PF handler (32-bit interrupt gate) that records CR2 and the error
        ; code, then maps the page back
        mov eax, pf_handler
        mov word [idt + 14*8], ax
        mov word [idt + 14*8 + 2], 0x08
        mov word [idt + 14*8 + 4], 0x8E00
        shr eax, 16
        mov word [idt + 14*8 + 6], ax
        lidt [idt_descriptor]

        mov eax, [0x3000]                 ; read: A only
        mov dword [0x5000], 7             ; write: A and D
        mov eax, [0x400000 + 0x1234]      ; through the 4 MiB page
        mov dword [PT + 0x6*4], 0         ; unmap linear 0x6000
        invlpg [0x6000]
        mov dword [0x6000 + 0x10], 1      ; #PF: not present, write -> handler maps it back
        mov eax, [fault_cr2]
        call puthex
        mov eax, [fault_code]
        call puthex
        mov dword [PT + 0x7*4], 0x7000 | 1 ; read-only
        invlpg [0x7000]
        mov dword [0x7000], 1              ; #PF: protection, write (CR0.WP=1)
        mov eax, [fault_cr2]
        call puthex
        mov eax, [fault_code]
        call puthex
        mov eax, [PT + 0x3*4]             ; A/D as the hardware left them
        call puthex
        mov eax, [PT + 0x5*4]
        call puthex
        mov eax, [PD + 4]
        call puthex
        mov eax, cr3                      ; the guest's own CR3, in every mode
        call puthex
        jmp done

pf_handler:
        push eax
        mov eax, cr2
        mov [fault_cr2], eax
        mov eax, [esp + 4]
        mov [fault_code], eax
        mov eax, cr2
        shr eax, 12
        shl eax, 12
        or eax, 3
        push ebx
        mov ebx, cr2
        shr ebx, 12
        mov [PT + ebx*4], eax             ; map it back, writable
        shl ebx, 12
        invlpg [ebx]
        pop ebx
        pop eax
        add esp, 4                        ; the error code
        iretd

        align 8
idt:    times 32 dq 0
idt_descriptor:
        dw 32*8 - 1
        dd idt
fault_cr2:  dd 0
fault_code: dd 0
done:
""")


def expected_probe_lines() -> list[str]:
    # Derived from the SDM, not from vmsim: #PF error code bit 0 P (protection), bit 1 W/R;
    # CR2 = the faulting linear address; A (bit 5) on every used entry, D (bit 6) on
    # written leaves; a 4 MiB PDE (PS, bit 7) read: A set, D clear.
    return ["00006010", "00000002",       # not present, write
            "00007000", "00000003",       # protection, write
            "00003023", "00005063",       # PTE 3 read: A; PTE 5 written: A and D
            "004000a3",                   # the 4 MiB PDE: 0x83 | A
            "00200000"]                   # CR3 as the guest loaded it


@pytest.mark.parametrize("backend, paging", [("bare", "ept"), ("sim", "ept"), ("sim", "shadow")])
def test_paging_state_the_guest_sees_is_the_same_everywhere(backend: str, paging: str) -> None:
    s, outcome, _ = run(PROBE, paging, backend)
    assert outcome.exit_status == 1, bytes(s.serial)
    assert bytes(s.serial).decode().split() == expected_probe_lines()


@pytest.mark.parametrize("paging", MODES)
def test_address_spaces_sample_matches_bare_metal(paging: str) -> None:
    bare, _, _ = run(str(AS), backend="bare")
    s, outcome, _ = run(str(AS), paging)
    assert outcome.exit_status == 1
    assert bytes(s.serial) == bytes(bare.serial)
    assert b"A/D of user PTEs: 310031003110" in bytes(s.serial)


def test_address_spaces_sample_on_qemu(tmp_path: Path) -> None:
    qemu, nasm = shutil.which("qemu-system-i386"), shutil.which("nasm")
    if not qemu or not nasm:
        pytest.skip("needs qemu-system-i386 and nasm (Debian qemu-system-x86, nasm)")
    binary = tmp_path / "as.bin"
    subprocess.run([nasm, "-f", "bin", "-o", str(binary), str(AS)], check=True)
    p = subprocess.run([qemu, "-M", "pc", "-m", "16", "-display", "none", "-nodefaults",
                        "-device", "VGA", "-serial", "stdio", "-device",
                        "isa-debug-exit,iobase=0x501,iosize=1", "-kernel", str(binary),
                        "-no-reboot"], capture_output=True, timeout=60)
    for paging in MODES:
        s, _, _ = run(str(AS), paging)
        assert bytes(s.serial) == p.stdout
    assert p.returncode == 1


# -- EPT ---------------------------------------------------------------------------------------

def test_ept_is_built_lazily_on_first_touch() -> None:
    s, _, events = run(str(ROOT / "sample_guests" / "hello.asm"), "ept",
                       kinds=("kvm_exit", "tdp_map"))
    first = events[0]
    # The first instruction fetch: EPT violation, qualification fetch (bit 2) with a valid
    # guest-linear address (bit 7) that was the final translation (bit 8): 0x184.
    assert (first.kind, first["exit_reason"], first["info1"]) == ("kvm_exit", "EPT_VIOLATION",
                                                                  0x184)
    assert first["guest_physical_address"] == 0x100000
    maps = [e for e in events if e.kind == "tdp_map" and not e["mmio"]]
    assert maps[0]["gfn"] == 0x100 and maps[0]["new_tables"] == 3  # PDPT, PD and PT
    tdp = s.vm.kvm.vm.tdp
    leaf = dict(tdp.entries())[0x100]
    assert leaf == (0x100 << 12) | EPT_RWX | EPT_MT_WB | EPT_IGNORE_PAT
    # Each RAM page faults once: no gfn is mapped twice.
    gfns = [e["gfn"] for e in maps]
    assert len(gfns) == len(set(gfns))


def test_mmio_through_ept_violation_then_misconfig() -> None:
    _, _, events = run(str(ROOT / "sample_guests" / "hello.asm"), "ept", kinds=("kvm_exit",))
    vga = [e["exit_reason"] for e in events if e["guest_physical_address"] is not None
           and 0xB8000 <= e["guest_physical_address"] < 0xC0000]
    assert vga[0] == "EPT_VIOLATION"
    assert set(vga[1:]) == {"EPT_MISCONFIG"} and len(vga) == 26


def test_two_dimensional_walk_makes_14_references_for_a_4k_page() -> None:
    # 32-bit paging over 4-level EPT: each of the 2 guest references costs a 4-step EPT
    # walk, and the data's guest-physical address one more: 2*(4+1) + 4 = 14.
    body = """
        mov eax, [0x3000]                 ; warm: tables mapped in EPT
        invlpg [0x3000]
marker: mov eax, [0x3000]                 ; a TLB miss: one full 2D walk
        jmp done
done:
"""
    image = guest(body)
    s = Session(image, "sim", paging="ept")
    refs: list = []
    marker = image.symbols["marker"]
    counting = {"on": False}

    def listen(ev) -> None:
        if ev.kind == "kvm_exit":
            return
        if counting["on"] and ev["linear"] == 0x3000:
            refs.append((ev.kind, ev["level"]))

    s.events.subscribe(listen, ["walk_step", "ept_step"])
    # Run up to the marker, then count the walk of the data access that follows.
    while s.cpus[0].eip != marker:
        s.step_instruction()
    counting["on"] = True
    s.step_instruction()
    guest_refs = [r for r in refs if r[0] == "walk_step"]
    ept_refs = [r for r in refs if r[0] == "ept_step"]
    assert len(guest_refs) == 2 and len(ept_refs) == 12
    assert len(refs) == 14


# -- shadow paging ----------------------------------------------------------------------------

def test_shadow_cr3_switches_exit_and_roots_are_per_address_space() -> None:
    _, _, events = run(str(AS), "shadow", kinds=("kvm_exit", "kvm_mmu_get_page", "kvm_cr"))
    cr3_loads = [e for e in events if e.kind == "kvm_exit" and e["exit_reason"] == "CR_ACCESS"
                 and e["info1"] & 0xF == 3 and (e["info1"] >> 4) & 3 == 0]
    # Each is kvm:kvm_cr's cr_write to CR 3 (handle_cr -> trace_kvm_cr_write).
    assert len([e for e in events if e.kind == "kvm_cr" and e["cr"] == 3 and e["rw"] == 1]) \
        == len(cr3_loads)
    # address_spaces.asm loads CR3: once to start, 3 per round x 16 rounds, once for the
    # edit, 3 for the report.
    assert len(cr3_loads) == 1 + 3 * 16 + 1 + 3
    roots = {e["gfn"] for e in events if e.kind == "kvm_mmu_get_page" and e["created"]
             and e["level"] == 2 and not e["direct"]}
    assert roots == {0x200, 0x201, 0x202}  # one shadow root per guest page directory


def test_shadow_write_protection_emulates_page_table_edits() -> None:
    _, _, events = run(str(AS), "shadow", kinds=("pte_write", "kvm_exit"))
    writes = [e for e in events if e.kind == "pte_write"]
    # The guest's page-table writes after paging is on: the one PTE edit (PT_U of process
    # 2, entry 2) goes through emulation and zaps its shadow.
    assert [(w["gfn"], w["index"]) for w in writes] == [(0x206, 2)]
    assert any(e.kind == "kvm_exit" and e["exit_reason"] == "INVLPG" for e in events)


def test_shadow_page_fault_is_injected_with_the_guests_error_code() -> None:
    _, _, events = run(PROBE, "shadow", kinds=("kvm_page_fault", "kvm_inj_exception"))
    injected = [e["fault_address"] for e in events
                if e.kind == "kvm_page_fault" and e["action"] == "inject #PF"]
    assert injected == [0x6010, 0x7000]
    # and the next VM entry injects each (kvm:kvm_inj_exception: #PF with its error code)
    inj = [e for e in events if e.kind == "kvm_inj_exception" and e["exception"] == 14]
    assert len(inj) == 2 and all(e["has_error"] for e in inj)


def test_ept_leaves_the_guest_alone() -> None:
    _, _, events = run(str(AS), "ept", kinds=("kvm_exit",))
    reasons = {e["exit_reason"] for e in events}
    # No CR3, INVLPG or #PF exits under EPT: only I/O, EPT violations, and the CR0 write
    # that turns paging on (CR0 bits other than TS and WP belong to KVM).
    assert reasons <= {"IO_INSTRUCTION", "EPT_VIOLATION", "CR_ACCESS"}
    assert sum(e["exit_reason"] == "CR_ACCESS" for e in events) == 1
