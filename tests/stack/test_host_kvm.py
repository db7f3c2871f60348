"""(a) vmsim's simulated kvm.ko against the host's KVM, through the project's own VMM.

The same guest runs with `--backend sim` and `--backend kvm`; what userspace sees must be
identical: the serial output and every field of every `kvm_exit` (struct kvm_run). The host
is the oracle only where it works (tests/../oracles.md): its software KVM (kvm_pvm) cannot
emulate IRET, injects #GP when a 32-bit guest sets CR0.PG, fails on INT n past the IDT
limit, and never returns from KVM_RUN on VMCALL. Guests that reach one of those are
compared up to that point, and there `vmsim run --backend kvm` must say which guest
instruction the host's KVM refused, that it is the host's limit, and exit with 70 (never
hang: a watchdog kicks a KVM_RUN that does not return).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.stack.stackrun import (
    StackRun,
    cut_after_line,
    first_difference,
    host_kvm_problem,
    kvm_exits,
    run_cli,
    run_kvm,
    run_sim,
    sample_guests,
)

# Guest -> (the last COM1 line both must agree on, why the host KVM stops being an oracle).
HOST_KVM_STOPS = {
    "exceptions": (b"rdmsr 0x802", "the host's KVM fails to emulate INT n past the IDT limit "
                                   "(KVM_EXIT_INTERNAL_ERROR) and cannot enable paging"),
}
# Guest -> what `vmsim run --backend kvm` must name where the host's KVM refuses it.
HOST_KVM_REFUSES = {
    "exceptions": "the host's KVM could not run the guest instruction `int 40h` at eip "
                  "0x001001b0 (KVM_EXIT_INTERNAL_ERROR, suberror 1: emulation failure); "
                  "vector 64 is past the IDT limit 0xff, where a CPU raises #GP",
    "hypercall": "the host's KVM did not return from KVM_RUN for 2 s at eip 0x0010009d "
                 "(`vmcall`): the host's KVM does not return to userspace from a guest's VMCALL",
    "paging": "triple fault: guest shut down at eip 0x001000cd (`mov cr0,eax` enables paging, "
              "as a CPU would; the host's KVM injected #GP instead",
    "address_spaces": "triple fault: guest shut down at eip 0x001000af (`mov cr0,eax` enables "
                      "paging, as a CPU would; the host's KVM injected #GP instead",
}
# Guests that take interrupts return from them with IRET, which the host's KVM refuses:
# up to the first one (the in-kernel PIT or APIC timer has fired by then) it is an oracle.
for _irq_guest in ("timer", "apic"):
    HOST_KVM_REFUSES[_irq_guest] = "the host's KVM could not run the guest instruction `iret`"
HOST_KVM_CANNOT = {"hypercall", "paging", "address_spaces", "timer", "apic"}
WATCHDOG = "2"  # seconds: VMSIM_KVM_WATCHDOG for guests that may stay in KVM_RUN
NOT_VMSIM = re.compile(r"; this is a limit of the host's KVM( \(\w+\))?, not of vmsim: "
                       r"try --backend sim$")
HOST_LIMIT = 70  # README: something the backend does not model


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
def test_sample_guest_sim_equals_host_kvm(guest: Path, tmp_path: Path, host_kvm,
                                          monkeypatch) -> None:
    if guest.stem in HOST_KVM_CANNOT:
        monkeypatch.setenv("VMSIM_KVM_WATCHDOG", WATCHDOG)
        kvm, status = _run_kvm(guest, tmp_path)
        if status == HOST_LIMIT:
            _compare_up_to_refusal(guest, kvm)
            return
    # A host KVM that runs it must run it as sim does.
    _compare(guest, tmp_path)


def _compare_up_to_refusal(guest: Path, kvm: StackRun) -> None:
    """The host's KVM stopped part-way: up to there it must agree with sim exit for exit,
    and there it must say what it refused."""
    _assert_refused(kvm.detail, HOST_KVM_REFUSES[guest.stem])
    sim = run_sim(guest)
    before = kvm.exits[:-1]  # the last is the one that ended it (INTR, SHUTDOWN ...)
    diff = first_difference(sim.exits[:len(before)], before)
    assert not diff, f"{guest.name}: userspace exits differ before the host's KVM stopped\n{diff}"
    assert sim.serial.startswith(kvm.serial)


def test_sample_guest_the_host_kvm_refuses_says_so(host_kvm, tmp_path: Path) -> None:
    # exceptions.asm is compared up to its INT 40h above; past it the host's KVM fails.
    kvm, status = _run_kvm(next(p for p in sample_guests() if p.stem == "exceptions"), tmp_path)
    if b"all exceptions caught" in kvm.serial:
        pytest.skip("this host's KVM runs exceptions.asm to its end (compared above)")
    assert status == HOST_LIMIT, kvm.detail
    _assert_refused(kvm.detail, HOST_KVM_REFUSES["exceptions"])


def _run_kvm(guest: Path, tmp: Path) -> tuple[StackRun, int]:
    """run_kvm, keeping the exit status whatever it is."""
    trace = tmp / (guest.stem + ".kvm.jsonl")
    p = run_cli(["run", "--backend", "kvm", "--trace", str(trace), str(guest)])
    lines = trace.read_text().splitlines() if trace.exists() else []
    return (StackRun(p.stdout, None, kvm_exits(lines), p.stderr.decode(errors="replace").strip()),
            p.returncode)


def _assert_refused(stderr: str, expected: str) -> None:
    """One line: what was refused, where, and that it is the host's KVM and not vmsim."""
    line = stderr.splitlines()[-1] if stderr else ""
    assert line.startswith(f"vmsim: {expected}"), stderr
    assert NOT_VMSIM.search(line), line


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


# -- where the host's KVM refuses a guest instruction: a clear message, never a hang ------------
# Each guest runs on sim and on kvm. A host KVM that runs it must end it as sim does; one
# that refuses it (this host's kvm_pvm, oracles.md) must say which instruction, where, that
# it is the host's limit, and exit with 70.

FLAT_GDT = """
        lgdt [gdtr]
        jmp 0x08:.cs
.cs:    mov ax, 0x10
        mov ds, ax
        mov ss, ax
"""
GDT = """
        align 8
gdt:    dq 0
        dq 0x00CF9A000000FFFF
        dq 0x00CF92000000FFFF
gdtr:   dw 23
        dd gdt
"""
REFUSED = {
    # IRET to the next instruction, with a GDT so that CS reloads: a CPU runs it.
    "iret": (f"""bits 32
org 0x100000
        mov esp, 0x90000
{FLAT_GDT}
        pushfd
        push dword 0x08
        push dword after
        iretd
after:  hlt
{GDT}""", "the host's KVM could not run the guest instruction `iret` at eip 0x00100023 "
          "(KVM_EXIT_INTERNAL_ERROR, suberror 1: emulation failure); this"),
    # INT n past the IDT limit (0 at entry): a CPU raises #GP, then #DF, then shuts down.
    "int_past_idt_limit": ("""bits 32
org 0x100000
        mov esp, 0x90000
        int 0x80
        hlt
""", "the host's KVM could not run the guest instruction `int 80h` at eip 0x00100005 "
     "(KVM_EXIT_INTERNAL_ERROR, suberror 1: emulation failure); vector 128 is past the IDT "
     "limit 0x0, where a CPU raises #GP; this"),
    # INT3 with no IDT: the same for the one-byte breakpoint.
    "int3": ("""bits 32
org 0x100000
        int3
""", "the host's KVM could not run the guest instruction `int3` at eip 0x00100000 "
     "(KVM_EXIT_INTERNAL_ERROR, suberror 1: emulation failure); vector 3 is past the IDT "
     "limit 0x0, where a CPU raises #GP; this"),
    # FE /7 is an invalid opcode: a CPU raises #UD (and, with no IDT, shuts down).
    "opcode_fe_7": ("""bits 32
org 0x100000
        mov esp, 0x90000
        nop
        db 0xFE, 0xF8
        hlt
""", "the host's KVM could not run the guest instruction `db 0xfe, 0xf8` at eip 0x00100006 "
     "(KVM_EXIT_INTERNAL_ERROR, suberror 1: emulation failure); it is an invalid opcode, "
     "where a CPU raises #UD; this"),
    # 32-bit paging with one 4 MiB identity page: a CPU enables it and halts.
    "enable_paging": ("""bits 32
org 0x100000
        mov esp, 0x90000
        mov edi, 0x200000
        mov dword [edi], 0x00000083
        mov eax, cr4
        or eax, 0x10
        mov cr4, eax
        mov cr3, edi
        mov eax, cr0
        or eax, 0x80000000
        mov cr0, eax
        hlt
""", "triple fault: guest shut down at eip 0x00100024 (`mov cr0,eax` enables paging, as a CPU "
     "would; the host's KVM injected #GP instead, and the #GP ended in a triple fault); this"),
    # KVM_HC_VAPIC_POLL_IRQ: kvm.ko answers it in the kernel and the guest halts.
    "vmcall": ("""bits 32
org 0x100000
        mov esp, 0x90000
        mov eax, 1
        vmcall
        hlt
""", "the host's KVM did not return from KVM_RUN for 2 s at eip 0x0010000a (`vmcall`): the "
     "host's KVM does not return to userspace from a guest's VMCALL; this"),
}


def _last_line(p) -> str:
    err = p.stderr.decode(errors="replace").strip()
    return err.splitlines()[-1] if err else ""


def _ending(line: str) -> str:
    return line


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_host_kvm_refusal_names_the_instruction(name: str, tmp_path: Path, host_kvm,
                                                monkeypatch) -> None:
    source, expected = REFUSED[name]
    guest = tmp_path / f"{name}.asm"
    guest.write_text(source)
    monkeypatch.setenv("VMSIM_KVM_WATCHDOG", WATCHDOG)
    kvm = run_cli(["run", "--backend", "kvm", str(guest)])
    if kvm.returncode != HOST_LIMIT:
        # This host's KVM runs it: then it ends as a CPU would, as on sim.
        sim = run_cli(["run", "--max-instructions", "100000", str(guest)])
        assert (kvm.returncode, _ending(_last_line(kvm))) == (sim.returncode,
                                                              _ending(_last_line(sim)))
        return
    line = _last_line(kvm)
    assert line.startswith(f"vmsim: {expected.removesuffix('; this')}"), line
    assert NOT_VMSIM.search(line), line
    assert "Traceback" not in kvm.stderr.decode(errors="replace")


def test_triple_fault_reads_as_on_sim(tmp_path: Path, host_kvm) -> None:
    # UD2 with no IDT: #UD, #DF, shutdown, on any CPU. Same words, same EIP, status 0.
    guest = tmp_path / "ud2.asm"
    guest.write_text("bits 32\norg 0x100000\n        mov esp, 0x90000\n        ud2\n")
    sim = run_cli(["run", str(guest)])
    kvm = run_cli(["run", "--backend", "kvm", str(guest)])
    assert _last_line(sim) == "vmsim: triple fault: guest shut down at eip 0x00100005"
    assert (kvm.returncode, _last_line(kvm)) == (sim.returncode, _last_line(sim)) == (
        0, "vmsim: triple fault: guest shut down at eip 0x00100005")


def test_halt_reads_as_on_sim(tmp_path: Path, host_kvm, monkeypatch) -> None:
    # The EIP after HLT comes from KVM_GET_REGS on the host's KVM, as from the VMCS on sim.
    # With the in-kernel irqchip (the default) HLT stays in the host's kvm.ko: the
    # watchdog's kick finds it KVM_MP_STATE_HALTED with IF=0, halted for good.
    monkeypatch.setenv("VMSIM_KVM_WATCHDOG", "1")
    guest = tmp_path / "halt.asm"
    guest.write_text("bits 32\norg 0x100000\n        nop\n        hlt\n")
    sim = run_cli(["run", str(guest)])
    kvm = run_cli(["run", "--backend", "kvm", str(guest)])
    assert (kvm.returncode, _last_line(kvm)) == (sim.returncode, _last_line(sim)) == (
        0, "vmsim: the guest halted at eip 0x00100002")


def test_a_guest_that_never_exits_is_stopped_by_the_watchdog(tmp_path: Path, host_kvm,
                                                            monkeypatch) -> None:
    # jmp $: no exit to userspace ever, and KVM counts no instructions for
    # --max-instructions: the watchdog ends it, says how to change it, status 124.
    guest = tmp_path / "spin.asm"
    guest.write_text("bits 32\norg 0x100000\nspin:   jmp spin\n")
    monkeypatch.setenv("VMSIM_KVM_WATCHDOG", "0.5")
    kvm = run_cli(["run", "--backend", "kvm", str(guest)])
    assert kvm.returncode == 124, kvm.stderr
    assert _last_line(kvm) == (
        "vmsim: the host's KVM did not return from KVM_RUN for 0.5 s at eip 0x00100000 "
        "(`jmp short 00100000h`): the guest ran that long without an exit to vmsim; "
        "VMSIM_KVM_WATCHDOG=SECONDS sets how long one KVM_RUN may take (0: no limit); "
        "--max-instructions does not apply on --backend kvm")


def test_max_instructions_on_kvm_says_why_not(tmp_path: Path, host_kvm) -> None:
    guest = tmp_path / "halt.asm"
    guest.write_text("bits 32\norg 0x100000\n        hlt\n")
    kvm = run_cli(["run", "--backend", "kvm", "--max-instructions", "10", str(guest)])
    assert kvm.returncode == 2
    assert _last_line(kvm).startswith("vmsim: --max-instructions does not apply on --backend "
                                      "kvm: the host's KVM counts no guest instructions; there "
                                      "each KVM_RUN is bounded by a watchdog instead "
                                      "(VMSIM_KVM_WATCHDOG=SECONDS, default 5; 0 for none)")


def test_watchdog_setting_is_checked(tmp_path: Path, host_kvm, monkeypatch) -> None:
    guest = tmp_path / "halt.asm"
    guest.write_text("bits 32\norg 0x100000\n        hlt\n")
    monkeypatch.setenv("VMSIM_KVM_WATCHDOG", "-1")
    kvm = run_cli(["run", "--backend", "kvm", str(guest)])
    assert (kvm.returncode, _last_line(kvm)) == (
        2, "vmsim: VMSIM_KVM_WATCHDOG=-1: expected a number of seconds (0 turns the watchdog off)")


def test_code_outside_ram_is_kvms_limit_on_any_host(tmp_path: Path, host_kvm) -> None:
    # A jump where no RAM is: KVM (upstream, this host's, and vmsim's kvm.ko alike) fails
    # to emulate a fetch from MMIO. Not a limit of this host to tell apart from vmsim's.
    guest = tmp_path / "jump_out.asm"
    guest.write_text("bits 32\norg 0x100000\n        mov eax, 0x40000000\n        jmp eax\n")
    sim = run_cli(["run", "--max-instructions", "1000", str(guest)])
    assert "KVM_EXIT_INTERNAL_ERROR" in _last_line(sim) and "0x40000000" in _last_line(sim)
    kvm = run_cli(["run", "--backend", "kvm", str(guest)])
    assert (kvm.returncode, _last_line(kvm)) == (
        HOST_LIMIT, "vmsim: the host's KVM could not fetch a guest instruction at eip 0x40000000: "
                    "no RAM is there (KVM_EXIT_INTERNAL_ERROR, suberror 1: emulation failure); "
                    "KVM runs guest code from RAM only")
