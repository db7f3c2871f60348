"""Whatever the guest executes, a fault is the guest's business: the CPU delivers it, shuts
down or stops with a reason, and never lets a Python exception out of `run()`."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.guests.cpubench import CODE, Bench
from vmsim.hw.cpu import StopReason

ALLOWED = {StopReason.HLT, StopReason.SHUTDOWN, StopReason.LIMIT, StopReason.UNSUPPORTED,
           StopReason.REQUESTED}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(code=st.binary(min_size=1, max_size=64), idt=st.sampled_from(["halt", "none", "iret"]),
       paging=st.booleans(), seed_regs=st.lists(st.integers(0, 0xFFFFFFFF), min_size=8,
                                                max_size=8))
def test_random_code_only_stops_with_a_reason(code: bytes, idt: str, paging: bool,
                                               seed_regs: list[int]):
    b = Bench(code)
    if idt == "halt":
        b.all_gates()  # every vector: a `hlt` handler
    elif idt == "iret":
        b.mem.load(b.handler(0), b"\xCF" * 16 * 256)  # every handler just returns
        b.all_gates()
    else:
        b.cpu.idtr = (0, 0)
    if paging:
        b.paging()
    for i, v in enumerate(seed_regs):
        if i != 4:  # keep ESP on the stack
            b.cpu.r[i] = v
    reason = b.cpu.run(500)
    assert reason in ALLOWED
    if reason is StopReason.HLT:
        assert b.cpu.halted
    if reason is StopReason.SHUTDOWN:
        assert b.cpu.shut_down
    # once stopped, the CPU answers again without an exception
    assert b.cpu.run(10) in ALLOWED


def test_code_runs_off_the_end_of_ram():
    """Fetching from where there is no RAM reads 0, as QEMU reads unassigned memory (and
    runs code from it, an instruction at a time): 00 00 is `add [eax], al`."""
    b = Bench(b"\xE9" + (0x00F00000 - CODE - 5).to_bytes(4, "little"))  # jmp 0xF00000
    b.all_gates()
    b.cpu.r[0] = 0x2007  # the adds' target, in RAM: each adds 7 to its byte
    assert b.cpu.run(100) is StopReason.LIMIT
    assert b.cpu.eip == 0xF00000 + 2 * 99
    assert b.mem.ram[0x2007] == (7 * 99) & 0xFF
