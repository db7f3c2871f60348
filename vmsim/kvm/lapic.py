"""The in-kernel local APIC, as kvm.ko emulates it (LNX arch/x86/kvm/lapic.c).

One `KvmLapic` per vCPU: the xAPIC register page at APIC_DEFAULT_PHYS_BASE (a 4 KiB
MMIO page; offsets and bits as Intel SDM Vol. 3A chapter 11 and LNX
arch/x86/include/asm/apicdef.h), the APIC timer (one-shot and periodic, with the divide
register) and interrupt acceptance (IRR -> ISR -> EOI, with TPR/PPR priorities). One
`ApicMap` per VM (kvm_apic_map) delivers the IPIs a guest writes to the ICR.

What is kept and what is left out, against lapic.c:
- The register page is `regs`, one 32-bit word per 16-byte register, as KVM's
  `apic->regs` page; reads and writes go through kvm_lapic_reg_read / _write with
  their checks (misaligned or odd-size accesses are dropped or read 0, as
  apic_mmio_read / apic_mmio_write do).
- xAPIC only: no x2APIC mode (no X2APIC CPUID bit, so its MSRs and SELF_IPI are
  absent), no APICv / posted interrupts, no TSC-deadline timer mode (the guest's CPUID
  has no TSC_DEADLINE_TIMER, so KVM's timer_mode_mask is APIC_LVT_TIMER_PERIODIC alone
  and a write of mode 2 reads back as one-shot), no NMI/SMI delivery (vmsim has none),
  no PV EOI, Hyper-V SynIC or in-kernel IOAPIC EOI broadcast.
- KVM's caches (irr_pending, isr_count, highest_isr_cache) are not kept: the IRR and ISR
  are searched each time, which gives the same answers.
- kvm_make_request(KVM_REQ_EVENT) is not modelled: the vCPU's run loop asks
  `has_interrupt()` before every entry. kvm_vcpu_kick is the `kick` callable.
- A timer expiry delivers the LVT timer interrupt from the timer callback itself, as
  KVM's posted-timer-interrupt path does, instead of counting lapic_timer.pending for
  the vCPU thread to inject at its next entry.

Time: KVM's APIC timer counts in nanoseconds of the APIC bus, which KVM fixes at 1 GHz
(APIC_BUS_CYCLE_NS = 1): one count of the initial-count register lasts
APIC_BUS_CYCLE_NS * divide ns. vmsim's clock counts CPU cycles at `hz`
(vmsim.costs.NOMINAL_HZ = 3 GHz by default), so one APIC count is hz / 1e9 cycles
(3 cycles at 3 GHz). The period is kept in ns as KVM keeps it; deadlines are cycles.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from vmsim.costs import NOMINAL_HZ

# Register offsets in the xAPIC page (LNX arch/x86/include/asm/apicdef.h; SDM Table 11-1).
APIC_DEFAULT_PHYS_BASE = 0xFEE00000
LAPIC_MMIO_LENGTH = 1 << 12
APIC_ID = 0x20
APIC_LVR = 0x30
APIC_TASKPRI = 0x80
APIC_ARBPRI = 0x90
APIC_PROCPRI = 0xA0
APIC_EOI = 0xB0
APIC_RRR = 0xC0
APIC_LDR = 0xD0
APIC_DFR = 0xE0
APIC_SPIV = 0xF0
APIC_ISR = 0x100
APIC_TMR = 0x180
APIC_IRR = 0x200
APIC_ESR = 0x280
APIC_LVTCMCI = 0x2F0
APIC_ICR = 0x300
APIC_ICR2 = 0x310
APIC_LVTT = 0x320
APIC_LVTTHMR = 0x330
APIC_LVTPC = 0x340
APIC_LVT0 = 0x350
APIC_LVT1 = 0x360
APIC_LVTERR = 0x370
APIC_TMICT = 0x380
APIC_TMCCT = 0x390
KVM_APIC_REG_SIZE = 0x400  # struct kvm_lapic_state: the first 1 KiB of the page
APIC_TDCR = 0x3E0
APIC_SELF_IPI = 0x3F0
APIC_ISR_NR = 8  # 32-bit words in each of ISR, TMR, IRR

# Register fields.
APIC_VERSION = 0x14  # lapic.c: "14 is the version for Xeon and Pentium 8.4.8"
APIC_LDR_MASK = 0xFF << 24
APIC_DFR_CLUSTER = 0x0FFFFFFF
APIC_DFR_FLAT = 0xFFFFFFFF
APIC_SPIV_APIC_ENABLED = 1 << 8
APIC_SPIV_DIRECTED_EOI = 1 << 12
APIC_VECTOR_MASK = 0xFF
APIC_MODE_MASK = 0x700
APIC_MODE_EXTINT = 0x7
APIC_SEND_PENDING = 1 << 12
APIC_INPUT_POLARITY = 1 << 13
APIC_LVT_REMOTE_IRR = 1 << 14
APIC_LVT_LEVEL_TRIGGER = 1 << 15
APIC_LVT_MASKED = 1 << 16
APIC_LVT_TIMER_ONESHOT = 0 << 17
APIC_LVT_TIMER_PERIODIC = 1 << 17
APIC_LVT_TIMER_TSCDEADLINE = 2 << 17

# ICR low word (SDM Figure 11-12).
APIC_DEST_NOSHORT = 0x00000
APIC_DEST_SELF = 0x40000
APIC_DEST_ALLINC = 0x80000
APIC_DEST_ALLBUT = 0xC0000
APIC_SHORT_MASK = 0xC0000
APIC_INT_LEVELTRIG = 0x08000
APIC_INT_ASSERT = 0x04000
APIC_ICR_BUSY = 0x01000
APIC_DEST_LOGICAL = 0x00800
APIC_DEST_PHYSICAL = 0x00000
APIC_DEST_MASK = 0x00800
APIC_DM_FIXED = 0x000
APIC_DM_LOWEST = 0x100
APIC_DM_SMI = 0x200
APIC_DM_REMRD = 0x300
APIC_DM_NMI = 0x400
APIC_DM_INIT = 0x500
APIC_DM_STARTUP = 0x600
APIC_DM_EXTINT = 0x700
APIC_BROADCAST = 0xFF

# IA32_APIC_BASE MSR bits (LNX msr-index.h).
MSR_IA32_APICBASE_BSP = 1 << 8
MSR_IA32_APICBASE_ENABLE = 1 << 11
MSR_IA32_APICBASE_BASE = 0xFFFFF << 12
X2APIC_ENABLE = 1 << 10

# pending_events bits (LNX lapic.h).
KVM_APIC_INIT = 0
KVM_APIC_SIPI = 1

# The LVT entries KVM emulates, in APIC_LVTx order (lapic.h enum lapic_lvt_entry). CMCI
# exists only if userspace gives the guest MCG_CMCI_P in MCG_CAP; neither QEMU's default
# MCE capabilities (MCG_CTL_P | MCG_SER_P) nor vmsim do, so there are 6
# (kvm_apic_calc_nr_lvt_entries) and the version register reads 0x00050014.
LVT_TIMER, LVT_THERMAL_MONITOR, LVT_PERFORMANCE_COUNTER, LVT_LINT0, LVT_LINT1, LVT_ERROR = range(6)
NR_LVT_ENTRIES = 6
LVT_REGS = (APIC_LVTT, APIC_LVTTHMR, APIC_LVTPC, APIC_LVT0, APIC_LVT1, APIC_LVTERR)
LVT_MASK = APIC_LVT_MASKED | APIC_SEND_PENDING | APIC_VECTOR_MASK
LINT_MASK = (LVT_MASK | APIC_MODE_MASK | APIC_INPUT_POLARITY | APIC_LVT_REMOTE_IRR
             | APIC_LVT_LEVEL_TRIGGER)
# Writable bits of each LVT (lapic.c apic_lvt_mask; the timer's mode bits are added).
APIC_LVT_WRITE_MASK = {
    APIC_LVTT: LVT_MASK,
    APIC_LVTTHMR: LVT_MASK | APIC_MODE_MASK,
    APIC_LVTPC: LVT_MASK | APIC_MODE_MASK,
    APIC_LVT0: LINT_MASK,
    APIC_LVT1: LINT_MASK,
    APIC_LVTERR: LVT_MASK,
}
# kvm_vcpu_after_set_cpuid: 3 << 17 with TSC_DEADLINE_TIMER in CPUID, else this.
TIMER_MODE_MASK = APIC_LVT_TIMER_PERIODIC

# Time. KVM's APIC bus runs at 1 GHz (kvm->arch.apic_bus_cycle_ns defaults to
# APIC_BUS_CYCLE_NS_DEFAULT = 1). Periodic timers shorter than min_timer_period_us
# (LNX x86.c, module parameter, default 200) are stretched to it.
APIC_BUS_CYCLE_NS = 1
NSEC_PER_SEC = 1_000_000_000
MIN_TIMER_PERIOD_US = 200


def _reg_mask(reg: int) -> int:
    return 1 << (reg >> 4)


# kvm_lapic_readable_reg_mask for an xAPIC without CMCI: the registers a read may
# return; reserved and write-only ones (EOI, RRR, SELF_IPI) read as 0.
READABLE_REG_MASK = 0
for _r in (APIC_ID, APIC_LVR, APIC_TASKPRI, APIC_PROCPRI, APIC_LDR, APIC_SPIV, APIC_ESR,
           APIC_ICR, APIC_LVTT, APIC_LVTTHMR, APIC_LVTPC, APIC_LVT0, APIC_LVT1, APIC_LVTERR,
           APIC_TMICT, APIC_TMCCT, APIC_TDCR, APIC_ARBPRI, APIC_DFR, APIC_ICR2):
    READABLE_REG_MASK |= _reg_mask(_r)
for _i in range(APIC_ISR_NR):
    for _base in (APIC_ISR, APIC_TMR, APIC_IRR):
        READABLE_REG_MASK |= _reg_mask(_base + 0x10 * _i)


class Events(Protocol):
    def build(self, kind: str) -> bool: ...
    def emit(self, kind: str, source: str, **fields: Any) -> None: ...


class HostTimer(Protocol):
    def mod(self, deadline: int) -> None: ...
    def delete(self) -> None: ...


@dataclass(frozen=True)
class KvmLapicIrq:
    """struct kvm_lapic_irq: one interrupt message on the (virtual) APIC bus."""

    vector: int
    delivery_mode: int  # APIC_DM_* (bits 10:8 in place, as in the ICR)
    dest_mode: int  # APIC_DEST_PHYSICAL or APIC_DEST_LOGICAL
    level: int
    trig_mode: int  # 0 edge, nonzero level
    shorthand: int  # APIC_DEST_* shorthand
    dest_id: int


def kvm_icr_to_lapic_irq(icr_low: int, icr_high: int) -> KvmLapicIrq:
    """lapic.c kvm_icr_to_lapic_irq, xAPIC: the destination is ICR2 bits 31:24."""
    return KvmLapicIrq(
        vector=icr_low & APIC_VECTOR_MASK,
        delivery_mode=icr_low & APIC_MODE_MASK,
        dest_mode=icr_low & APIC_DEST_MASK,
        level=int(bool(icr_low & APIC_INT_ASSERT)),
        trig_mode=icr_low & APIC_INT_LEVELTRIG,
        shorthand=icr_low & APIC_SHORT_MASK,
        dest_id=(icr_high >> 24) & 0xFF,
    )


_ISR_AT, _IRR_AT = APIC_ISR >> 4, APIC_IRR >> 4  # their first words in KvmLapic.regs


def _find_highest_vector(words: list[int]) -> int:
    """apic_find_highest_vector over 8 words of a 256-bit register (IRR, ISR, TMR)."""
    if not any(words):  # (the common case, asked at every VM entry: nothing pending)
        return -1
    for i in range(APIC_ISR_NR - 1, -1, -1):
        if words[i]:
            return i * 32 + words[i].bit_length() - 1
    return -1


class KvmLapic:
    """struct kvm_lapic: one vCPU's local APIC (xAPIC mode)."""

    def __init__(self, vcpu_id: int, now: Callable[[], int],
                 make_timer: Callable[[Callable[[], None]], HostTimer],
                 kick: Callable[[], None], hz: int = NOMINAL_HZ,
                 events: Events | None = None, source: str = "vcpu0") -> None:
        self.vcpu_id = vcpu_id
        self.now = now
        self.kick = kick
        self.hz = hz
        self.events = events
        self.source = source
        self.apic_map: ApicMap | None = None  # set by the VM (kvm->arch.apic_map)
        self.timer = make_timer(self._apic_timer_fn)  # lapic_timer.timer, an hrtimer
        # kvm_create_lapic: zeroed page, APIC hardware-enabled; then kvm_lapic_reset.
        self.regs = [0] * (LAPIC_MMIO_LENGTH >> 4)
        self.apic_base = MSR_IA32_APICBASE_ENABLE  # vcpu->arch.apic_base
        self.sw_enabled = False
        self.divide_count = 2
        self.timer_mode = APIC_LVT_TIMER_ONESHOT  # lapic_timer.timer_mode
        self.period = 0  # lapic_timer.period, ns
        self.target_expiration = 0  # lapic_timer.target_expiration, in cycles here
        self.timer_expires: int | None = None  # where the hrtimer is armed, if it is
        self.pending_events = 0  # 1 << KVM_APIC_INIT | 1 << KVM_APIC_SIPI
        self.sipi_vector = 0
        self.apic_arb_prio = 0  # vcpu->arch.apic_arb_prio
        self.reset()

    # -- registers ------------------------------------------------------------------

    def get_reg(self, reg: int) -> int:
        """kvm_lapic_get_reg."""
        return self.regs[reg >> 4]

    def set_reg(self, reg: int, val: int) -> None:
        """kvm_lapic_set_reg."""
        self.regs[reg >> 4] = val & 0xFFFFFFFF

    def _test_vector(self, base: int, vec: int) -> bool:
        return bool(self.regs[(base >> 4) + (vec >> 5)] >> (vec & 31) & 1)

    def _set_vector(self, base: int, vec: int) -> None:
        self.regs[(base >> 4) + (vec >> 5)] |= 1 << (vec & 31)

    def _clear_vector(self, base: int, vec: int) -> None:
        self.regs[(base >> 4) + (vec >> 5)] &= ~(1 << (vec & 31)) & 0xFFFFFFFF

    def _vectors(self, base: int) -> list[int]:
        i = base >> 4
        return self.regs[i:i + APIC_ISR_NR]

    def _vector_list(self, base: int) -> list[int]:
        # (word by word: most are zero, and the views ask at every repaint)
        return [w << 5 | b for w, word in enumerate(self._vectors(base)) if word
                for b in range(32) if word >> b & 1]

    @property
    def hw_enabled(self) -> bool:
        """kvm_apic_hw_enabled: IA32_APIC_BASE.EN."""
        return bool(self.apic_base & MSR_IA32_APICBASE_ENABLE)

    @property
    def xapic_id(self) -> int:
        """kvm_xapic_id: APIC ID bits 31:24."""
        return self.get_reg(APIC_ID) >> 24

    def apic_enabled(self) -> bool:
        return self.sw_enabled and self.hw_enabled

    def _trace(self, kind: str, **fields: Any) -> None:
        if self.events is not None and self.events.build(kind):
            self.events.emit(kind, self.source, **fields)

    # -- reset and the APIC base MSR -------------------------------------------------

    def is_bsp(self) -> bool:
        """kvm_vcpu_is_reset_bsp: vCPU 0 (kvm->arch.bsp_vcpu_id defaults to 0)."""
        return self.vcpu_id == 0

    def reset(self, init_event: bool = False) -> None:
        """kvm_lapic_reset: RESET (power-on) or, with init_event, an INIT.

        SDM 11.4.7.1: LVTs masked, SVR 0xFF (software-disabled), DFR all ones, the rest 0.
        KVM then unmasks LINT0 as ExtINT on the BSP (KVM_X86_QUIRK_LINT0_REENABLED, on
        by default) so the 8259 reaches it, as a BIOS would set it up.
        """
        if not init_event:
            base = APIC_DEFAULT_PHYS_BASE | MSR_IA32_APICBASE_ENABLE
            if self.is_bsp():
                base |= MSR_IA32_APICBASE_BSP
            self.apic_base = base
        self._cancel_apic_timer()
        if not init_event:
            self.set_reg(APIC_ID, (self.vcpu_id & 0xFF) << 24)
        self.kvm_apic_set_version()
        for reg in LVT_REGS:
            self.set_reg(reg, APIC_LVT_MASKED)
        self._apic_update_lvtt()
        if self.is_bsp():
            self.set_reg(APIC_LVT0, APIC_MODE_EXTINT << 8)
        self.set_reg(APIC_DFR, 0xFFFFFFFF)
        self._apic_set_spiv(0xFF)
        self.set_reg(APIC_TASKPRI, 0)
        self.set_reg(APIC_LDR, 0)
        self.set_reg(APIC_ESR, 0)
        self.set_reg(APIC_ICR, 0)
        self.set_reg(APIC_ICR2, 0)
        self.set_reg(APIC_TDCR, 0)
        self.set_reg(APIC_TMICT, 0)
        for i in range(APIC_ISR_NR):
            self.set_reg(APIC_IRR + 0x10 * i, 0)
            self.set_reg(APIC_ISR + 0x10 * i, 0)
            self.set_reg(APIC_TMR + 0x10 * i, 0)
        self._update_divide_count()
        self.period = 0
        self.target_expiration = 0
        self._apic_update_ppr()
        self.apic_arb_prio = 0

    def kvm_apic_set_version(self) -> None:
        """APIC_VERSION | (nr_lvt_entries - 1) << 16 (no directed EOI: no x2APIC)."""
        self.set_reg(APIC_LVR, APIC_VERSION | (NR_LVT_ENTRIES - 1) << 16)

    def set_apic_base(self, value: int) -> int:
        """kvm_apic_set_base (WRMSR IA32_APIC_BASE): 0, or 1 for #GP.

        Reserved: bits 7:0 and 9, EXTD (vmsim's guests have no X2APIC CPUID bit) and
        bits at or above MAXPHYADDR, which KVM takes as 36 when CPUID has no leaf
        0x80000008 (cpuid_query_maxphyaddr), as vmsim's CPUID has not. Moving the page
        is recorded in apic_base, but the bus keeps the APIC at its default address.
        """
        value &= (1 << 64) - 1
        if value == self.apic_base:
            return 0
        if value & (0x2FF | X2APIC_ENABLE | ~((1 << 36) - 1)):
            return 1
        old = self.apic_base
        self.apic_base = value
        if (old ^ value) & MSR_IA32_APICBASE_ENABLE and value & MSR_IA32_APICBASE_ENABLE:
            self.set_reg(APIC_ID, (self.vcpu_id & 0xFF) << 24)  # kvm_apic_set_xapic_id
        return 0

    # -- MMIO -----------------------------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        """apic_mmio_read: a guest load from the APIC page."""
        if not self.hw_enabled:
            # KVM_X86_QUIRK_LAPIC_MMIO_HOLE (on by default): all ones.
            return (1 << (8 * size)) - 1 if 0 < size <= 8 else 0
        return self.kvm_lapic_reg_read(offset, size)

    def kvm_lapic_reg_read(self, offset: int, size: int) -> int:
        alignment = offset & 0xF
        # Accesses that straddle a 32-bit register, or of a reserved or write-only
        # register, return 1 to apic_mmio_read, which leaves the data alone: 0 here.
        if offset < 0 or alignment + size > 4:
            return 0
        if offset > 0x3F0 or not READABLE_REG_MASK & _reg_mask(offset):
            return 0
        result = self._apic_read(offset & ~0xF)
        self._trace("kvm_apic", rw=0, reg=offset, val=result)
        if size not in (1, 2, 4):
            return 0  # "Local APIC read with len = ..., should be 1,2, or 4"
        return (result >> (8 * alignment)) & ((1 << (8 * size)) - 1)

    def _apic_read(self, offset: int) -> int:
        """__apic_read."""
        if offset == APIC_ARBPRI:
            return 0  # KVM has no arbitration priority
        if offset == APIC_TMCCT:
            return self._apic_get_tmcct()
        if offset == APIC_PROCPRI:
            self._apic_update_ppr()
        return self.get_reg(offset)

    def write(self, offset: int, size: int, value: int) -> None:
        """apic_mmio_write: a guest store to the APIC page."""
        if not 0 <= offset < LAPIC_MMIO_LENGTH or not self.hw_enabled:
            return
        # SDM 11.4.1: registers are 128-bit aligned and written 32 bits at a time;
        # KVM drops anything else.
        if size != 4 or offset & 0xF:
            return
        self.kvm_lapic_reg_write(offset & 0xFF0, value & 0xFFFFFFFF)

    def kvm_lapic_reg_write(self, reg: int, val: int) -> int:
        """kvm_lapic_reg_write: 0, or 1 where the write is not accepted."""
        self._trace("kvm_apic", rw=1, reg=reg, val=val)
        if reg == APIC_ID:
            self.set_reg(APIC_ID, (val >> 24) << 24)  # kvm_apic_set_xapic_id(val >> 24)
        elif reg == APIC_TASKPRI:
            self._apic_set_tpr(val & 0xFF)
        elif reg == APIC_EOI:
            self.apic_set_eoi()
        elif reg == APIC_LDR:
            self.set_reg(APIC_LDR, val & APIC_LDR_MASK)
        elif reg == APIC_DFR:
            self.set_reg(APIC_DFR, val | APIC_DFR_CLUSTER)  # only the model bits 31:28
        elif reg == APIC_SPIV:
            self._apic_set_spiv(val & 0x3FF)  # no directed EOI without x2APIC
            if not val & APIC_SPIV_APIC_ENABLED:
                # SDM 11.4.7.2: software-disabling masks every LVT.
                for lvt in LVT_REGS:
                    self.set_reg(lvt, self.get_reg(lvt) | APIC_LVT_MASKED)
                self._apic_update_lvtt()
        elif reg == APIC_ICR:
            val &= ~APIC_ICR_BUSY  # KVM delivers at once: delivery status reads idle
            self.kvm_apic_send_ipi(val, self.get_reg(APIC_ICR2))
            self.set_reg(APIC_ICR, val)
        elif reg == APIC_ICR2:
            self.set_reg(APIC_ICR2, val & 0xFF000000)
        elif reg in (APIC_LVT0, APIC_LVTTHMR, APIC_LVTPC, APIC_LVT1, APIC_LVTERR):
            # (LVT0's NMI-watchdog bookkeeping, apic_manage_nmi_watchdog, is not kept.)
            if not self.sw_enabled:
                val |= APIC_LVT_MASKED
            self.set_reg(reg, val & APIC_LVT_WRITE_MASK[reg])
        elif reg == APIC_LVTT:
            if not self.sw_enabled:
                val |= APIC_LVT_MASKED
            self.set_reg(APIC_LVTT, val & (APIC_LVT_WRITE_MASK[APIC_LVTT] | TIMER_MODE_MASK))
            self._apic_update_lvtt()
        elif reg == APIC_TMICT:
            self._cancel_apic_timer()
            self.set_reg(APIC_TMICT, val)
            self._start_apic_timer()
        elif reg == APIC_TDCR:
            old_divisor = self.divide_count
            self.set_reg(APIC_TDCR, val & 0xB)
            self._update_divide_count()
            if self.divide_count != old_divisor and self.period:
                self._cancel_hrtimer()
                self._update_target_expiration(old_divisor)
                self._restart_apic_timer()
        elif reg == APIC_ESR:
            pass  # KVM never latches errors; writes (the SDM's "arm") change nothing
        else:
            return 1  # read-only, reserved, LVT CMCI, SELF_IPI (x2APIC only)
        return 0

    def _apic_set_spiv(self, val: int) -> None:
        self.set_reg(APIC_SPIV, val)
        self.sw_enabled = bool(val & APIC_SPIV_APIC_ENABLED)

    # -- priorities, IRR, ISR, EOI --------------------------------------------------

    def _apic_update_ppr(self) -> int:
        """__apic_update_ppr (SDM 11.8.3.1): PPR = TPR if TPR[7:4] >= ISRV[7:4],
        else ISRV[7:4] << 4, where ISRV is the highest vector in service."""
        regs = self.regs  # (kvm_lapic_get_reg/set_reg and _vectors inline: every VM entry)
        tpr = regs[APIC_TASKPRI >> 4]
        isrv = max(_find_highest_vector(regs[_ISR_AT:_ISR_AT + APIC_ISR_NR]), 0)
        ppr = tpr & 0xFF if (tpr & 0xF0) >= (isrv & 0xF0) else isrv & 0xF0
        regs[APIC_PROCPRI >> 4] = ppr
        return ppr

    def _apic_set_tpr(self, tpr: int) -> None:
        self.set_reg(APIC_TASKPRI, tpr)
        self._apic_update_ppr()

    def _apic_has_interrupt_for_ppr(self, ppr: int) -> int:
        highest_irr = _find_highest_vector(self.regs[_IRR_AT:_IRR_AT + APIC_ISR_NR])
        # SDM 11.8.3.1: only a priority class above the PPR's is delivered.
        if highest_irr == -1 or (highest_irr & 0xF0) <= ppr:
            return -1
        return highest_irr

    def has_interrupt(self) -> int:
        """kvm_apic_has_interrupt: the vector the vCPU would take now, or -1.

        -1 if the APIC is hardware-disabled (kvm_apic_present). A software-disabled
        APIC accepts no new fixed interrupts, but as SDM 11.4.7.2 says, what is already
        in the IRR is held and still delivered; KVM does the same.
        """
        if not self.apic_base & MSR_IA32_APICBASE_ENABLE:  # (not self.hw_enabled)
            return -1
        regs = self.regs
        if not any(regs[_ISR_AT:_ISR_AT + APIC_ISR_NR]) \
                and not any(regs[_IRR_AT:_IRR_AT + APIC_ISR_NR]):
            # Nothing in service, nothing requested (every VM entry of most guests): the
            # PPR is the TPR (_apic_update_ppr with no ISRV), and no vector.
            regs[APIC_PROCPRI >> 4] = regs[APIC_TASKPRI >> 4] & 0xFF
            return -1
        return self._apic_has_interrupt_for_ppr(self._apic_update_ppr())

    def get_interrupt(self) -> int:
        """kvm_get_apic_interrupt: acknowledge the vector has_interrupt() names.

        kvm_apic_ack_interrupt: the IRR bit moves to the ISR and the PPR rises to its
        class, so lower and equal classes wait for the EOI. -1 if there is none.
        """
        vector = self.has_interrupt()
        if vector == -1:
            return -1
        self._clear_vector(APIC_IRR, vector)
        self._set_vector(APIC_ISR, vector)
        self._apic_update_ppr()
        return vector

    def apic_set_eoi(self) -> int:
        """apic_set_eoi: a write to EOI retires the highest vector in service."""
        vector = _find_highest_vector(self._vectors(APIC_ISR))
        self._trace("kvm_eoi", apicid=self.vcpu_id, vector=vector)
        # "Not every write EOI will has corresponding ISR": then nothing happens.
        if vector == -1:
            return vector
        self._clear_vector(APIC_ISR, vector)
        self._apic_update_ppr()
        return vector

    def accept_irq(self, delivery_mode: int, vector: int, level: int, trig_mode: int) -> bool:
        """__apic_accept_irq: take one interrupt message addressed to this APIC.

        delivery_mode is an APIC_DM_* value (ICR bits 10:8 in place). Fixed (and lowest
        priority) set the IRR bit, and the TMR bit for level-triggered, if the APIC is
        enabled, then kick the vCPU; INIT and SIPI become pending_events for
        kvm_apic_accept_events. Returns whether the message was accepted.
        """
        vector &= APIC_VECTOR_MASK
        self._trace("kvm_apic_accept_irq", apicid=self.vcpu_id, dm=delivery_mode,
                    tm=trig_mode, vec=vector)
        if delivery_mode in (APIC_DM_LOWEST, APIC_DM_FIXED):
            if delivery_mode == APIC_DM_LOWEST:
                self.apic_arb_prio += 1
            if trig_mode and not level:
                return False  # deassert of a level interrupt: nothing to do
            if not self.apic_enabled():
                return False  # "FIXME add logic for vcpu on reset"
            if trig_mode:
                self._set_vector(APIC_TMR, vector)
            else:
                self._clear_vector(APIC_TMR, vector)
            # vmx_deliver_interrupt without APICv: kvm_lapic_set_irr, then a kick.
            self._set_vector(APIC_IRR, vector)
            self.kick()
            return True
        if delivery_mode == APIC_DM_INIT:
            if not trig_mode or level:
                self.pending_events = 1 << KVM_APIC_INIT  # replaces a pending SIPI
                self.kick()
                return True
            return False  # INIT level de-assert
        if delivery_mode == APIC_DM_STARTUP:
            self.sipi_vector = vector
            self.pending_events |= 1 << KVM_APIC_SIPI
            self.kick()
            return True
        # APIC_DM_EXTINT: handled by accept_pic_intr. NMI, SMI, remote read: vmsim
        # models none of them, so the message is dropped, as is an unknown mode.
        return False

    def accept_pic_intr(self) -> bool:
        """kvm_apic_accept_pic_intr: may the 8259's INTR reach this vCPU?

        Yes if the APIC is hardware-disabled (the PIC is wired straight to the CPU),
        or LINT0 is unmasked in ExtINT mode (SDM 11.5.1; KVM's reset does it on the BSP).
        """
        lvt0 = self.get_reg(APIC_LVT0)
        if not self.hw_enabled:
            return True
        return not lvt0 & APIC_LVT_MASKED and (lvt0 >> 8) & 7 == APIC_MODE_EXTINT

    def kvm_apic_local_deliver(self, lvt_type: int) -> bool:
        """kvm_apic_local_deliver: raise a local interrupt source through its LVT."""
        reg = self.get_reg(lvt_type)
        if self.hw_enabled and not reg & APIC_LVT_MASKED:
            return self.accept_irq(reg & APIC_MODE_MASK, reg & APIC_VECTOR_MASK, 1,
                                   reg & APIC_LVT_LEVEL_TRIGGER)
        return False

    # -- IPIs -----------------------------------------------------------------------

    def kvm_apic_send_ipi(self, icr_low: int, icr_high: int) -> None:
        """kvm_apic_send_ipi: deliver the ICR's message through the VM's APIC map."""
        if self.apic_map is None:
            ApicMap([self], attach=False).deliver(self, icr_low, icr_high)
        else:
            self.apic_map.deliver(self, icr_low, icr_high)

    def kvm_apic_match_physical_addr(self, mda: int) -> bool:
        return mda == APIC_BROADCAST or mda == self.xapic_id

    def kvm_apic_match_logical_addr(self, mda: int) -> bool:
        """SDM 11.6.2.2: flat model, LDR[31:24] & MDA != 0; cluster model, same
        cluster (high nibble) and a common bit in the low nibble."""
        if mda == APIC_BROADCAST:
            return True
        logical_id = self.get_reg(APIC_LDR) >> 24
        dfr = self.get_reg(APIC_DFR)
        if dfr == APIC_DFR_FLAT:
            return bool(logical_id & mda)
        if dfr == APIC_DFR_CLUSTER:
            return (logical_id >> 4) == (mda >> 4) and bool(logical_id & mda & 0xF)
        return False

    def kvm_apic_match_dest(self, source: KvmLapic | None, shorthand: int, dest: int,
                            dest_mode: int) -> bool:
        """kvm_apic_match_dest: is this APIC a target of the message?"""
        if shorthand == APIC_DEST_NOSHORT:
            if dest_mode == APIC_DEST_PHYSICAL:
                return self.kvm_apic_match_physical_addr(dest)
            return self.kvm_apic_match_logical_addr(dest)
        if shorthand == APIC_DEST_SELF:
            return self is source
        if shorthand == APIC_DEST_ALLINC:
            return True
        return self is not source  # APIC_DEST_ALLBUT

    # -- the timer ------------------------------------------------------------------

    def _update_divide_count(self) -> None:
        """update_divide_count: TDCR bits 3,1:0 (SDM Figure 11-10) -> 2,4,...,128,1."""
        tmp1 = self.get_reg(APIC_TDCR) & 0xF
        tmp2 = ((tmp1 & 0x3) | ((tmp1 & 0x8) >> 1)) + 1
        self.divide_count = 1 << (tmp2 & 0x7)

    def _ns_to_cycles(self, ns: int) -> int:
        return ns * self.hz // NSEC_PER_SEC

    def _cycles_to_ns(self, cycles: int) -> int:
        return cycles * NSEC_PER_SEC // self.hz

    def _tmict_to_ns(self, tmict: int) -> int:
        return tmict * APIC_BUS_CYCLE_NS * self.divide_count

    def _limit_periodic_timer_frequency(self) -> None:
        # The host's hrtimers are not throttled, so KVM refuses very short periods.
        if self.timer_mode == APIC_LVT_TIMER_PERIODIC and self.period:
            self.period = max(self.period, MIN_TIMER_PERIOD_US * 1000)

    def _apic_update_lvtt(self) -> None:
        timer_mode = self.get_reg(APIC_LVTT) & TIMER_MODE_MASK
        if self.timer_mode != timer_mode:
            self.timer_mode = timer_mode
            self._limit_periodic_timer_frequency()

    def _apic_get_tmcct(self) -> int:
        """apic_get_tmcct: the current count, from the time left to the expiry (0 once
        a one-shot has expired).

        KVM takes the time left modulo the period, which reads 0 at the very nanosecond
        the count is loaded; on a real host time has always moved by the next read, but
        vmsim's clock may not have, so there the full count is read, as on the chip.
        """
        if self.get_reg(APIC_TMICT) == 0 or self.period == 0:
            return 0
        remaining = max(self.target_expiration - self.now(), 0)
        ns = self._cycles_to_ns(remaining)
        if ns != self.period:
            ns %= self.period
        return ns // (APIC_BUS_CYCLE_NS * self.divide_count)

    def _cancel_hrtimer(self) -> None:
        self.timer.delete()
        self.timer_expires = None

    def _cancel_apic_timer(self) -> None:
        self._cancel_hrtimer()

    def _hrtimer_start(self, expires: int) -> None:
        self.timer_expires = expires
        self.timer.mod(expires)

    def _set_target_expiration(self) -> bool:
        """set_target_expiration for a count loaded into TMICT."""
        self.period = self._tmict_to_ns(self.get_reg(APIC_TMICT))
        if not self.period:
            return False
        self._limit_periodic_timer_frequency()
        self.target_expiration = self.now() + self._ns_to_cycles(self.period)
        return True

    def _update_target_expiration(self, old_divisor: int) -> None:
        """update_target_expiration: a new divisor scales the time left."""
        self.period = self._tmict_to_ns(self.get_reg(APIC_TMICT))
        self._limit_periodic_timer_frequency()
        now = self.now()
        remaining = max(self.target_expiration - now, 0)
        self.target_expiration = now + remaining * self.divide_count // old_divisor

    def _advance_periodic_target_expiration(self) -> None:
        now = self.now()
        self.target_expiration += self._ns_to_cycles(self.period)
        # Missed periods are not caught up: KVM delivers one interrupt and goes on.
        if self.target_expiration < now:
            self.target_expiration = now

    def _start_sw_period(self) -> None:
        if not self.period:
            return
        if self.now() > self.target_expiration:
            self._apic_timer_expired()
            if self.timer_mode == APIC_LVT_TIMER_ONESHOT:
                return
            self._advance_periodic_target_expiration()
        self._hrtimer_start(self.target_expiration)

    def _restart_apic_timer(self) -> None:
        self._start_sw_period()

    def _start_apic_timer(self) -> None:
        if self._set_target_expiration():
            self._restart_apic_timer()

    def _apic_timer_expired(self) -> None:
        """apic_timer_expired + kvm_apic_inject_pending_timer_irqs."""
        self.kvm_apic_local_deliver(APIC_LVTT)
        if self.timer_mode == APIC_LVT_TIMER_ONESHOT:
            self.target_expiration = 0

    def _apic_timer_fn(self) -> None:
        """apic_timer_fn: the hrtimer callback; a periodic timer re-arms itself."""
        self.timer_expires = None
        self._apic_timer_expired()
        if self.timer_mode == APIC_LVT_TIMER_PERIODIC and self.period:
            self._advance_periodic_target_expiration()
            self._hrtimer_start(self.target_expiration)

    # -- state ----------------------------------------------------------------------

    def state(self) -> dict:
        return {
            "regs": list(self.regs),
            "apic_base": self.apic_base,
            "sw_enabled": self.sw_enabled,
            "divide_count": self.divide_count,
            "timer_mode": self.timer_mode,
            "period": self.period,
            "target_expiration": self.target_expiration,
            "timer_expires": self.timer_expires,
            "pending_events": self.pending_events,
            "sipi_vector": self.sipi_vector,
            "apic_arb_prio": self.apic_arb_prio,
        }

    def load_state(self, d: dict) -> None:
        """Restore state() exactly, the armed timer included (same deadline)."""
        if len(d["regs"]) != LAPIC_MMIO_LENGTH >> 4:
            raise ValueError(f"APIC state: {len(d['regs'])} registers, expected 256")
        self.regs = [int(v) & 0xFFFFFFFF for v in d["regs"]]
        self.apic_base = int(d["apic_base"])
        self.sw_enabled = bool(d["sw_enabled"])
        self.divide_count = int(d["divide_count"])
        self.timer_mode = int(d["timer_mode"])
        self.period = int(d["period"])
        self.target_expiration = int(d["target_expiration"])
        self.pending_events = int(d["pending_events"])
        self.sipi_vector = int(d["sipi_vector"])
        self.apic_arb_prio = int(d["apic_arb_prio"])
        expires = d["timer_expires"]
        if expires is None:
            self._cancel_hrtimer()
        else:
            self._hrtimer_start(int(expires))

    # -- KVM_GET_LAPIC / KVM_SET_LAPIC (struct kvm_lapic_state) ---------------------------

    def kvm_apic_get_state(self) -> bytes:
        """kvm_apic_get_state: the first KVM_APIC_REG_SIZE bytes of the register page, each
        register a little-endian u32 at its offset, with TMCCT read now (the page itself
        keeps 0 there: the count is computed from the timer)."""
        page = bytearray(KVM_APIC_REG_SIZE)
        for i in range(KVM_APIC_REG_SIZE >> 4):
            page[i << 4:(i << 4) + 4] = self.regs[i].to_bytes(4, "little")
        page[APIC_TMCCT:APIC_TMCCT + 4] = self._apic_get_tmcct().to_bytes(4, "little")
        return bytes(page)

    def kvm_apic_set_state(self, page: bytes) -> None:
        """kvm_apic_set_state: the page copied in, then what lapic.c derives from it: the
        version, SPIV's software enable, the timer mode and divisor, the PPR; the timer
        restarts with the count TMCCT held (__start_apic_timer(apic, APIC_TMCCT)).
        IA32_APIC_BASE is not in the page: it comes with KVM_SET_MSRS / KVM_SET_SREGS."""
        if len(page) != KVM_APIC_REG_SIZE:
            raise ValueError(f"struct kvm_lapic_state is {KVM_APIC_REG_SIZE} bytes, "
                             f"not {len(page)}")
        self._cancel_apic_timer()
        for i in range(KVM_APIC_REG_SIZE >> 4):
            self.regs[i] = int.from_bytes(page[i << 4:(i << 4) + 4], "little")
        tmcct = self.regs[APIC_TMCCT >> 4]
        self.regs[APIC_TMCCT >> 4] = 0
        self.kvm_apic_set_version()
        self._apic_set_spiv(self.get_reg(APIC_SPIV))
        self._apic_update_lvtt()
        self._update_divide_count()
        self._apic_update_ppr()
        self.period = self._tmict_to_ns(self.get_reg(APIC_TMICT))
        self.target_expiration = 0
        if self.period and tmcct:
            self._limit_periodic_timer_frequency()
            self.target_expiration = self.now() + self._ns_to_cycles(
                tmcct * APIC_BUS_CYCLE_NS * self.divide_count)
            self._hrtimer_start(self.target_expiration)

    def view(self) -> dict:
        """What the GUI's APIC panel shows (read-only; no side effects)."""
        lvtt = self.get_reg(APIC_LVTT)
        return {
            "id": self.xapic_id,
            "version": self.get_reg(APIC_LVR),
            "hw_enabled": self.hw_enabled,
            "sw_enabled": self.sw_enabled,
            "svr": self.get_reg(APIC_SPIV),
            "tpr": self.get_reg(APIC_TASKPRI),
            "ppr": self.get_reg(APIC_PROCPRI),
            "ldr": self.get_reg(APIC_LDR),
            "dfr": self.get_reg(APIC_DFR),
            "irr": self._vector_list(APIC_IRR),
            "isr": self._vector_list(APIC_ISR),
            "tmr": self._vector_list(APIC_TMR),
            "icr": self.get_reg(APIC_ICR) | self.get_reg(APIC_ICR2) << 32,
            "lvt_timer": {
                "mode": "periodic" if self.timer_mode == APIC_LVT_TIMER_PERIODIC else "one-shot",
                "masked": bool(lvtt & APIC_LVT_MASKED),
                "vector": lvtt & APIC_VECTOR_MASK,
            },
            "lvt_lint0": self.get_reg(APIC_LVT0),
            "lvt_lint1": self.get_reg(APIC_LVT1),
            "lvt_error": self.get_reg(APIC_LVTERR),
            "initial_count": self.get_reg(APIC_TMICT),
            "current_count": self._apic_get_tmcct(),
            "divide": self.divide_count,
            "next_expiry": self.timer_expires,
            "pending_init": bool(self.pending_events & 1 << KVM_APIC_INIT),
            "pending_sipi": bool(self.pending_events & 1 << KVM_APIC_SIPI),
            "sipi_vector": self.sipi_vector,
        }


class ApicMap:
    """kvm_apic_map: the VM's local APICs, for kvm_irq_delivery_to_apic.

    KVM keeps an optimised map from APIC IDs to vCPUs and falls back to asking every
    APIC (kvm_apic_match_dest) when the map cannot answer; vmsim always asks every
    APIC, in vCPU order, which delivers to the same set. (One corner differs: KVM's
    logical map leaves out software-disabled APICs, so there a logical INIT to one is
    dropped; here it is delivered.)
    """

    def __init__(self, lapics: list[KvmLapic], attach: bool = True) -> None:
        self.lapics = list(lapics)
        if attach:
            for apic in self.lapics:
                apic.apic_map = self

    def deliver(self, src: KvmLapic, icr_low: int, icr_high: int) -> None:
        """kvm_apic_send_ipi: decode the ICR, trace it, deliver it."""
        irq = kvm_icr_to_lapic_irq(icr_low, icr_high)
        src._trace("kvm_apic_ipi", icr_low=icr_low, dest_id=irq.dest_id)
        self.kvm_irq_delivery_to_apic(src, irq)

    def kvm_irq_delivery_to_apic(self, src: KvmLapic | None, irq: KvmLapicIrq) -> int:
        """__kvm_irq_delivery_to_apic: the number of APICs that accepted, or -1 if no
        APIC matched. `src` is None for messages that come from no APIC (an IOAPIC)."""
        if irq.shorthand == APIC_DEST_SELF:
            if src is None:
                return 0
            return int(src.accept_irq(irq.delivery_mode, irq.vector, irq.level, irq.trig_mode))
        delivery_mode = irq.delivery_mode
        lowest_prio = delivery_mode == APIC_DM_LOWEST
        if irq.dest_mode == APIC_DEST_PHYSICAL and irq.dest_id == APIC_BROADCAST and lowest_prio:
            delivery_mode, lowest_prio = APIC_DM_FIXED, False  # "phys broadcast and lowest prio"
        r = -1
        candidates: list[KvmLapic] = []
        for apic in self.lapics:
            if not apic.hw_enabled:  # kvm_apic_present
                continue
            if not apic.kvm_apic_match_dest(src, irq.shorthand, irq.dest_id, irq.dest_mode):
                continue
            if not lowest_prio:
                r = max(r, 0) + int(apic.accept_irq(delivery_mode, irq.vector, irq.level,
                                                     irq.trig_mode))
            elif apic.sw_enabled:
                candidates.append(apic)
        if candidates:
            # Vector hashing (KVM's default): the (vector mod n)-th candidate.
            target = candidates[irq.vector % len(candidates)]
            r = int(target.accept_irq(delivery_mode, irq.vector, irq.level, irq.trig_mode))
        return r
