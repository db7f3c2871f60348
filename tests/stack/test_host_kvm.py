"""(a) vmsim's simulated kvm.ko against the host's KVM, through the project's own VMM.

The same guest runs with `--backend sim` and `--backend kvm`; what userspace sees must be
identical: the serial output and every field of every `kvm_exit` (struct kvm_run). The host
is the oracle only where it works (tests/../oracles.md): its software KVM (kvm_pvm) cannot
emulate IRET, injects #GP when a 32-bit guest sets CR0.PG, fails on INT n past the IDT
limit, and never returns from KVM_RUN on VMCALL. Guests that reach one of those are
compared up to the line they print just before it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.stack.stackrun import (
    cut_after_line,
    first_difference,
    host_kvm_problem,
    run_kvm,
    run_sim,
    sample_guests,
)

# Guest -> (the last COM1 line both must agree on, why the host KVM stops being an oracle).
HOST_KVM_STOPS = {
    "exceptions": (b"rdmsr 0x802", "the host's KVM fails to emulate INT n past the IDT limit "
                                   "(KVM_EXIT_INTERNAL_ERROR) and cannot enable paging"),
}
HOST_KVM_CANNOT = {
    "hypercall": "the host's KVM (kvm_pvm) never returns from KVM_RUN on VMCALL",
    "paging": "the host's KVM (kvm_pvm) injects #GP when a 32-bit guest sets CR0.PG",
    "address_spaces": "the host's KVM (kvm_pvm) injects #GP when a 32-bit guest sets CR0.PG",
}


@pytest.fixture(scope="module")
def host_kvm() -> None:
    problem = host_kvm_problem()
    if problem:
        pytest.skip(problem)


def _compare(guest: Path, tmp_path: Path) -> None:
    sim = run_sim(guest)
    kvm = run_kvm(guest, tmp_path)
    stop = HOST_KVM_STOPS.get(guest.stem)
    sim_exits, kvm_exits = sim.exits, kvm.exits
    if stop is not None:
        sim_exits = cut_after_line(sim.exits, stop[0])
        kvm_exits = cut_after_line(kvm.exits, stop[0])
    diff = first_difference(sim_exits, kvm_exits)
    assert not diff, f"{guest.name}: userspace exits differ between sim and kvm\n{diff}"
    if stop is None:
        assert sim.serial == kvm.serial, (guest.name, sim.serial, kvm.serial, kvm.detail)
        assert sim.status == kvm.status, (sim.status, kvm.status, kvm.detail)


@pytest.mark.parametrize("guest", sample_guests(), ids=lambda p: p.stem)
def test_sample_guest_sim_equals_host_kvm(guest: Path, tmp_path: Path, host_kvm) -> None:
    if guest.stem in HOST_KVM_CANNOT:
        pytest.skip(HOST_KVM_CANNOT[guest.stem])
    _compare(guest, tmp_path)


# -- small guests, one behaviour each ------------------------------------------------------------
# Every one prints nothing itself: what it did reaches userspace as exits. After the
# instruction under test, `dump` sends the registers it changed and the bytes it wrote to
# an unclaimed port, so the exits show them too.

PROLOGUE = """bits 32
org 0x100000
        cld
        mov esp, 0x90000
"""
EPILOGUE = """
        ; dump: EAX ECX ESI EDI, then 16 bytes at BUF, to port 0x2E0 (nobody's)
        push edx
        mov dx, 0x2E0
        out dx, eax
        mov eax, ecx
        out dx, eax
        mov eax, esi
        out dx, eax
        mov eax, edi
        out dx, eax
        mov esi, BUF
        mov ecx, 4
        cld
        rep outsd
        pop edx
        mov dx, 0x501
        mov al, 0
        out dx, al
        hlt
"""
VGA = 0xB8000
LSR, SCRATCH = 0x3FD, 0x3FF


def _guest(body: str, buf: int = 0x200000) -> str:
    return f"BUF equ {buf:#x}\n{PROLOGUE}{body}{EPILOGUE}"


def _rep_ins(size: int, count: int, page_offset: int, backwards: bool = False,
             port: int = LSR) -> str:
    ins = {1: "insb", 2: "insw", 4: "insd"}[size]
    return _guest(f"""
        mov dx, {SCRATCH:#x}
        mov al, 0x5A
        out dx, al
        mov edi, {0x200000 + page_offset:#x}
        mov ecx, {count}
        mov dx, {port:#x}
        {"std" if backwards else ""}
        rep {ins}
        cld
""", buf=0x200000 + (page_offset & ~0xF))


SMALL_GUESTS = {
    # rep ins*: Linux reads ahead min(ECX, bytes left in the page, 1024 / size) elements
    "rep_insb_1": _rep_ins(1, 1, 0),
    "rep_insb_3": _rep_ins(1, 3, 0),
    "rep_insb_17_at_ffe": _rep_ins(1, 17, 0xFFE),
    "rep_insb_8_at_ffd_scratch": _rep_ins(1, 8, 0xFFD, port=SCRATCH),
    "rep_insb_1025": _rep_ins(1, 1025, 0),
    "rep_insb_1100_at_800": _rep_ins(1, 1100, 0x800),
    "rep_insw_5_at_ffc": _rep_ins(2, 5, 0xFFC),
    "rep_insw_3_at_ffd": _rep_ins(2, 3, 0xFFD),
    "rep_insd_3_at_ffe": _rep_ins(4, 3, 0xFFE),
    "rep_insd_600": _rep_ins(4, 600, 0x10),
    "rep_insb_std_4_at_10": _rep_ins(1, 4, 0x10, backwards=True),
    "rep_insb_std_3_at_0": _rep_ins(1, 3, 0x1000, backwards=True),
    "rep_insw_std_4_at_ff4": _rep_ins(2, 4, 0xFF4, backwards=True),
    "rep_insb_0": _rep_ins(1, 0, 0),
    "insb_insw_insd": _guest("""
        mov dx, 0x2E0
        mov edi, BUF
        insb
        insw
        insd
"""),
    "rep_outsb_std": _guest("""
        mov dword [BUF], 0x64636261
        mov esi, BUF + 3
        mov ecx, 4
        mov dx, 0x3F8
        std
        rep outsb
        cld
"""),
    "rep_outsw_3": _guest("""
        mov dword [BUF], 0x22221111
        mov dword [BUF + 4], 0x44443333
        mov esi, BUF
        mov ecx, 3
        mov dx, 0x2E0
        rep outsw
"""),
    "rep_outsd_2_across_page": _guest("""
        mov dword [BUF + 0xFFC], 0x11111111
        mov dword [BUF + 0x1000], 0x22222222
        mov esi, BUF + 0xFFE
        mov ecx, 2
        mov dx, 0x2E0
        rep outsd
"""),
    "in_out_imm8_all_sizes": _guest("""
        mov eax, 0x12345678
        out 0xE0, al
        out 0xE0, ax
        out 0xE0, eax
        in al, 0xE0
        in ax, 0xE0
        in eax, 0xE0
"""),
    "in_out_dx_all_sizes": _guest("""
        mov dx, 0x3FF
        mov al, 0xC3
        out dx, al
        xor eax, eax
        in al, dx
        mov [BUF], eax
        mov dx, 0x2E0
        mov eax, 0x87654321
        out dx, al
        out dx, ax
        out dx, eax
        in ax, dx
        mov [BUF + 4], eax
        in eax, dx
        mov [BUF + 8], eax
"""),
    # MMIO: every access of a string instruction is its own KVM_EXIT_MMIO
    "rep_movsb_to_vga": _guest(f"""
        mov dword [BUF], 0x44434241
        mov byte [BUF + 4], 0x45
        mov esi, BUF
        mov edi, {VGA:#x}
        mov ecx, 5
        rep movsb
"""),
    "rep_stosd_to_vga": _guest(f"""
        mov eax, 0x1F411F42
        mov edi, {VGA + 0x10:#x}
        mov ecx, 3
        rep stosd
"""),
    "rep_stosw_std_to_vga": _guest(f"""
        mov eax, 0x2E43
        mov edi, {VGA + 0x20:#x}
        mov ecx, 3
        std
        rep stosw
        cld
"""),
    "rep_movsw_from_vga": _guest(f"""
        mov dword [{VGA:#x}], 0x07420741
        mov word [{VGA + 4:#x}], 0x0743
        mov esi, {VGA:#x}
        mov edi, BUF
        mov ecx, 3
        rep movsw
"""),
    "rep_movsb_vga_to_vga": _guest(f"""
        mov word [{VGA:#x}], 0x3132
        mov esi, {VGA:#x}
        mov edi, {VGA + 0x40:#x}
        mov ecx, 2
        rep movsb
"""),
    "add_mem_eax_on_vga": _guest(f"""
        mov dword [{VGA:#x}], 0x01020304
        mov eax, 0x10101010
        add [{VGA:#x}], eax
        mov eax, [{VGA:#x}]
"""),
    "movzx_from_vga": _guest(f"""
        mov dword [{VGA:#x}], 0x8081F0F1
        movzx eax, byte [{VGA + 1:#x}]
        mov [BUF], eax
        movzx eax, word [{VGA + 2:#x}]
        mov [BUF + 4], eax
        movsx eax, byte [{VGA + 3:#x}]
"""),
    "xchg_and_rmw_on_vga": _guest(f"""
        mov dword [{VGA:#x}], 0x11223344
        mov eax, 0x55667788
        xchg [{VGA:#x}], eax
        mov [BUF], eax
        or word [{VGA + 2:#x}], 0x0F0F
        inc byte [{VGA + 1:#x}]
        mov eax, [{VGA:#x}]
"""),
    "vga_access_across_a_page": _guest(f"""
        mov eax, 0xA1B2C3D4
        mov [{VGA + 0xFFE:#x}], eax
        mov eax, [{VGA + 0xFFE:#x}]
        mov [BUF], eax
        mov ax, [{VGA + 0xFFF:#x}]
"""),
    "push_pop_vga": _guest(f"""
        mov dword [{VGA:#x}], 0xCAFEF00D
        push dword [{VGA:#x}]
        pop dword [{VGA + 8:#x}]
        mov eax, [{VGA + 8:#x}]
"""),
    "lods_cmps_scas_on_vga": _guest(f"""
        mov dword [{VGA:#x}], 0x41424344
        mov dword [BUF], 0x41424344
        mov esi, {VGA:#x}
        lodsd
        mov [BUF + 4], eax
        mov esi, {VGA:#x}
        mov edi, BUF
        mov ecx, 4
        repe cmpsb
        mov [BUF + 8], ecx
        mov edi, {VGA:#x}
        mov al, 0x42
        mov ecx, 4
        repne scasb
"""),
    "rep_insb_into_vga": _guest(f"""
        mov edi, {VGA:#x}
        mov ecx, 3
        mov dx, 0x3FD
        rep insb
        mov eax, [{VGA:#x}]
"""),
    "rep_insb_20_into_vga_across_a_page": _guest(f"""
        mov edi, {VGA + 0xFFA:#x}
        mov ecx, 20
        mov dx, 0x3FD
        rep insb
        mov eax, [{VGA + 0xFFA:#x}]
"""),
    "rep_insw_std_into_vga": _guest(f"""
        mov edi, {VGA + 0x10:#x}
        mov ecx, 3
        mov dx, 0x3FD
        std
        rep insw
        cld
"""),
    "rep_outsb_from_vga": _guest(f"""
        mov dword [{VGA:#x}], 0x0A216968
        mov esi, {VGA:#x}
        mov ecx, 4
        mov dx, 0x3F8
        rep outsb
"""),
}


@pytest.mark.parametrize("name", sorted(SMALL_GUESTS))
def test_small_guest_sim_equals_host_kvm(name: str, tmp_path: Path, host_kvm) -> None:
    guest = tmp_path / f"{name}.asm"
    guest.write_text(SMALL_GUESTS[name])
    _compare(guest, tmp_path)
