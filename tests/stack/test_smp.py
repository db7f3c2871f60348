"""Several vCPUs (issue 10): the entry contract of every vCPU, known answers from
sample_guests/smp.asm, deterministic interleaving, the BQL under contention, and an INIT
IPI that leaves a vCPU waiting for a SIPI that never comes.

Independent expectations:
- vmsim's entry contract (README, DESIGN "The machine"): every vCPU starts where vCPU 0
  does, with ESP = 0x100000 - index * 0x10000; CPUID leaf 1 as QEMU's cpu_x86_cpuid fills
  it (target/i386/cpu.c): EBX[31:24] the initial APIC ID (= the vCPU's index, set per
  vCPU with KVM_SET_CPUID2), and when the package has more than one logical processor
  EBX[23:16] their number and EDX.HTT (bit 28);
- LOCK-prefixed read-modify-writes are atomic (SDM Vol. 3A "Locked Atomic Operations"):
  N vCPUs adding 1 a known number of times give exactly the sum;
- QEMU's BQL is a mutex: one holder; vmsim's hand-off is FIFO (vmsim.clock.Mutex);
- an INIT IPI puts the target in wait-for-SIPI (SDM Vol. 3A "INIT" / KVM's
  KVM_MP_STATE_INIT_RECEIVED); it runs nothing until a SIPI.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.stack.irqguests import OK, run
from tests.stack.stackrun import host_kvm_problem, run_cli
from vmsim.asm import assemble
from vmsim.cli import main
from vmsim.costs import COSTS

ROOT = Path(__file__).resolve().parents[2]
SMP = ROOT / "sample_guests" / "smp.asm"
ADDS, LOCKED_ADDS = 100_000, 1_000  # per vCPU, as smp.asm says

PUT = """
; puthex8: EAX as 8 hexadecimal digits on COM1
puthex8:
        pushad
        mov ecx, 8
.d:     rol eax, 4
        mov ebx, eax
        and ebx, 0xF
        mov bl, [hexdigits + ebx]
        push eax
        mov dx, 0x3FD
.t:     in al, dx
        test al, 0x20
        jz .t
        mov al, bl
        mov dx, 0x3F8
        out dx, al
        pop eax
        loop .d
        popad
        ret
putc:
        push edx
        push eax
        mov dx, 0x3FD
.t:     in al, dx
        test al, 0x20
        jz .t
        pop eax
        mov dx, 0x3F8
        out dx, al
        pop edx
        ret
hexdigits: db "0123456789ABCDEF"
"""

# Every vCPU records its entry ESP and CPUID leaf 1 in a table indexed by its APIC ID and
# counts itself in with LOCK INC; vCPU 0 waits for all N, then prints one line per vCPU:
# "ESP EBX EDX" in hex. The others park with CLI; HLT.
ENTRY = """
bits 32
org 0x100000
start:
        mov ebp, esp                    ; the entry ESP, before anything moves it
        mov eax, 1
        cpuid
        mov esi, ebx
        shr esi, 24
        and esi, 7
        mov [esp_of + esi*4], ebp
        mov [ebx_of + esi*4], ebx
        mov [edx_of + esi*4], edx
        lock inc dword [done]
        test esi, esi
        jnz park
        shr ebx, 16
        and ebx, 0xFF
        jnz .n
        inc ebx
.n:     pause
        cmp [done], ebx
        jb .n
        xor edi, edi
.line:  mov eax, [esp_of + edi*4]
        call puthex8
        mov al, ' '
        call putc
        mov eax, [ebx_of + edi*4]
        call puthex8
        mov al, ' '
        call putc
        mov eax, [edx_of + edi*4]
        call puthex8
        mov al, 10
        call putc
        inc edi
        cmp edi, ebx
        jb .line
        mov dx, 0x501
        mov al, 0
        out dx, al
park:   cli
        hlt
""" + PUT + """
        align 4
done:   dd 0
esp_of: times 8 dd 0
ebx_of: times 8 dd 0
edx_of: times 8 dd 0
"""


def _entry_lines(serial: bytes) -> list[tuple[int, int, int]]:
    out = []
    for line in serial.decode().splitlines():
        m = re.fullmatch(r"([0-9A-F]{8}) ([0-9A-F]{8}) ([0-9A-F]{8})", line)
        assert m, f"unexpected line {line!r}"
        out.append(tuple(int(g, 16) for g in m.groups()))
    return out


def _check_entry(serial: bytes, n: int) -> None:
    lines = _entry_lines(serial)
    assert len(lines) == n
    low = {ebx & 0xFFFF for _, ebx, _ in lines}
    assert len(low) == 1  # the rest of EBX is the same model for every vCPU
    for i, (esp, ebx, edx) in enumerate(lines):
        assert esp == 0x100000 - i * 0x10000, f"vcpu{i}"
        assert ebx >> 24 == i, f"vcpu{i}"
        assert (ebx >> 16) & 0xFF == (n if n > 1 else 0), f"vcpu{i}"
        if n > 1:  # EDX.HTT with more than one (for one, the CPU model's own bit)
            assert edx & (1 << 28), f"vcpu{i}"


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_every_vcpu_enters_with_its_own_esp_and_apic_id(n: int) -> None:
    r = run(assemble(ENTRY, "entry.asm"), smp=n)
    assert r.status == OK, r.outcome.reason
    _check_entry(r.serial, n)
    # One KVM_SET_CPUID2 per vCPU, each on its own vCPU fd.
    assert sorted(e["cpu_index"] for e in r.of("kvm_vcpu_ioctl", name="KVM_SET_CPUID2")) == \
        list(range(n))


@pytest.mark.parametrize("n", [1, 2])
def test_entry_contract_on_the_hosts_kvm(n: int, tmp_path: Path) -> None:
    why = host_kvm_problem()
    if why:
        pytest.skip(why)
    guest = tmp_path / "entry.asm"
    guest.write_text(ENTRY)
    p = run_cli(["run", "--backend", "kvm", "--smp", str(n), str(guest)])
    assert p.returncode == OK, p.stderr.decode(errors="replace")
    _check_entry(p.stdout, n)


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_smp_guest_totals(n: int) -> None:
    r = run(SMP, smp=n, limit=20_000_000)
    assert r.status == OK, r.outcome.reason
    assert r.serial == (f"smp: vcpus {n}, counter {n * ADDS}, "
                        f"under the lock {n * LOCKED_ADDS}\n").encode()
    # Every vCPU ran guest code: N threads, each entered the guest.
    assert {e["source"] for e in r.of("kvm_entry")} == {f"vcpu{i}" for i in range(n)}


def test_smp_trace_is_byte_identical_twice(tmp_path: Path, capsysbinary) -> None:
    traces = []
    for name in ("1.jsonl", "2.jsonl"):
        out = tmp_path / name
        status = main(["run", "--smp", "4", "--trace", str(out), str(SMP)])
        assert status == OK
        traces.append(out.read_bytes())
    assert traces[0] == traces[1]
    # ... and it is an interleaving of all four vCPU threads and the main loop.
    sources = set(re.findall(rb'"source":"(vcpu\d|main-loop)"', traces[0]))
    assert sources == {b"vcpu0", b"vcpu1", b"vcpu2", b"vcpu3", b"main-loop"}


# -- the BQL under contention -------------------------------------------------------------------

# Every vCPU writes its own letter to COM1 ROUNDS times, without waiting for THRE: every
# OUT exits to QEMU, whose serial model runs under the BQL.
CHATTY = """
bits 32
org 0x100000
start:
        mov eax, 1
        cpuid
        shr ebx, 24
        lea eax, [ebx + 'A']
        mov ecx, {rounds}
        mov dx, 0x3F8
.o:     out dx, al
        loop .o
        lock inc dword [done]
        test ebx, ebx
        jnz park
        mov eax, 1
        cpuid
        shr ebx, 16
        and ebx, 0xFF
.w:     pause
        cmp [done], ebx
        jb .w
        mov dx, 0x501
        mov al, 0
        out dx, al
park:   cli
        hlt
        align 4
done:   dd 0
"""


def test_bql_contention_names_the_holder_and_hands_off_in_order() -> None:
    n, rounds = 4, 30
    r = run(assemble(CHATTY.format(rounds=rounds), "chatty.asm"), smp=n)
    assert r.status == OK, r.outcome.reason
    for i in range(n):
        assert r.serial.count(bytes([ord("A") + i])) == rounds
    bql = r.of("bql")
    waits = [e for e in bql if e["action"] == "wait"]
    # The four vCPUs run the same code from the same time: their first OUTs reach QEMU
    # together, and three queue behind vCPU 0, which holds the BQL for one device access.
    first = [e for e in waits if e["holder"] == "vcpu0"][:3]
    assert [e["source"] for e in first] == ["vcpu1", "vcpu2", "vcpu3"]
    assert len({e["time"] for e in first}) == 1
    hold = COSTS["device_access"]
    handed = [e for e in bql if e["action"] == "lock" and e["seq"] > first[-1]["seq"]][:3]
    assert [(e["source"], e["waited"]) for e in handed] == \
        [("vcpu1", hold), ("vcpu2", 2 * hold), ("vcpu3", 3 * hold)]
    # Replay the trace against a mutex with a FIFO of waiters: a wait names who holds it
    # (or, during a hand-off, who it is being handed to), only the holder unlocks, and
    # the lock goes to the longest waiter.
    owner: str | None = None
    queue: list[str] = []
    wait_time: dict[str, int] = {}
    for e in bql:
        who, action = e["source"], e["action"]
        if action == "wait":
            assert e["holder"] == (owner if owner is not None else queue[0]), e
            assert who not in queue and who != owner
            queue.append(who)
            wait_time[who] = e["time"]
        elif action == "lock":
            assert owner is None, e
            if queue:
                assert who == queue.pop(0), (e, queue)
                assert e["waited"] == e["time"] - wait_time.pop(who)
            else:
                assert e["waited"] == 0
            owner = who
        elif action == "unlock":
            assert owner == who, e
            owner = None
    assert owner is None and not queue


# -- INIT without SIPI ------------------------------------------------------------------------

# vCPU 0 sends an INIT IPI to APIC ID 1 (ICR: destination in ICR high bits 31:24; low
# word 0x4500 = INIT, level assert, physical destination) and then exits; vCPU 1 counts
# in a loop until the INIT stops it.
INIT = """
bits 32
org 0x100000
APIC        equ 0xFEE00000
start:
        mov eax, 1
        cpuid
        shr ebx, 24
        jnz vcpu1
.w:     pause
        cmp dword [spins], 1000         ; vCPU 1 is running
        jb .w
        mov dword [APIC + 0x310], 1 << 24
        mov dword [APIC + 0x300], 0x4500
.s:     test dword [APIC + 0x300], 1 << 12  ; delivery status: wait until sent
        jnz .s
        mov eax, [spins]
        mov [spins_at_init], eax
        mov ecx, 20000                  ; give vCPU 1 time to run on if it could
.d:     loop .d
        mov eax, [spins]
        sub eax, [spins_at_init]
        mov [spins_after], eax
        mov dx, 0x501
        mov al, 0
        out dx, al
        cli
        hlt
vcpu1:
.l:     lock inc dword [spins]
        jmp .l
        align 4
spins:         dd 0
spins_at_init: dd 0
spins_after:   dd 0
"""


def test_init_ipi_leaves_the_target_waiting_for_sipi_and_the_run_ends() -> None:
    from vmsim.session import Session
    from vmsim.vmm.machine import MachineConfig

    image = assemble(INIT, "init.asm")
    s = Session(image, "sim", MachineConfig(smp=2), max_instructions=5_000_000)
    outcome = s.run()
    assert outcome.exit_status == OK, outcome.reason
    vcpu1 = s.vm.cpus[1].vcpu
    assert vcpu1.mp_state == "init_received"  # KVM_MP_STATE_INIT_RECEIVED
    # Once INIT was accepted, vCPU 1 ran nothing more (at most the batch in flight when
    # the IPI's kick reached it).
    after = int.from_bytes(s.machine.mem.read(image.symbols["spins_after"], 4).to_bytes(4,
                           "little"), "little")
    assert after <= 2


def test_init_to_the_bsp_then_halt_ends_as_halted() -> None:
    """vCPU 1 sends INIT to vCPU 0 and halts with IF=0: vCPU 0 waits for a SIPI, vCPU 1
    for an NMI; nothing can wake either, and the run ends (halted) instead of hanging."""
    guest = """
bits 32
org 0x100000
        mov eax, 1
        cpuid
        shr ebx, 24
        jnz .one
.spin:  pause
        jmp .spin
.one:   mov dword [0xFEE00310], 0
        mov dword [0xFEE00300], 0x4500
        cli
        hlt
"""
    from vmsim.session import Session
    from vmsim.vmm.machine import MachineConfig

    s = Session(assemble(guest, "init0.asm"), "sim", MachineConfig(smp=2),
                max_instructions=5_000_000)
    outcome = s.run()
    assert outcome.halted and outcome.exit_status is None, outcome.reason
    assert s.vm.cpus[0].vcpu.mp_state == "init_received"
