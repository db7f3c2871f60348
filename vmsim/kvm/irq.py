"""kvm.ko's in-kernel irqchip and interrupt routing (LNX arch/x86/kvm/irq.c, irq_comm.c,
i8259.c, i8254.c, lapic.c's glue, virt/kvm/kvm_main.c's kvm_vcpu_kick).

KVM_CREATE_IRQCHIP gives the VM a PIC pair (and, in Linux, an IOAPIC: vmsim does not model
the IOAPIC, so a GSI reaches the PIC only) and every vCPU created afterwards a local APIC.
KVM_CREATE_PIT2 adds the 8254, whose hrtimer raises GSI 0. The chips themselves are the
models in vmsim.hw.i8259 / vmsim.hw.i8254 / vmsim.kvm.lapic; this module wires them to the
vCPUs as kvm.ko does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vmsim.costs import NOMINAL_HZ

if TYPE_CHECKING:
    from vmsim.kvm.kvm_main import SimVcpu, SimVm

# irq_source_id of KVM_IRQ_LINE (include/linux/kvm_host.h); the PIT allocates its own one
# with kvm_request_irq_source_id, the first free after the two reserved: 2.
KVM_USERSPACE_IRQ_SOURCE_ID = 0
KVM_PIT_IRQ_SOURCE_ID = 2
NR_PIC_GSIS = 16

# What kvm_vcpu_kick sends a vCPU that is in guest mode (smp_send_reschedule), and the
# host's timer interrupt (arch/x86/include/asm/irq_vectors.h).
RESCHEDULE_VECTOR = 0xFD
LOCAL_TIMER_VECTOR = 0xEC
# The host kernel's tick (CONFIG_HZ=250, a common distribution choice): while a vCPU is
# in the guest its physical CPU takes this interrupt, and the guest exits for it.
HOST_HZ = 250
HOST_TICK = NOMINAL_HZ // HOST_HZ

# Where the local APIC page sits (MSR_IA32_APICBASE's default).
APIC_BASE = 0xFEE00000
APIC_SIZE = 0x1000

# PIO ports the in-kernel devices claim on KVM_PIO_BUS (kvm_pic_init, kvm_create_pit).
PIC_PORTS = ((0x20, 2, "master"), (0xA0, 2, "slave"), (0x4D0, 2, "elcr"))
PIT_PORTS = (0x40, 4)


class KvmIoBus:
    """kvm_io_bus for KVM_PIO_BUS: port ranges served in the kernel, no exit to userspace."""

    def __init__(self) -> None:
        self.ranges: list[tuple[int, int, Any, str]] = []

    def register(self, base: int, length: int, dev: Any, name: str) -> None:
        self.ranges.append((base, length, dev, name))

    def find(self, port: int) -> tuple[int, Any, str] | None:
        for base, length, dev, name in self.ranges:
            if base <= port < base + length:
                return base, dev, name
        return None

    def read(self, port: int, size: int) -> int | None:
        """kvm_io_bus_read: the value, or None when no in-kernel device has the port."""
        hit = self.find(port)
        if hit is None:
            return None
        base, dev, _ = hit
        value = 0
        for i in range(size):  # the PIC, ELCR and PIT registers are all byte-wide
            value |= (dev.read(port + i - base, 1) & 0xFF) << (8 * i)
        return value

    def write(self, port: int, size: int, value: int) -> bool:
        hit = self.find(port)
        if hit is None:
            return False
        base, dev, _ = hit
        for i in range(size):
            dev.write(port + i - base, 1, (value >> (8 * i)) & 0xFF)
        return True


class _ElcrPort:
    """The ELCR pair as a bus device at 0x4D0 (offset 0 master, 1 slave)."""

    def __init__(self, elcr: Any):
        self.elcr = elcr

    def read(self, offset: int, size: int) -> int:
        return self.elcr.read(offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        self.elcr.write(offset, size, value)


class KvmIrqchip:
    """What KVM_CREATE_IRQCHIP (and KVM_CREATE_PIT2) made for one VM."""

    def __init__(self, vm: SimVm):
        from vmsim.hw.i8259 import PicPair

        self.vm = vm
        self.pic = PicPair(on_output=self._pic_output)
        self.pit = None
        self.pio = KvmIoBus()
        self.pio.register(0x20, 2, self.pic.master, "kvm-pic master")
        self.pio.register(0xA0, 2, self.pic.slave, "kvm-pic slave")
        self.pio.register(0x4D0, 2, _ElcrPort(self.pic.elcr), "kvm-elcr")
        # __kvm_irq_line_state: a GSI's level is the OR over the sources driving it.
        self.irq_states = [0] * NR_PIC_GSIS

    def create_pit(self) -> None:
        from vmsim.hw.i8254 import Pit8254

        clock = self.vm.kvm.clock
        self.pit = Pit8254(lambda: clock.now,
                           lambda cb: clock.new_timer("kvm-pit hrtimer", cb),
                           lambda level: kvm_set_irq(self.vm, KVM_PIT_IRQ_SOURCE_ID, 0, level),
                           irq_style="kvm")
        self.pio.register(PIT_PORTS[0], PIT_PORTS[1], self.pit, "kvm-pit")

    def _pic_output(self, level: int) -> None:
        """pic_unlock: the PIC's INTR rose; the BSP takes it if its APIC accepts ExtINT."""
        if not level:
            return
        for v in self.vm.vcpus:
            if v.lapic is not None and v.lapic.accept_pic_intr():
                kvm_make_request_event(v)
                kvm_vcpu_kick(v)
                break


def kvm_set_irq(vm: SimVm, irq_source_id: int, gsi: int, level: int) -> None:
    """kvm_set_irq -> kvm_set_pic_irq (irq_comm.c): the GSI's level from this source."""
    chip = vm.irqchip
    ev = vm.events
    if ev is not None and ev.build("kvm_set_irq"):
        ev.emit("kvm_set_irq", "kvm", gsi=gsi, level=level, irq_source_id=irq_source_id)
    if chip is None or not 0 <= gsi < NR_PIC_GSIS:
        return
    mask = 1 << irq_source_id
    state = chip.irq_states[gsi]
    state = state | mask if level else state & ~mask
    chip.irq_states[gsi] = state
    pic = chip.pic
    if ev is not None and ev.build("kvm_pic_set_irq"):
        c = pic.master if gsi < 8 else pic.slave
        ev.emit("kvm_pic_set_irq", "kvm", chip=gsi >> 3, pin=gsi & 7, elcr=c.elcr, imr=c.imr,
                coalesced=False)
    pic.set_irq(gsi, 1 if state else 0)


def kvm_make_request_event(v: SimVcpu) -> None:
    v.requests.add("event")  # KVM_REQ_EVENT


def kvm_vcpu_kick(v: SimVcpu, vector: int = RESCHEDULE_VECTOR) -> None:
    """kvm_vcpu_kick: a vCPU in the guest gets an IPI (it exits, reason 1); one blocked in
    kvm_vcpu_block is woken (its wait looks at the new state); one in the kernel or in
    userspace sees the request at its next entry."""
    how = "none"
    if v.mode == "in_guest":
        if v.host_irq is None:
            v.host_irq = vector
        how = "ipi"
    elif v.mode == "blocked":
        how = "wake"
    ev = v.events
    if ev is not None and ev.build("kvm_vcpu_kick"):
        ev.emit("kvm_vcpu_kick", v.name, vcpu_id=v.vcpu_id, mode=v.mode, how=how)


# -- what a vCPU has pending (irq.c) -------------------------------------------------------------

def kvm_cpu_has_extint(v: SimVcpu) -> bool:
    """An interrupt from the PIC (in-kernel, if this vCPU's APIC takes ExtINT) or one
    userspace queued with KVM_INTERRUPT (no in-kernel irqchip)."""
    chip = v.vm.irqchip
    if chip is None:
        return v.pending_external_vector != -1
    if v.lapic is None:
        return False
    # (the PIC's output first: nothing to ask the APIC about while it is low)
    return bool(chip.pic.output) and v.lapic.accept_pic_intr()


def kvm_cpu_get_extint(v: SimVcpu) -> int:
    chip = v.vm.irqchip
    if chip is None:
        vector, v.pending_external_vector = v.pending_external_vector, -1
        return vector
    return chip.pic.read_irq()  # kvm_pic_read_irq: the INTA cycle


def kvm_cpu_has_interrupt(v: SimVcpu) -> bool:
    if kvm_cpu_has_extint(v):
        return True
    return v.lapic is not None and v.lapic.has_interrupt() != -1


def kvm_cpu_get_interrupt(v: SimVcpu) -> int:
    """kvm_cpu_get_interrupt: ExtINT first (the PIC), then the APIC's highest IRR."""
    if kvm_cpu_has_extint(v):
        return kvm_cpu_get_extint(v)
    return v.lapic.get_interrupt() if v.lapic is not None else -1
