"""The in-kernel local APIC (vmsim.kvm.lapic) against the SDM and LNX arch/x86/kvm/lapic.c.

Each test cites what it checks: Intel SDM Vol. 3A chapter 11 ("Advanced Programmable
Interrupt Controller") for the chip, lapic.c where KVM's emulation decides.
Time is a fake clock in cycles; at the default 3 GHz one APIC bus count (1 ns, KVM's
APIC_BUS_CYCLE_NS) is 3 cycles.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmsim.kvm.lapic import (
    APIC_DEFAULT_PHYS_BASE,
    APIC_DFR,
    APIC_DM_FIXED,
    APIC_DM_INIT,
    APIC_EOI,
    APIC_ICR,
    APIC_ICR2,
    APIC_ID,
    APIC_LDR,
    APIC_LVR,
    APIC_LVT0,
    APIC_LVT1,
    APIC_LVTERR,
    APIC_LVTPC,
    APIC_LVTT,
    APIC_LVTTHMR,
    APIC_PROCPRI,
    APIC_SPIV,
    APIC_TASKPRI,
    APIC_TDCR,
    APIC_TMCCT,
    APIC_TMICT,
    KVM_APIC_INIT,
    KVM_APIC_SIPI,
    ApicMap,
    KvmLapic,
)

CYCLES_PER_COUNT = 3  # NOMINAL_HZ / 1 GHz APIC bus
PERIODIC = 1 << 17
MASKED = 1 << 16


class FakeTimer:
    def __init__(self, clock: FakeClock, callback: Callable[[], None]) -> None:
        self.clock = clock
        self.callback = callback
        self.expires: int | None = None

    def mod(self, deadline: int) -> None:
        self.expires = deadline

    def delete(self) -> None:
        self.expires = None


class FakeClock:
    """Virtual cycles; timers fire in deadline order when the clock is advanced."""

    def __init__(self, t: int = 0) -> None:
        self.t = t
        self.timers: list[FakeTimer] = []

    def now(self) -> int:
        return self.t

    def make_timer(self, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(self, callback)
        self.timers.append(timer)
        return timer

    def run_until(self, t: int) -> None:
        while True:
            due = [x for x in self.timers if x.expires is not None and x.expires <= t]
            if not due:
                break
            timer = min(due, key=lambda x: x.expires)
            self.t = max(self.t, timer.expires)
            timer.expires = None
            timer.callback()
        self.t = t


class Recorder:
    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock
        self.events: list[tuple[int, str, str, dict]] = []

    def wants(self, kind: str) -> bool:
        return True

    def build(self, kind: str) -> bool:  # (it hears every kind)
        return True

    def emit(self, kind: str, source: str, **fields) -> None:
        self.events.append((self.clock.t if self.clock else 0, kind, source, fields))

    def of(self, kind: str) -> list[dict]:
        return [f for _, k, _, f in self.events if k == kind]


class Kicks:
    def __init__(self) -> None:
        self.log: list[int] = []

    def for_vcpu(self, i: int) -> Callable[[], None]:
        return lambda: self.log.append(i)


def make(vcpu_id: int = 0, clock: FakeClock | None = None, events: Recorder | None = None,
         kicks: Kicks | None = None, hz: int = 3_000_000_000) -> KvmLapic:
    clock = clock or FakeClock()
    kicks = kicks or Kicks()
    return KvmLapic(vcpu_id, clock.now, clock.make_timer, kicks.for_vcpu(vcpu_id), hz=hz,
                    events=events, source=f"vcpu{vcpu_id}")


def enabled(apic: KvmLapic) -> KvmLapic:
    apic.write(0xF0, 4, 0x1FF)  # SVR: APIC software enable (bit 8), spurious vector 0xFF
    return apic


# -- reset and identification ------------------------------------------------------------

@pytest.mark.parametrize("vcpu_id", [0, 3])
def test_reset_values(vcpu_id: int) -> None:
    """SDM 11.4.7.1 (power-up/reset state) plus kvm_lapic_reset: ID = vcpu_id << 24, all
    LVTs masked, SVR 0xFF (software-disabled), DFR all ones, TPR/PPR/LDR/ICR/counts 0;
    KVM re-enables LINT0 as ExtINT on the BSP only (KVM_X86_QUIRK_LINT0_REENABLED)."""
    a = make(vcpu_id)
    assert a.read(APIC_ID, 4) == vcpu_id << 24
    assert a.read(0xF0, 4) == 0xFF
    assert a.read(APIC_DFR, 4) == 0xFFFFFFFF
    for reg in (APIC_TASKPRI, 0x90, APIC_PROCPRI, APIC_LDR, 0x280, APIC_ICR, APIC_ICR2,
                APIC_TMICT, APIC_TMCCT, APIC_TDCR):
        assert a.read(reg, 4) == 0, hex(reg)
    for reg in (APIC_LVTT, APIC_LVTTHMR, APIC_LVTPC, APIC_LVT1, APIC_LVTERR):
        assert a.read(reg, 4) == MASKED, hex(reg)
    assert a.read(APIC_LVT0, 4) == (0x700 if vcpu_id == 0 else MASKED)
    for base in (0x100, 0x180, 0x200):
        assert [a.read(base + 0x10 * i, 4) for i in range(8)] == [0] * 8
    # IA32_APIC_BASE: the default page, enabled, BSP flag on vCPU 0 (vmx.py uses 0xFEE00900).
    assert a.apic_base == APIC_DEFAULT_PHYS_BASE | 0x800 | (0x100 if vcpu_id == 0 else 0)
    assert not a.sw_enabled and a.divide_count == 2


def test_id_and_version_read() -> None:
    """Version register (SDM 11.4.8): version 0x14, max LVT entry 5 (KVM's 6 LVTs without
    CMCI: kvm_apic_set_version). Byte and word reads inside a register return its bytes;
    a read that straddles a register, or of EOI / reserved space, reads 0 (lapic.c
    kvm_lapic_reg_read returns without data)."""
    a = make(2)
    assert a.read(APIC_LVR, 4) == 0x00050014
    assert a.read(APIC_LVR, 1) == 0x14
    assert a.read(APIC_LVR + 2, 1) == 5
    assert a.read(APIC_ID + 3, 1) == 2
    assert a.read(APIC_ID + 2, 2) == 0x0200
    assert a.read(APIC_ID + 2, 4) == 0  # crosses the 32-bit register
    assert a.read(APIC_ID, 8) == 0
    assert a.read(APIC_ID, 3) == 0  # KVM: "should be 1,2, or 4"
    assert a.read(APIC_EOI, 4) == 0  # write-only
    assert a.read(0x40, 4) == 0 and a.read(0x3F0, 4) == 0 and a.read(0x800, 4) == 0
    # The ID is writable in xAPIC mode (bits 31:24).
    a.write(APIC_ID, 4, 0x07FFFFFF)
    assert a.read(APIC_ID, 4) == 0x07000000
    # Only aligned 32-bit stores reach a register (SDM 11.4.1, apic_mmio_write).
    a.write(APIC_ID, 2, 0)
    a.write(APIC_ID + 1, 4, 0)
    a.write(APIC_LVR, 4, 0)  # read-only
    assert a.read(APIC_ID, 4) == 0x07000000 and a.read(APIC_LVR, 4) == 0x00050014


def test_mmio_is_traced_as_kvm_apic() -> None:
    """lapic.c trace_kvm_apic_read / _write: rw 0/1, the register offset, the value."""
    ev = Recorder()
    a = make(events=ev)
    a.write(APIC_TASKPRI, 4, 0x20)
    a.read(APIC_TASKPRI, 4)
    assert ev.of("kvm_apic") == [{"rw": 1, "reg": 0x80, "val": 0x20},
                                 {"rw": 0, "reg": 0x80, "val": 0x20}]


# -- acceptance, priorities, EOI --------------------------------------------------------

def test_software_disable_via_svr_blocks_delivery_and_masks_lvts() -> None:
    """SDM 11.4.7.2: while SVR bit 8 is 0 no fixed interrupt is accepted (lapic.c
    __apic_accept_irq checks apic_enabled), LVTs cannot be unmasked, and clearing bit 8
    masks every LVT; interrupts already in the IRR are held."""
    kicks = Kicks()
    a = make(kicks=kicks)
    assert a.accept_irq(APIC_DM_FIXED, 0x40, 1, 0) is False
    assert a.has_interrupt() == -1 and kicks.log == []
    a.write(APIC_LVTT, 4, 0x30)
    assert a.read(APIC_LVTT, 4) == MASKED | 0x30
    enabled(a)
    assert a.read(0xF0, 4) == 0x1FF
    assert a.accept_irq(APIC_DM_FIXED, 0x40, 1, 0) is True
    assert kicks.log == [0] and a.has_interrupt() == 0x40
    a.write(APIC_LVTT, 4, 0x30)
    assert a.read(APIC_LVTT, 4) == 0x30
    a.write(0xF0, 4, 0xFF)  # software-disable again
    assert a.read(APIC_LVTT, 4) == MASKED | 0x30
    assert a.read(APIC_LVT0, 4) == MASKED | 0x700
    assert a.accept_irq(APIC_DM_FIXED, 0x50, 1, 0) is False
    assert a.has_interrupt() == 0x40  # held, as the SDM says


def test_tpr_priority_class_blocks_lower_vectors() -> None:
    """SDM 11.8.3.1: PPR = TPR when no interrupt is in service; only a vector whose
    class (bits 7:4) is above PPR[7:4] is delivered (apic_has_interrupt_for_ppr)."""
    a = enabled(make())
    a.accept_irq(APIC_DM_FIXED, 0x45, 1, 0)
    a.accept_irq(APIC_DM_FIXED, 0x55, 1, 0)
    a.write(APIC_TASKPRI, 4, 0x50)
    assert a.read(APIC_PROCPRI, 4) == 0x50
    assert a.has_interrupt() == -1  # 0x55 is in class 5, not above 5
    assert a.get_interrupt() == -1
    a.write(APIC_TASKPRI, 4, 0x4F)
    assert a.has_interrupt() == 0x55
    a.write(APIC_TASKPRI, 4, 0x1FF)  # only bits 7:0 are kept
    assert a.read(APIC_TASKPRI, 4) == 0xFF and a.has_interrupt() == -1


@pytest.mark.parametrize(("in_service", "requested", "ppr"),
                         [(None, None, 0x37), (0x51, None, 0x50), (None, 0x61, 0x37),
                          (0x21, 0x61, 0x37), (0x51, 0x61, 0x50)])
def test_has_interrupt_recomputes_ppr(in_service: int | None, requested: int | None,
                                      ppr: int) -> None:
    """kvm_apic_has_interrupt runs __apic_update_ppr first (at every VM entry), whatever
    the IRR and ISR hold: PPR = TPR if TPR[7:4] >= ISRV[7:4], else ISRV[7:4] << 4. Here
    the registers are set behind the APIC's back (TPR 0x37, PPR stale) to see it done."""
    a = enabled(make())
    if in_service is not None:
        a.accept_irq(APIC_DM_FIXED, in_service, 1, 0)
        assert a.get_interrupt() == in_service
    if requested is not None:
        a.accept_irq(APIC_DM_FIXED, requested, 1, 0)
    a.regs[APIC_TASKPRI >> 4] = 0x37
    a.regs[APIC_PROCPRI >> 4] = 0xEE
    want = requested if requested is not None and (requested & 0xF0) > ppr else -1
    assert a.has_interrupt() == want
    assert a.regs[APIC_PROCPRI >> 4] == ppr  # (an MMIO read of PPR would update it itself)


def test_get_interrupt_moves_irr_to_isr_and_eoi_clears_it() -> None:
    """SDM 11.8.4: acceptance moves the highest IRR bit to the ISR and raises PPR to its
    class; a write to EOI clears the highest ISR bit (apic_set_eoi, traced kvm_eoi)."""
    ev = Recorder()
    a = enabled(make(events=ev))
    a.accept_irq(APIC_DM_FIXED, 0x31, 1, 0)
    assert a.read(0x200 + 0x10, 4) == 1 << 17  # IRR word 1, bit 0x31 - 32
    assert a.get_interrupt() == 0x31
    assert a.view()["irr"] == [] and a.view()["isr"] == [0x31]
    assert a.read(0x100 + 0x10, 4) == 1 << 17
    assert a.read(APIC_PROCPRI, 4) == 0x30
    a.write(APIC_EOI, 4, 0)
    assert a.view()["isr"] == [] and a.read(APIC_PROCPRI, 4) == 0
    a.write(APIC_EOI, 4, 0)  # nothing in service: no change, traced with vector -1
    assert ev.of("kvm_eoi") == [{"apicid": 0, "vector": 0x31}, {"apicid": 0, "vector": -1}]
    assert ev.of("kvm_apic_accept_irq") == [{"apicid": 0, "dm": 0, "tm": 0, "vec": 0x31}]


def test_level_triggered_fixed_sets_tmr() -> None:
    """SDM 11.8.4: the TMR bit is set for level-triggered interrupts, cleared for edge;
    a level interrupt with level 0 (deassert) is not accepted (__apic_accept_irq)."""
    a = enabled(make())
    assert a.accept_irq(APIC_DM_FIXED, 0x60, 1, 1)
    assert a.view()["tmr"] == [0x60]
    assert not a.accept_irq(APIC_DM_FIXED, 0x61, 0, 1)
    assert a.accept_irq(APIC_DM_FIXED, 0x60, 1, 0)
    assert a.view()["tmr"] == [] and a.view()["irr"] == [0x60]


def test_nested_priorities() -> None:
    """SDM 11.8.3: an interrupt in service blocks its own and lower classes; a higher
    class nests, and each EOI retires the highest vector in service."""
    a = enabled(make())
    a.accept_irq(APIC_DM_FIXED, 0x40, 1, 0)
    assert a.get_interrupt() == 0x40
    a.accept_irq(APIC_DM_FIXED, 0x35, 1, 0)
    a.accept_irq(APIC_DM_FIXED, 0x41, 1, 0)
    assert a.has_interrupt() == -1  # 0x41: same class as 0x40; 0x35 lower
    a.accept_irq(APIC_DM_FIXED, 0x80, 1, 0)
    assert a.get_interrupt() == 0x80
    assert a.view()["isr"] == [0x40, 0x80] and a.read(APIC_PROCPRI, 4) == 0x80
    a.write(APIC_EOI, 4, 0)
    assert a.view()["isr"] == [0x40] and a.read(APIC_PROCPRI, 4) == 0x40
    assert a.has_interrupt() == -1
    a.write(APIC_EOI, 4, 0)
    assert a.get_interrupt() == 0x41
    a.write(APIC_EOI, 4, 0)
    assert a.get_interrupt() == 0x35


# -- the timer --------------------------------------------------------------------------

def timer_apic(clock: FakeClock, lvtt: int, tdcr: int, **kw) -> KvmLapic:
    a = enabled(make(clock=clock, **kw))
    a.write(APIC_TDCR, 4, tdcr)
    a.write(APIC_LVTT, 4, lvtt)
    return a


def test_one_shot_timer_fires_once() -> None:
    """SDM 11.5.4: in one-shot mode the count runs down once and the LVT timer interrupt
    is raised at zero. KVM: initial count * divide ns of its 1 GHz APIC bus
    (tmict_to_ns), so 1000 counts divided by 1 are 3000 cycles at 3 GHz."""
    clock, kicks = FakeClock(), Kicks()
    a = timer_apic(clock, 0xEF, 0xB, kicks=kicks)
    a.write(APIC_TMICT, 4, 1000)
    assert a.view()["next_expiry"] == 1000 * CYCLES_PER_COUNT
    clock.run_until(2999)
    assert a.view()["irr"] == [] and kicks.log == []
    clock.run_until(3000)
    assert a.view()["irr"] == [0xEF] and kicks.log == [0]
    assert a.get_interrupt() == 0xEF
    a.write(APIC_EOI, 4, 0)
    clock.run_until(10_000_000)
    assert a.view()["irr"] == [] and kicks.log == [0]
    assert a.read(APIC_TMCCT, 4) == 0 and a.read(APIC_TMICT, 4) == 1000
    assert a.view()["next_expiry"] is None


def test_timer_uses_the_clock_frequency() -> None:
    """The deadline in cycles is counts * divide * hz / 1e9 (APIC bus at 1 GHz)."""
    clock = FakeClock(500)
    a = timer_apic(clock, 0x30, 0x0, hz=1_000_000_000)  # divide by 2, 1 cycle per ns
    a.write(APIC_TMICT, 4, 1000)
    assert a.view()["next_expiry"] == 500 + 2000


def test_periodic_timer_rearms() -> None:
    """SDM 11.5.4: periodic mode reloads the initial count at zero and interrupts each
    period (apic_timer_fn re-arms at target + period)."""
    clock, ev = FakeClock(), None
    ev = Recorder(clock)
    a = timer_apic(clock, PERIODIC | 0x40, 0x0, events=ev)  # divide by 2
    a.write(APIC_TMICT, 4, 100_000)  # 200 000 ns = 600 000 cycles
    period = 100_000 * 2 * CYCLES_PER_COUNT
    for _ in range(4):
        clock.run_until(clock.t + period)
        assert a.get_interrupt() == 0x40
        a.write(APIC_EOI, 4, 0)
    times = [t for t, k, _, _ in ev.events if k == "kvm_apic_accept_irq"]
    assert times == [period, 2 * period, 3 * period, 4 * period]
    assert a.view()["lvt_timer"] == {"mode": "periodic", "masked": False, "vector": 0x40}


def test_periodic_timer_shorter_than_200us_is_stretched() -> None:
    """KVM refuses periodic timers below min_timer_period_us (x86.c, default 200 us;
    lapic.c limit_periodic_timer_frequency): 10 counts become 200 us."""
    clock = FakeClock()
    a = timer_apic(clock, PERIODIC | 0x40, 0xB)
    a.write(APIC_TMICT, 4, 10)
    assert a.view()["next_expiry"] == 200_000 * CYCLES_PER_COUNT
    # One-shot timers are not limited.
    a.write(APIC_LVTT, 4, 0x40)
    a.write(APIC_TMICT, 4, 10)
    assert a.view()["next_expiry"] == 10 * CYCLES_PER_COUNT


@pytest.mark.parametrize("tdcr, divide", [(0xB, 1), (0x0, 2), (0x1, 4), (0x2, 8), (0x3, 16),
                                          (0x8, 32), (0x9, 64), (0xA, 128), (0x4, 2), (0xF, 1)])
def test_divide_configuration(tdcr: int, divide: int) -> None:
    """SDM Figure 11-10: TDCR bits 3,1:0 select divide by 2, 4, ... 128, or 1 (0b1011);
    bit 2 is reserved (lapic.c keeps val & 0xb; update_divide_count)."""
    clock = FakeClock()
    a = timer_apic(clock, 0x30, tdcr)
    assert a.read(APIC_TDCR, 4) == tdcr & 0xB
    a.write(APIC_TMICT, 4, 1000)
    assert a.view()["next_expiry"] == 1000 * divide * CYCLES_PER_COUNT
    assert a.view()["divide"] == divide


def test_current_count_decreases() -> None:
    """SDM 11.5.4: the current-count register counts down from the initial count at the
    divided bus rate (lapic.c apic_get_tmcct computes it from the time left)."""
    clock = FakeClock(1000)
    a = timer_apic(clock, 0x30, 0x1)  # divide by 4: one count = 12 cycles
    a.write(APIC_TMICT, 4, 1000)
    # Read before any time has passed: the full count (the chip's answer; KVM's modulo
    # would give 0 at that exact nanosecond, see apic_get_tmcct).
    assert a.read(APIC_TMCCT, 4) == 1000
    counts = []
    for elapsed in (12, 1200, 6000, 11_988):
        clock.run_until(1000 + elapsed)
        counts.append(a.read(APIC_TMCCT, 4))
    assert counts == [999, 900, 500, 1]
    assert a.view()["current_count"] == 1


def test_changing_the_divider_scales_the_time_left() -> None:
    """lapic.c update_target_expiration: a new TDCR while counting rescales what is left."""
    clock = FakeClock()
    a = timer_apic(clock, 0x30, 0xB)  # divide by 1
    a.write(APIC_TMICT, 4, 1000)  # expires at 3000
    clock.run_until(1500)  # half left: 1500 cycles
    a.write(APIC_TDCR, 4, 0x0)  # divide by 2: 3000 cycles left
    assert a.view()["next_expiry"] == 4500
    assert a.read(APIC_TMCCT, 4) == 500


def test_initial_count_zero_stops_the_timer() -> None:
    """SDM 11.5.4: writing 0 to the initial-count register stops the timer."""
    clock, kicks = FakeClock(), Kicks()
    a = timer_apic(clock, PERIODIC | 0x30, 0x0, kicks=kicks)
    a.write(APIC_TMICT, 4, 200_000)
    clock.run_until(100)
    a.write(APIC_TMICT, 4, 0)
    assert a.view()["next_expiry"] is None
    clock.run_until(100_000_000)
    assert kicks.log == [] and a.view()["irr"] == [] and a.read(APIC_TMCCT, 4) == 0


def test_masked_lvt_timer_sets_no_irr() -> None:
    """SDM 11.5.1: a masked LVT entry delivers nothing (kvm_apic_local_deliver)."""
    clock, kicks = FakeClock(), Kicks()
    a = timer_apic(clock, MASKED | 0x30, 0xB, kicks=kicks)
    a.write(APIC_TMICT, 4, 100)
    clock.run_until(10_000)
    assert a.view()["irr"] == [] and kicks.log == []
    assert a.view()["next_expiry"] is None  # it did expire, once


def test_tsc_deadline_mode_is_not_offered() -> None:
    """Without TSC_DEADLINE_TIMER in CPUID KVM's timer_mode_mask is bit 17 alone, so
    mode 2 (TSC-deadline) reads back as one-shot and the count still runs."""
    clock = FakeClock()
    a = timer_apic(clock, (2 << 17) | 0x30, 0xB)
    assert a.read(APIC_LVTT, 4) == 0x30
    a.write(APIC_TMICT, 4, 10)
    assert a.view()["next_expiry"] == 30


# -- IPIs -------------------------------------------------------------------------------

def machine(n: int = 3, events: Recorder | None = None):
    clock, kicks = FakeClock(), Kicks()
    apics = [enabled(make(i, clock, events, kicks)) for i in range(n)]
    ApicMap(apics)
    kicks.log.clear()
    return apics, kicks


def ipi(src: KvmLapic, low: int, dest: int = 0) -> None:
    src.write(APIC_ICR2, 4, dest << 24)
    src.write(APIC_ICR, 4, low)


def test_fixed_ipi_by_physical_id() -> None:
    """SDM 11.6.1, 11.6.2.1: a fixed IPI in physical mode goes to the APIC whose ID
    matches ICR2[31:24]; KVM delivers at once, so the delivery-status bit (12) reads 0
    (kvm_lapic_reg_write clears APIC_ICR_BUSY). Traced as kvm_apic_ipi."""
    ev = Recorder()
    apics, kicks = machine(events=ev)
    ipi(apics[0], 0x4000 | 0x1000 | 0x51, dest=2)
    assert [a.view()["irr"] for a in apics] == [[], [], [0x51]]
    assert kicks.log == [2]
    assert apics[0].read(APIC_ICR, 4) == 0x4051
    assert ev.of("kvm_apic_ipi") == [{"icr_low": 0x4051, "dest_id": 2}]
    assert ev.of("kvm_apic_accept_irq") == [{"apicid": 2, "dm": 0, "tm": 0, "vec": 0x51}]
    # A changed ID is what is matched; an ID nobody has reaches nobody.
    apics[1].write(APIC_ID, 4, 7 << 24)
    ipi(apics[0], 0x52, dest=7)
    ipi(apics[0], 0x53, dest=1)
    assert apics[1].view()["irr"] == [0x52] and kicks.log == [2, 1]
    # Physical broadcast (0xFF) reaches all, the sender too.
    ipi(apics[0], 0x54, dest=0xFF)
    assert all(0x54 in a.view()["irr"] for a in apics) and kicks.log[2:] == [0, 1, 2]


def test_fixed_ipi_to_a_disabled_apic_is_dropped() -> None:
    """__apic_accept_irq: a software-disabled target does not accept a fixed IPI."""
    apics, kicks = machine()
    apics[1].write(0xF0, 4, 0xFF)
    ipi(apics[0], 0x51, dest=1)
    assert apics[1].view()["irr"] == [] and kicks.log == []


def test_fixed_ipi_logical_flat() -> None:
    """SDM 11.6.2.2: flat model (DFR 0xFFFFFFFF), an APIC is a target when
    LDR[31:24] & MDA != 0 (kvm_apic_match_logical_addr)."""
    apics, kicks = machine()
    for i, a in enumerate(apics):
        a.write(APIC_LDR, 4, (1 << i) << 24 | 0xFFFFFF)
        assert a.read(APIC_LDR, 4) == (1 << i) << 24
    ipi(apics[0], 0x800 | 0x61, dest=0b110)
    assert [a.view()["irr"] for a in apics] == [[], [0x61], [0x61]]
    assert kicks.log == [1, 2]


def test_fixed_ipi_logical_cluster() -> None:
    """SDM 11.6.2.2: cluster model (DFR 0x0FFFFFFF), MDA[7:4] selects the cluster and
    MDA[3:0] the members."""
    apics, kicks = machine()
    ldrs = [0x11, 0x12, 0x21]
    for a, ldr in zip(apics, ldrs, strict=True):
        a.write(APIC_DFR, 4, 0)  # only bits 31:28 are writable
        assert a.read(APIC_DFR, 4) == 0x0FFFFFFF
        a.write(APIC_LDR, 4, ldr << 24)
    ipi(apics[2], 0x800 | 0x62, dest=0x13)
    assert kicks.log == [0, 1]


@pytest.mark.parametrize("shorthand, targets", [(0x40000, [0]), (0x80000, [0, 1, 2]),
                                                (0xC0000, [1, 2])])
def test_destination_shorthands(shorthand: int, targets: list[int]) -> None:
    """SDM 11.6.1 ICR bits 19:18: self, all including self, all excluding self; the
    destination field is ignored (kvm_apic_match_dest)."""
    apics, kicks = machine()
    ipi(apics[0], shorthand | 0x70, dest=2)
    assert kicks.log == targets
    assert [i for i, a in enumerate(apics) if a.view()["irr"] == [0x70]] == targets


def test_lowest_priority_picks_one_target() -> None:
    """KVM delivers lowest-priority IPIs to one of the targets, chosen by vector hashing
    (vector mod number of targets; lapic.c kvm_vector_to_index)."""
    apics, kicks = machine()
    ipi(apics[0], 0x80000 | 0x100 | 0x41)  # all including self, 0x41 % 3 == 2
    assert kicks.log == [2]


def test_init_and_sipi_ipis_become_pending_events() -> None:
    """SDM 11.6.1 / 8.4.4: INIT and Start-up IPIs; KVM records them in pending_events
    (KVM_APIC_INIT, KVM_APIC_SIPI with sipi_vector) and kicks the target; an APIC
    responds to INIT and SIPI even while software-disabled (SDM 11.4.7.2). INIT level
    de-assert (level-triggered, level 0) is ignored."""
    apics, kicks = machine()
    apics[1].write(0xF0, 4, 0xFF)
    ipi(apics[0], 0x8000 | APIC_DM_INIT, dest=1)  # de-assert
    assert apics[1].pending_events == 0 and kicks.log == []
    ipi(apics[0], 0x4000 | APIC_DM_INIT, dest=1)
    assert apics[1].pending_events == 1 << KVM_APIC_INIT and kicks.log == [1]
    ipi(apics[0], 0x4000 | 0x600 | 0x08, dest=1)
    assert apics[1].pending_events == 1 << KVM_APIC_INIT | 1 << KVM_APIC_SIPI
    assert apics[1].sipi_vector == 0x08 and kicks.log == [1, 1]
    assert apics[0].pending_events == 0 and apics[2].pending_events == 0
    assert apics[1].view()["irr"] == []


def test_init_reset_keeps_the_id() -> None:
    """kvm_lapic_reset(init_event): an INIT leaves the APIC ID and base, resets the rest."""
    a = enabled(make(1))
    a.write(APIC_ID, 4, 9 << 24)
    a.write(APIC_TASKPRI, 4, 0x30)
    a.reset(init_event=True)
    assert a.read(APIC_ID, 4) == 9 << 24 and a.read(APIC_TASKPRI, 4) == 0
    assert a.read(0xF0, 4) == 0xFF


# -- the 8259 through LINT0 ----------------------------------------------------------------

def test_accept_pic_intr() -> None:
    """kvm_apic_accept_pic_intr: the PIC's INTR reaches a vCPU whose LINT0 is unmasked
    in ExtINT mode (SDM 11.5.1; KVM sets it at reset on the BSP only), or whose APIC is
    hardware-disabled. A disabled APIC's page reads all ones (KVM's MMIO-hole quirk)."""
    bsp, ap = make(0), make(1)
    assert bsp.accept_pic_intr() is True
    assert ap.accept_pic_intr() is False
    bsp.write(APIC_LVT0, 4, MASKED | 0x700)
    assert bsp.accept_pic_intr() is False
    enabled(ap).write(APIC_LVT0, 4, 0x700)
    assert ap.accept_pic_intr() is True
    assert bsp.set_apic_base(APIC_DEFAULT_PHYS_BASE | 0x100) == 0  # clear EN
    assert bsp.accept_pic_intr() is True
    assert bsp.read(APIC_ID, 4) == 0xFFFFFFFF and bsp.has_interrupt() == -1
    assert bsp.set_apic_base(APIC_DEFAULT_PHYS_BASE | 0x400 | 0x900) == 1  # x2APIC: #GP


# -- state ------------------------------------------------------------------------------

def test_state_round_trip_mid_timer_gives_the_same_future() -> None:
    """state() taken while a periodic timer runs, loaded into a fresh APIC on a clock at
    the same time, gives the same interrupts at the same times (snapshots stand on it)."""
    runs = []
    for restore in (False, True):
        clock = FakeClock()
        ev = Recorder(clock)
        a = timer_apic(clock, PERIODIC | 0x40, 0x0, events=ev)
        a.write(APIC_TMICT, 4, 150_000)
        a.accept_irq(APIC_DM_FIXED, 0x90, 1, 1)
        clock.run_until(1_234_567)
        if restore:
            saved = json.loads(json.dumps(a.state()))
            clock2 = FakeClock(clock.t)
            ev = Recorder(clock2)
            a = make(clock=clock2, events=ev)
            a.load_state(saved)
            assert a.state() == saved
            clock = clock2
        else:
            ev.events.clear()
        seen = []
        for _ in range(5):
            clock.run_until(clock.t + 500_000)
            seen.append((clock.t, a.read(APIC_TMCCT, 4), a.get_interrupt()))
            a.write(APIC_EOI, 4, 0)
        runs.append((seen, [(t, f) for t, k, _, f in ev.events if k == "kvm_apic_accept_irq"],
                     a.state()))
    assert runs[0] == runs[1]


OFFSETS = st.one_of(st.integers(0, 0x3FF), st.integers(-16, 0x1010),
                    st.sampled_from([APIC_ID, APIC_TASKPRI, APIC_EOI, APIC_SPIV, APIC_ICR,
                                     APIC_ICR2, APIC_LVTT, APIC_LVT0, APIC_TMICT, APIC_TMCCT,
                                     APIC_TDCR, APIC_LDR, APIC_DFR]))
OPS = st.lists(st.one_of(
    st.tuples(st.just("w"), OFFSETS, st.sampled_from([4, 4, 4, 1, 2, 3, 8, 0, -1]),
              st.integers(0, 2**64 - 1)),
    st.tuples(st.just("r"), OFFSETS, st.integers(-2, 9), st.just(0)),
    st.tuples(st.just("t"), st.integers(0, 3_000_000), st.just(0), st.just(0)),
    st.tuples(st.just("irq"), st.integers(0, 0x7FF), st.integers(0, 1), st.integers(0, 1)),
    st.tuples(st.just("ack"), st.just(0), st.just(0), st.just(0)),
), max_size=40)


@settings(max_examples=150, deadline=None)
@given(OPS, OPS)
def test_any_mmio_never_raises_and_state_round_trips(ops: list, more: list) -> None:
    """A guest can write anything anywhere: no access raises, and after any sequence a
    state() loaded into a fresh pair of APICs behaves the same from there on."""
    def apply(apics: list[KvmLapic], clock: FakeClock, seq: list) -> list:
        out = []
        for op, x, y, z in seq:
            if op == "w":
                apics[0].write(x, y, z)
            elif op == "r":
                out.append(apics[0].read(x, y))
            elif op == "t":
                clock.run_until(clock.t + x)
            elif op == "irq":
                out.append(apics[1].accept_irq(x & 0x700, x & 0xFF, y, z))
            else:
                out.append((apics[0].get_interrupt(), apics[1].get_interrupt()))
            out.append(apics[1].has_interrupt())
        return out

    def pair(clock: FakeClock) -> list[KvmLapic]:
        apics = [make(i, clock) for i in range(2)]
        ApicMap(apics)
        return apics

    clock = FakeClock()
    apics = pair(clock)
    apply(apics, clock, ops)
    saved = [json.loads(json.dumps(a.state())) for a in apics]
    clock2 = FakeClock(clock.t)
    copies = pair(clock2)
    for c, s in zip(copies, saved, strict=True):
        c.load_state(s)
        assert c.state() == s
    assert apply(apics, clock, more) == apply(copies, clock2, more)
    assert [a.state() for a in apics] == [c.state() for c in copies]
    for a in apics:
        a.view()
