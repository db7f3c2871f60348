"""8259A PIC pair, master at 0x20 and slave at 0xA0, as QEMU models it
(QEMU hw/intc/i8259.c, hw/intc/i8259_common.c; virtualization-facts.md §7.2).

Each `Pic8259` is one chip with QEMU's `PICCommonState` fields and functions of the same
names (`get_priority`, `pic_get_irq`, `pic_update_irq`, `pic_set_irq`, `pic_intack`,
`pic_ioport_read/write`); `PicPair` is QEMU's `i8259_init` wiring plus `pic_read_irq`:
the slave's INT output drives master input 2, the master's drives the CPU's INTR line.

Ports, per chip: offset 0 is the command port (ICW1, OCW2, OCW3; reads IRR or ISR),
offset 1 the data port (ICW2-4 during initialization, else IMR). The chips implement
1-byte accesses only (QEMU's pic_base_ioport_ops impl.min = impl.max = 1): attach them
with sizes=(1,) and the bus splits wider ones; a wider access that does reach a chip
is split here the same way. ELCR (edge/level control, ports 0x4D0/0x4D1) is its own
device, `PicPair.elcr`, as in QEMU where it is a separate one-byte region per chip.

What QEMU does, and so this model does:
- Edge-triggered inputs latch IRR on a 0->1 transition (`last_irr` remembers the level);
  level-triggered ones (ELCR bit set) follow the line, and INTA does not clear them.
- ICW1 resets the chip (`pic_init_reset`): IMR, ISR and IRR (except level-triggered
  bits) are cleared, the priority rotation goes back to IR0. ICW1 bit 3 (LTIM, level
  mode for the whole chip) is only logged by QEMU and ignored; so here.
- Reset (`pic_reset`) leaves IMR = 0 (everything unmasked) and irq_base = 0. A PC's
  firmware programs the PICs (SeaBIOS: master 0x08, slave 0x70); a guest started
  without firmware, as vmsim's are, finds them at reset until it sends ICW1-4 itself.
- No IRQ at INTA time: the spurious vector base + 7 is returned and ISR is unchanged;
  if the master finds IR2 but the slave has nothing, the vector is the slave's base + 7
  (IRQ 15) and the master's ISR bit 2 is still set (it needs its EOI).
- Poll mode (OCW3 bit 2): the next read of either port acknowledges the highest request
  and returns 0x80 | level, or 0 if none (QEMU does not follow IR2 to the slave here).
- OCW3 does not re-evaluate INT (QEMU's pic_ioport_write has no pic_update_irq there):
  turning special mask mode on takes effect at the next IMR write, EOI or input change.
- LTIM, the buffered-mode bits of ICW4 and the MCS-80 mode are not modelled (QEMU
  neither).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

ACCESS_SIZES = (1,)  # pic_base_ioport_ops / pic_elcr_ioport_ops: impl 1..1

MASTER_IOBASE, SLAVE_IOBASE = 0x20, 0xA0
MASTER_ELCR, SLAVE_ELCR = 0x4D0, 0x4D1
MASTER_ELCR_MASK, SLAVE_ELCR_MASK = 0xF8, 0xDE  # IRQ 0, 1, 2, 8, 13 are always edge
CASCADE_IRQ = 2  # the slave's INT output goes to master IR2

# The registers a snapshot saves (QEMU's vmstate_pic_common), in its order.
PIC_STATE_FIELDS = ("last_irr", "irr", "imr", "isr", "priority_add", "irq_base",
                    "read_reg_select", "poll", "special_mask", "init_state", "auto_eoi",
                    "rotate_on_auto_eoi", "special_fully_nested_mode", "init4",
                    "single_mode", "elcr")


def split_read(read_byte: Callable[[int], int], ports: int, offset: int, size: int) -> int:
    """An access wider than the 1 byte a chip implements, as QEMU's memory API splits it:
    byte by byte, little-endian; bytes past the chip's last port read as all ones (the
    bus's answer for ports nobody claims)."""
    value = 0
    for i in range(max(1, size)):
        port = offset + i
        byte = read_byte(port) if 0 <= port < ports else 0xFF
        value |= byte << (8 * i)
    return value


def split_write(write_byte: Callable[[int, int], None], ports: int, offset: int, size: int,
                value: int) -> None:
    """The write side of split_read: bytes past the chip's last port are dropped."""
    for i in range(max(1, size)):
        port = offset + i
        if 0 <= port < ports:
            write_byte(port, (value >> (8 * i)) & 0xFF)


class Pic8259:
    """One 8259A. `int_out(level)` is its INT output (QEMU's `int_out[0]`), called each
    time the output is recomputed (qemu_irq_raise / qemu_irq_lower), changed or not."""

    def __init__(self, master: bool, elcr_mask: int,
                 int_out: Callable[[int], None] | None = None):
        self.master = master
        self.elcr_mask = elcr_mask
        self.int_out = int_out
        self.irr = 0
        self.elcr = 0
        self.pic_reset()

    # -- reset ------------------------------------------------------------------------

    def pic_reset_common(self) -> None:
        """The registers ICW1 and reset clear. ELCR is not reset here (QEMU's note)."""
        self.last_irr = 0
        self.irr &= self.elcr
        self.imr = 0
        self.isr = 0
        self.priority_add = 0
        self.irq_base = 0
        self.read_reg_select = 0
        self.poll = 0
        self.special_mask = 0
        self.init_state = 0
        self.auto_eoi = 0
        self.rotate_on_auto_eoi = 0
        self.special_fully_nested_mode = 0
        self.init4 = 0
        self.single_mode = 0

    def pic_init_reset(self) -> None:
        self.pic_reset_common()
        self.pic_update_irq()

    def pic_reset(self) -> None:
        """Device reset: as ICW1, and ELCR back to all-edge."""
        self.elcr = 0
        self.pic_init_reset()

    # -- priority resolution ----------------------------------------------------------

    def get_priority(self, mask: int) -> int:
        """The highest priority in `mask` (0 = highest, counted from the rotation point
        priority_add); 8 if mask is empty."""
        if mask == 0:
            return 8
        priority = 0
        while not mask & (1 << ((priority + self.priority_add) & 7)):
            priority += 1
        return priority

    def pic_get_irq(self) -> int:
        """The input the chip wants to interrupt with, or -1: the highest unmasked request
        that beats every in-service level (in special mask mode masked ISR bits do not
        count; in special fully nested mode the master ignores ISR bit 2, so a
        higher-priority slave request can nest)."""
        priority = self.get_priority(self.irr & ~self.imr)
        if priority == 8:
            return -1
        mask = self.isr
        if self.special_mask:
            mask &= ~self.imr
        if self.special_fully_nested_mode and self.master:
            mask &= ~(1 << CASCADE_IRQ)
        cur_priority = self.get_priority(mask)
        if priority < cur_priority:
            return (priority + self.priority_add) & 7
        return -1

    def pic_get_output(self) -> int:
        return 1 if self.pic_get_irq() >= 0 else 0

    def pic_update_irq(self) -> None:
        """Recompute INT; must run whenever it may have changed."""
        if self.int_out is not None:
            self.int_out(self.pic_get_output())

    # -- inputs and acknowledge -------------------------------------------------------

    def pic_set_irq(self, irq: int, level: int) -> None:
        """Input IRn at `level`: an edge-triggered input latches IRR on 0->1 only."""
        mask = 1 << (irq & 7)
        if self.elcr & mask:
            if level:
                self.irr |= mask
                self.last_irr |= mask
            else:
                self.irr &= ~mask
                self.last_irr &= ~mask
        elif level:
            if not self.last_irr & mask:
                self.irr |= mask
            self.last_irr |= mask
        else:
            self.last_irr &= ~mask
        self.pic_update_irq()

    def pic_intack(self, irq: int) -> None:
        """INTA for IRn: IRR -> ISR (auto-EOI: no ISR bit, maybe rotate); a level-triggered
        request stays in IRR while its line is high."""
        if self.auto_eoi:
            if self.rotate_on_auto_eoi:
                self.priority_add = (irq + 1) & 7
        else:
            self.isr |= 1 << irq
        if not self.elcr & (1 << irq):
            self.irr &= ~(1 << irq)
        self.pic_update_irq()

    # -- ports ------------------------------------------------------------------------

    def pic_ioport_write(self, addr: int, val: int) -> None:
        val &= 0xFF
        if addr == 0:
            if val & 0x10:  # ICW1
                self.pic_init_reset()
                self.init_state = 1
                self.init4 = val & 1
                self.single_mode = val & 2  # QEMU keeps the bit as is (0 or 2)
                # bit 3 (LTIM): QEMU logs "level sensitive irq not supported" and goes on
            elif val & 0x08:  # OCW3
                if val & 0x04:
                    self.poll = 1
                if val & 0x02:
                    self.read_reg_select = val & 1
                if val & 0x40:
                    self.special_mask = (val >> 5) & 1
            else:  # OCW2: bits 7:5 = R SL EOI
                cmd = val >> 5
                if cmd in (0, 4):  # rotate in auto-EOI mode: clear / set
                    self.rotate_on_auto_eoi = cmd >> 2
                elif cmd in (1, 5):  # non-specific EOI (5: and rotate)
                    priority = self.get_priority(self.isr)
                    if priority != 8:
                        irq = (priority + self.priority_add) & 7
                        self.isr &= ~(1 << irq)
                        if cmd == 5:
                            self.priority_add = (irq + 1) & 7
                        self.pic_update_irq()
                elif cmd == 3:  # specific EOI
                    self.isr &= ~(1 << (val & 7))
                    self.pic_update_irq()
                elif cmd == 6:  # set priority: IR(val&7) becomes the lowest
                    self.priority_add = (val + 1) & 7
                    self.pic_update_irq()
                elif cmd == 7:  # rotate on specific EOI
                    irq = val & 7
                    self.isr &= ~(1 << irq)
                    self.priority_add = (irq + 1) & 7
                    self.pic_update_irq()
                # cmd 2: no operation
        elif self.init_state == 0:  # OCW1
            self.imr = val
            self.pic_update_irq()
        elif self.init_state == 1:  # ICW2
            self.irq_base = val & 0xF8
            self.init_state = (3 if self.init4 else 0) if self.single_mode else 2
        elif self.init_state == 2:  # ICW3: the cascade wiring is fixed, the value unused
            self.init_state = 3 if self.init4 else 0
        else:  # ICW4
            self.special_fully_nested_mode = (val >> 4) & 1
            self.auto_eoi = (val >> 1) & 1
            self.init_state = 0

    def pic_ioport_read(self, addr: int) -> int:
        if self.poll:
            ret = self.pic_get_irq()
            if ret >= 0:
                self.pic_intack(ret)
                ret |= 0x80
            else:
                ret = 0
            self.poll = 0
            return ret
        if addr == 0:
            return self.isr if self.read_reg_select else self.irr
        return self.imr

    # Device interface (offset 0 command, 1 data).
    def read(self, offset: int, size: int) -> int:
        return split_read(self.pic_ioport_read, 2, offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        split_write(self.pic_ioport_write, 2, offset, size, value)

    # -- state ------------------------------------------------------------------------

    def state(self) -> dict[str, int]:
        return {name: int(getattr(self, name)) for name in PIC_STATE_FIELDS}

    def load_state(self, d: dict[str, Any]) -> None:
        """Restore the registers; the output is not re-driven (QEMU's i8259 has no
        post_load either: the CPU's pending-interrupt state is restored on its own)."""
        for name in PIC_STATE_FIELDS:
            setattr(self, name, int(d[name]) & 0xFF)

    def info(self) -> str:
        """One line as QEMU's `info pic` prints it."""
        return (f"pic{0 if self.master else 1}: irr={self.irr:02x} imr={self.imr:02x} "
                f"isr={self.isr:02x} hprio={self.priority_add} irq_base={self.irq_base:02x} "
                f"rr_sel={self.read_reg_select} elcr={self.elcr:02x} "
                f"fnm={self.special_fully_nested_mode}")


class Elcr:
    """Ports 0x4D0-0x4D1, the PIIX's edge/level control registers: offset 0 the master's
    ELCR, 1 the slave's; 1 = level-triggered. Bits outside the chip's elcr_mask read 0.
    Like QEMU's elcr_ioport_write, a write does not re-evaluate the inputs."""

    def __init__(self, master: Pic8259, slave: Pic8259):
        self.chips = (master, slave)

    def elcr_ioport_read(self, addr: int) -> int:
        return self.chips[addr].elcr

    def elcr_ioport_write(self, addr: int, val: int) -> None:
        chip = self.chips[addr]
        chip.elcr = val & chip.elcr_mask

    def read(self, offset: int, size: int) -> int:
        return split_read(self.elcr_ioport_read, 2, offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        split_write(self.elcr_ioport_write, 2, offset, size, value)


class PicPair:
    """The PC's two cascaded 8259As (QEMU's i8259_init). `on_output(level)` is called when
    the INTR line to the CPU changes level; `output` is its current level."""

    def __init__(self, on_output: Callable[[int], None] | None = None):
        self.on_output = on_output
        self.output = 0
        self.master = Pic8259(True, MASTER_ELCR_MASK, self._master_int_out)
        self.slave = Pic8259(False, SLAVE_ELCR_MASK, self._slave_int_out)
        self.elcr = Elcr(self.master, self.slave)

    def _slave_int_out(self, level: int) -> None:
        self.master.pic_set_irq(CASCADE_IRQ, level)

    def _master_int_out(self, level: int) -> None:
        if level != self.output:
            self.output = level
            if self.on_output is not None:
                self.on_output(level)

    def reset(self) -> None:
        """Device reset of both chips (pic_reset)."""
        self.slave.pic_reset()
        self.master.pic_reset()

    def set_irq(self, irq: int, level: int) -> None:
        """ISA IRQ 0-15 at `level` (0/1): 0-7 are master inputs, 8-15 slave inputs."""
        if not 0 <= irq < 16:
            raise ValueError(f"ISA IRQ must be 0-15, not {irq}")
        chip = self.master if irq < 8 else self.slave
        chip.pic_set_irq(irq & 7, 1 if level else 0)

    def read_irq(self) -> int:
        """The INTA cycle (QEMU pic_read_irq): the vector the CPU takes, with IRR/ISR
        updated; IR2 on the master takes the slave's answer."""
        master, slave = self.master, self.slave
        irq = master.pic_get_irq()
        if irq >= 0:
            if irq == CASCADE_IRQ:
                irq2 = slave.pic_get_irq()
                if irq2 >= 0:
                    slave.pic_intack(irq2)
                else:
                    irq2 = 7  # spurious IRQ on the slave
                intno = slave.irq_base + irq2
            else:
                intno = master.irq_base + irq
            master.pic_intack(irq)
        else:
            intno = master.irq_base + 7  # spurious IRQ on the master
        return intno & 0xFF

    def get_output(self) -> int:
        """What the master's INT pin shows now (QEMU pic_get_output)."""
        return self.master.pic_get_output()

    def state(self) -> dict[str, Any]:
        return {"master": self.master.state(), "slave": self.slave.state(),
                "output": self.output}

    def load_state(self, d: dict[str, Any]) -> None:
        self.master.load_state(d["master"])
        self.slave.load_state(d["slave"])
        self.output = 1 if d["output"] else 0

    def info(self) -> str:
        return self.master.info() + "\n" + self.slave.info()
