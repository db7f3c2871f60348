"""8254 PIT, ports 0x40-0x43, as QEMU models it (QEMU hw/timer/i8254.c,
hw/timer/i8254_common.c; virtualization-facts.md §7.3), with Linux's in-kernel copy
(arch/x86/kvm/i8254.c) as a second way of driving IRQ 0.

Offsets from 0x40: 0-2 the counters' data ports, 3 the mode/command register
(write-only: reads give 0, as QEMU). The chip implements 1-byte accesses only
(pit_ioport_ops impl 1..1): attach it with sizes=(1,); a wider access that reaches it
is split here the same way.

Time. QEMU counts nanoseconds of QEMU_CLOCK_VIRTUAL and turns them into PIT ticks with
muldiv64(t - count_load_time, PIT_FREQ, NANOSECONDS_PER_SECOND); here `now()` counts
cycles and `hz` (cycles per second, vmsim.costs.NOMINAL_HZ) takes the place of
NANOSECONDS_PER_SECOND in the same formulas, floors included. The PIT keeps no running
counter: everything (the counter read, OUT, the next OUT transition) is computed from
the time the count was loaded, as QEMU's pit_get_count / pit_get_out /
pit_get_next_transition_time do. A consequence of the floors, QEMU's as well: a tick
time converted to cycles and back can land on the tick before, so the timer of mode 2
fires just before tick n*count+1 (when the counter shows n*count: OUT high) and just
before tick (n+1)*count (OUT low): IRQ 0 rises once per period, and is low for one
tick at its end. Where one of those ticks converts exactly (a multiple of 596591 =
PIT_FREQ / gcd(hz, PIT_FREQ), at 3 GHz here as at 1 GHz in QEMU), that period's rise is
lost: at 100 Hz twice in 596591 periods, once per ~50 minutes of guest time, as in QEMU.

Registers as QEMU: counter latch (command access 0) and the read-back command (0xC0 |
bits: 0x20 = do not latch count, 0x10 = do not latch status, 0x02/0x04/0x08 = channel
0/1/2), a second latch before the first is read is ignored; LSB / MSB / LSB-then-MSB
access with the read and write flip-flops (read_state / write_state); a reload of 0
means 65536; the BCD bit is stored and reported in the status byte but counting is
binary (QEMU: "XXX: add BCD"); the status byte's NULL COUNT bit (6) is always 0.
A mode written to the command port takes effect at the next count load (QEMU does not
re-arm its timer on the command: "XXX: update irq timer ?"). Modes 6 and 7 are kept as
written (QEMU: OUT then behaves as in mode 0, the counter as in mode 2); the kvm style
folds them to 2 and 3 as the datasheet and Linux do.

Reset (QEMU pit_reset_common): every channel in mode 3 with count 65536, channel 0
running, so IRQ 0 ticks at 18.2 Hz from power-on, firmware or not; gate high on
channels 0 and 1, low on 2 (QEMU counts regardless of the gate in every mode; only a
rising gate restarts modes 1, 2, 3, 5). pit_reset arms the timer without driving IRQ 0,
so QEMU's first evaluation, at half a period floored to the tick before, sees OUT still
high: IRQ 0 rises for one cycle 27.5 ms after reset, an extra edge. The gate of
channel 2 comes from port 0x61 on a PC (the speaker port), which vmsim does not model:
`pit_set_gate` is here for whoever does.

irq_style "qemu" (QEMU's pit_irq_timer_update): channel 0's OUT is IRQ 0. At each count
load and at each OUT transition, set_irq(OUT level) and re-arm the timer at the next
transition (next_transition_time), so the PIC sees the level OUT really has.

irq_style "kvm" (Linux arch/x86/kvm/i8254.c, KVM_CREATE_PIT2). What the kernel's copy
does differently from QEMU's:
- No OUT waveform on the IRQ line: an hrtimer (create_pit_timer) fires once per period,
  and each expiry (pit_timer_fn -> pit_do_work) pulses IRQ 0: set_irq(1), set_irq(0).
  In mode 3 that pulse comes at the end of each period, where QEMU raises IRQ 0 at the
  load and at each period's start; in mode 0 the kernel pulses once, QEMU holds IRQ 0
  high from terminal count until the next load.
- Modes 0, 1 and 4 are one-shot timers, 2 and 3 periodic; mode 5 stops the timer.
- A periodic period shorter than min_timer_period_us (200 us, x86.c module parameter)
  is lengthened to it: 5 kHz at most (the first expiry still comes after the period
  asked for). QEMU has no floor.
- Channel 0's counter and OUT are computed from the hrtimer's remaining time
  (__kpit_elapsed: period - remaining), not from count_load_time.
- Modes 6 and 7 become 2 and 3 (QEMU keeps 6 and 7).
- Lost ticks are reinjected (KVM_REINJECT_CONTROL, on by default; QEMU's kvm-pit
  lost_tick_policy=delay keeps it on): an expiry while the previous tick is not yet
  acknowledged is counted in `pending` and delivered at the next acknowledgement
  (kvm_pit_ack_irq, from the PIC's ack notifier for IRQ 0). Here reinject is off unless
  asked for (`reinject=True`), and the acknowledgement is `ack_irq()`, which the
  interrupt controller's wiring must call; the mask notifier (pit_mask_notifer) is not
  modelled.
- The kernel's reset leaves the timer off (mode 0xff), but QEMU's kvm-pit reset writes
  pit_reset_common's state into the kernel (KVM_SET_PIT2), so here both styles start
  in mode 3 at 18.2 Hz.
- The work item runs at once here (the kernel runs it on the kvm-pit kthread).

State: every field is plain data; `state()` / `load_state()` round-trip it and re-arm
the timer as pit_post_load does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from vmsim.costs import NOMINAL_HZ
from vmsim.hw.i8259 import split_read, split_write

ACCESS_SIZES = (1,)  # pit_ioport_ops: impl 1..1

PIT_FREQ = 1193182  # Hz, the input clock (include/hw/timer/i8254.h)
PIT_IOBASE = 0x40
PIT_IRQ = 0
MIN_TIMER_PERIOD_US = 200  # Linux arch/x86/kvm/x86.c min_timer_period_us

RW_STATE_LSB, RW_STATE_MSB, RW_STATE_WORD0, RW_STATE_WORD1 = 1, 2, 3, 4

IRQ_STYLES = ("qemu", "kvm")

# QEMU's vmstate_pit_channel, in its order.
PIT_CHANNEL_FIELDS = ("count", "latched_count", "count_latched", "status_latched",
                      "status", "read_state", "write_state", "write_latch", "rw_mode",
                      "mode", "bcd", "gate", "count_load_time", "next_transition_time")
# struct kvm_kpit_state's timer side (kvm style only).
KPIT_FIELDS = ("period", "is_periodic", "timer_active", "expires", "reinject", "pending",
               "irq_ack")


class Timer(Protocol):
    def mod(self, deadline: int) -> None: ...

    def delete(self) -> None: ...


def muldiv64(a: int, b: int, c: int) -> int:
    """a * b / c, floored, without overflow (QEMU's muldiv64 for the unsigned a it gets)."""
    return (a * b) // c


class PITChannelState:
    """One counter; the fields of QEMU's PITChannelState (times in cycles)."""

    def __init__(self) -> None:
        for name in PIT_CHANNEL_FIELDS:
            setattr(self, name, 0)


class Pit8254:
    """Three counters; channel 0 drives ISA IRQ 0 through `set_irq(level)`.

    `now()` is the virtual time in cycles, `make_timer(callback)` makes the one timer the
    PIT uses (channel 0's irq_timer, or the kernel's hrtimer), `hz` is cycles per second."""

    def __init__(self, now: Callable[[], int], make_timer: Callable[[Callable[[], None]], Timer],
                 set_irq: Callable[[int], None], hz: int = NOMINAL_HZ,
                 irq_style: str = "qemu", reinject: bool = False):
        if irq_style not in IRQ_STYLES:
            raise ValueError(f"irq_style must be one of {IRQ_STYLES}, not {irq_style!r}")
        if hz <= 0:
            raise ValueError(f"hz must be positive, not {hz}")
        self.now = now
        self.set_irq = set_irq
        self.hz = hz
        self.irq_style = irq_style
        self.channels = [PITChannelState() for _ in range(3)]
        # kvm_kpit_state (kvm style): the hrtimer's period and expiry, reinjection.
        self.period = 0
        self.is_periodic = 0
        self.timer_active = 0
        self.expires = 0
        self.reinject = 1 if reinject else 0
        self.pending = 0
        self.irq_ack = 1
        callback = self.pit_irq_timer if irq_style == "qemu" else self.pit_timer_fn
        self.irq_timer = make_timer(callback)
        self.pit_reset()

    @property
    def kvm(self) -> bool:
        return self.irq_style == "kvm"

    # -- time -------------------------------------------------------------------------

    def _ticks(self, s: PITChannelState, current_time: int) -> int:
        """PIT ticks since the count was loaded (QEMU: the muldiv64 at the top of each of
        pit_get_count / pit_get_out / pit_get_next_transition_time)."""
        if self.kvm and s is self.channels[0]:
            return muldiv64(self._kpit_elapsed(current_time), PIT_FREQ, self.hz)
        return muldiv64(max(0, current_time - s.count_load_time), PIT_FREQ, self.hz)

    def _kpit_elapsed(self, current_time: int) -> int:
        """__kpit_elapsed: channel 0's time into the current period, from the hrtimer."""
        if not self.period:
            return 0
        remaining = self.expires - current_time
        return max(0, self.period - remaining)

    def pit_get_count(self, s: PITChannelState) -> int:
        """The counter as the guest reads it (1..65536; 65536 reads as 0)."""
        d = self._ticks(s, self.now())
        if s.mode in (0, 1, 4, 5):
            return (s.count - d) & 0xFFFF
        if s.mode == 3:
            return s.count - ((2 * d) % s.count)  # QEMU: "may be incorrect for odd counts"
        return s.count - (d % s.count)

    def pit_get_out(self, s: PITChannelState, current_time: int) -> int:
        """The OUT pin at `current_time`."""
        d = self._ticks(s, current_time)
        mode = s.mode
        if mode == 1:
            return int(d < s.count)
        if mode == 2:
            return int(d % s.count == 0 and d != 0)
        if mode == 3:
            return int(d % s.count < ((s.count + 1) >> 1))
        if mode in (4, 5):
            return int(d == s.count)
        return int(d >= s.count)  # mode 0, and 6 and 7 as QEMU keeps them

    def pit_get_next_transition_time(self, s: PITChannelState, current_time: int) -> int:
        """When OUT next changes, in cycles, or -1 if it never will (modes 0, 1, 4, 5
        after terminal count)."""
        d = self._ticks(s, current_time)
        mode = s.mode
        if mode == 2:
            base = d - d % s.count
            next_time = base + s.count if (d - base == 0 and d != 0) else base + s.count + 1
        elif mode == 3:
            base = d - d % s.count
            period2 = (s.count + 1) >> 1
            next_time = base + period2 if d - base < period2 else base + s.count
        elif mode in (4, 5):
            if d < s.count:
                next_time = s.count
            elif d == s.count:
                next_time = s.count + 1
            else:
                return -1
        else:  # 0, 1, and 6, 7 as QEMU keeps them
            if d < s.count:
                next_time = s.count
            else:
                return -1
        next_time = s.count_load_time + muldiv64(next_time, self.hz, PIT_FREQ)
        if next_time <= current_time:  # QEMU: "fix potential rounding problems"
            next_time = current_time + 1
        return next_time

    # -- QEMU's channel 0 timer (irq_style "qemu") ------------------------------------

    def pit_irq_timer_update(self, s: PITChannelState, current_time: int) -> None:
        """Drive IRQ 0 with OUT and re-arm at the next transition. Only channel 0 has a
        timer and an IRQ (QEMU: `if (!s->irq_timer) return`)."""
        if s is not self.channels[0] or self.kvm:
            return
        expire_time = self.pit_get_next_transition_time(s, current_time)
        irq_level = self.pit_get_out(s, current_time)
        self.set_irq(irq_level)
        s.next_transition_time = expire_time
        if expire_time != -1:
            self.irq_timer.mod(expire_time)
        else:
            self.irq_timer.delete()

    def pit_irq_timer(self) -> None:
        """The timer callback: evaluate at the transition time it was armed for."""
        s = self.channels[0]
        self.pit_irq_timer_update(s, s.next_transition_time)

    # -- the kernel's channel 0 hrtimer (irq_style "kvm") -----------------------------

    def create_pit_timer(self, val: int, is_period: int) -> None:
        interval = muldiv64(val, self.hz, PIT_FREQ)
        self.destroy_pit_timer()
        self.period = interval
        self.is_periodic = is_period
        self.kvm_pit_reset_reinject()
        if self.is_periodic:
            min_period = MIN_TIMER_PERIOD_US * self.hz // 1_000_000
            self.period = max(self.period, min_period, 1)  # 1: a clock below 5 kHz
        self.expires = self.now() + interval
        self.timer_active = 1
        self.irq_timer.mod(self.expires)

    def destroy_pit_timer(self) -> None:
        """hrtimer_cancel: the expiry stays (hrtimer_get_remaining still reads it)."""
        self.timer_active = 0
        self.irq_timer.delete()

    def kvm_pit_reset_reinject(self) -> None:
        self.pending = 0
        self.irq_ack = 1

    def pit_timer_fn(self) -> None:
        """The hrtimer expired: queue the work (run at once), advance a periodic timer
        by one period from its last expiry (hrtimer_add_expires_ns, so no drift)."""
        if self.reinject:
            self.pending += 1
        self.pit_do_work()
        if self.is_periodic:
            self.expires += self.period
            self.irq_timer.mod(self.expires)
        else:
            self.timer_active = 0

    def pit_do_work(self) -> None:
        if self.reinject:
            acked, self.irq_ack = self.irq_ack, 0
            if not acked:
                return
        self.set_irq(1)
        self.set_irq(0)

    def ack_irq(self) -> None:
        """kvm_pit_ack_irq: the guest acknowledged IRQ 0. With reinject on, a tick that
        expired meanwhile is delivered now. Nothing to do otherwise."""
        if not (self.kvm and self.reinject):
            return
        self.irq_ack = 1
        if self.pending - 1 >= 0:  # atomic_dec_if_positive
            self.pending -= 1
            if self.pending > 0:
                self.pit_do_work()

    # -- loading, latching, gate ------------------------------------------------------

    def pit_load_count(self, n: int, val: int) -> None:
        s = self.channels[n]
        if val == 0:
            val = 0x10000
        s.count = val
        if not self.kvm:
            s.count_load_time = self.now()
            self.pit_irq_timer_update(s, s.count_load_time)
            return
        if n != 0:
            s.count_load_time = self.now()
            return
        # The kernel's channel 0 keeps no count_load_time: its timer is the clock.
        if s.mode in (0, 1, 4):
            self.create_pit_timer(val, 0)
        elif s.mode in (2, 3):
            self.create_pit_timer(val, 1)
        else:
            self.destroy_pit_timer()

    def pit_latch_count(self, s: PITChannelState) -> None:
        """Latch the counter for reading, unless a latched value is still unread."""
        if not s.count_latched:
            s.latched_count = self.pit_get_count(s) & 0xFFFF  # uint16_t latched_count
            s.count_latched = s.rw_mode

    def pit_latch_status(self, s: PITChannelState) -> None:
        """Status byte: OUT(7) NULL COUNT(6, always 0) RW(5:4) MODE(3:1) BCD(0)."""
        if not s.status_latched:
            s.status = ((self.pit_get_out(s, self.now()) << 7) | (s.rw_mode << 4)
                        | (s.mode << 1) | s.bcd) & 0xFF
            s.status_latched = 1

    def pit_set_gate(self, n: int, val: int) -> None:
        """GATE input of channel n (QEMU pit_set_channel_gate): a rising edge restarts
        counting in modes 1, 2, 3 and 5; in 0 and 4 QEMU does not stop the count."""
        s = self.channels[n]
        val = 1 if val else 0
        if s.mode in (1, 2, 3, 5) and s.gate < val:
            s.count_load_time = self.now()
            self.pit_irq_timer_update(s, s.count_load_time)
        s.gate = val

    # -- ports ------------------------------------------------------------------------

    def pit_ioport_write(self, addr: int, val: int) -> None:
        addr &= 3
        val &= 0xFF
        if addr == 3:
            channel = val >> 6
            if channel == 3:  # read-back
                for n, s in enumerate(self.channels):
                    if val & (2 << n):
                        if not val & 0x20:
                            self.pit_latch_count(s)
                        if not val & 0x10:
                            self.pit_latch_status(s)
                return
            s = self.channels[channel]
            access = (val >> 4) & 3
            if access == 0:
                self.pit_latch_count(s)
                return
            s.rw_mode = access
            s.read_state = access
            s.write_state = access
            s.mode = (val >> 1) & 7
            if self.kvm and s.mode > 5:
                s.mode -= 4
            s.bcd = val & 1
            return
        s = self.channels[addr]
        if s.write_state == RW_STATE_MSB:
            self.pit_load_count(addr, val << 8)
        elif s.write_state == RW_STATE_WORD0:
            s.write_latch = val
            s.write_state = RW_STATE_WORD1
        elif s.write_state == RW_STATE_WORD1:
            # the flip-flop turns before the load (QEMU: after; the same, unless set_irq
            # re-enters the PIT)
            s.write_state = RW_STATE_WORD0
            self.pit_load_count(addr, s.write_latch | (val << 8))
        else:  # RW_STATE_LSB, and 0 before any command
            self.pit_load_count(addr, val)

    def pit_ioport_read(self, addr: int) -> int:
        addr &= 3
        if addr == 3:
            return 0  # the command register is write-only
        s = self.channels[addr]
        if s.status_latched:
            s.status_latched = 0
            return s.status
        if s.count_latched:
            if s.count_latched == RW_STATE_MSB:
                s.count_latched = 0
                return s.latched_count >> 8
            if s.count_latched == RW_STATE_WORD0:
                s.count_latched = RW_STATE_MSB
                return s.latched_count & 0xFF
            s.count_latched = 0
            return s.latched_count & 0xFF
        if s.read_state == RW_STATE_MSB:
            return (self.pit_get_count(s) >> 8) & 0xFF
        if s.read_state == RW_STATE_WORD0:
            s.read_state = RW_STATE_WORD1
            return self.pit_get_count(s) & 0xFF
        if s.read_state == RW_STATE_WORD1:
            s.read_state = RW_STATE_WORD0
            return (self.pit_get_count(s) >> 8) & 0xFF
        return self.pit_get_count(s) & 0xFF

    # Device interface: offsets 0..3 = ports 0x40..0x43.
    def read(self, offset: int, size: int) -> int:
        return split_read(self.pit_ioport_read, 4, offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        split_write(self.pit_ioport_write, 4, offset, size, value)

    # -- reset and state --------------------------------------------------------------

    def pit_reset(self) -> None:
        """QEMU pit_reset (pit_reset_common, then channel 0's timer armed; the kvm style
        as QEMU's kvm-pit: the same state handed to the kernel, KVM_SET_PIT2)."""
        now = self.now()
        for n, s in enumerate(self.channels):
            s.mode = 3
            s.gate = int(n != 2)
            s.count_load_time = now
            s.count = 0x10000
        s0 = self.channels[0]
        if self.kvm:
            for n, s in enumerate(self.channels):
                self.pit_load_count(n, s.count)
        else:
            s0.next_transition_time = self.pit_get_next_transition_time(s0, now)
            self.irq_timer.mod(s0.next_transition_time)

    def state(self) -> dict[str, Any]:
        return {"irq_style": self.irq_style,
                "channels": [{name: int(getattr(s, name)) for name in PIT_CHANNEL_FIELDS}
                             for s in self.channels],
                "kpit": {name: int(getattr(self, name)) for name in KPIT_FIELDS}}

    def load_state(self, d: dict[str, Any]) -> None:
        """Restore, then re-arm the timer where it was (QEMU pit_post_load)."""
        if d["irq_style"] != self.irq_style:
            raise ValueError(f"PIT state is for irq_style {d['irq_style']!r}, "
                             f"this PIT is {self.irq_style!r}")
        for s, cd in zip(self.channels, d["channels"], strict=True):
            for name in PIT_CHANNEL_FIELDS:
                setattr(s, name, int(cd[name]))
        for name in KPIT_FIELDS:
            setattr(self, name, int(d["kpit"][name]))
        if self.kvm:
            deadline = self.expires if self.timer_active else -1
        else:
            deadline = self.channels[0].next_transition_time
        if deadline != -1:
            self.irq_timer.mod(deadline)
        else:
            self.irq_timer.delete()

    def channel_view(self, n: int) -> dict[str, Any]:
        """What the GUI shows of channel n: mode, reload value, counter now, OUT now, gate,
        and when IRQ 0 next rises (cycles; None for channels 1-2 or when it will not)."""
        s = self.channels[n]
        now = self.now()
        return {"mode": s.mode, "reload": s.count, "counter": self.pit_get_count(s),
                "out": self.pit_get_out(s, now), "gate": s.gate, "bcd": s.bcd,
                "rw_mode": s.rw_mode, "count_latched": s.count_latched,
                "status_latched": s.status_latched,
                "next_irq": self._next_irq(s, now) if n == 0 else None}

    def _next_irq(self, s: PITChannelState, now: int) -> int | None:
        if self.kvm:
            return self.expires if self.timer_active else None
        # QEMU: follow the timer's chain of OUT transitions from the armed one to the
        # first that raises IRQ 0 (a fall, and rounding's extra step, may come first).
        out, t = self.pit_get_out(s, now), s.next_transition_time
        for _ in range(6):
            if t == -1:
                return None
            new_out = self.pit_get_out(s, t)
            if new_out and not out:
                return t
            out = new_out
            t = self.pit_get_next_transition_time(s, t)
        return None
