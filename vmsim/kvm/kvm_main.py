"""The simulated kvm.ko's ioctl surface (LNX virt/kvm/kvm_main.c): /dev/kvm, VM and vCPU.

`SimKvm`, `SimVm` and `SimVcpu` implement the same protocol as the host backend
(vmsim.kvm.api). Behind them: `vmsim.kvm.x86` (the run loop), `vmsim.kvm.vmx` (VMCS
setup and the exit-handler table) and `vmsim.kvm.emulate` (the instruction emulator).
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
from collections.abc import Callable, Generator
from typing import Any

from vmsim.events import EventStream
from vmsim.hw import exceptions as X
from vmsim.hw.cpu import Cpu, Intercept, InterceptExit
from vmsim.hw.exceptions import CpuException
from vmsim.hw.hostmem import HostPages
from vmsim.hw.memory import PAGE_SIZE, PhysicalMemory
from vmsim.hw.mmu import PFEC_W, WRITE
from vmsim.hw.vmcs import ExitReason, F, Vmcs
from vmsim.hw.vmx import Vmx
from vmsim.kvm import api
from vmsim.kvm import irq as irq_mod  # (module level: KVM_INTERRUPT and kicks run per interrupt)
from vmsim.kvm import vmx as kvm_vmx  # (at module level: guest_cr0 runs at every CR exit)
from vmsim.kvm.api import KVM_API_VERSION, VCPU_MMAP_SIZE, KvmRegs, KvmRun, KvmSregs
from vmsim.state import fields_state, from_plain, load_fields, to_plain


class KvmError(OSError):
    """An ioctl failed: errno and a one-line reason, as the host's KVM would say."""


class GuestMemoryTrap:
    """Guest-physical space that no memory slot backs (MMIO, or nothing at all).

    With EPT the CPU finds no mapping there and exits (EPT violation); while kvm.ko's
    emulator replays an instruction it instead serves the access (vmsim.kvm.emulate).
    """

    def __init__(self) -> None:
        self.emulator: Any = None  # set while an instruction is being emulated

    def read(self, gpa: int, size: int) -> int:
        if self.emulator is not None:
            return self.emulator.mmio_read(gpa, size)
        raise InterceptExit(Intercept("ept_violation", 0, extra={"gpa": gpa, "write": False,
                                                                 "size": size}))

    def write(self, gpa: int, size: int, value: int) -> None:
        if self.emulator is not None:
            self.emulator.mmio_write(gpa, size, value)
            return
        raise InterceptExit(Intercept("ept_violation", 0, extra={"gpa": gpa, "write": True,
                                                                 "size": size}))


class GuestTables:
    """The guest's paging structures as kvm.ko's software walker reads them: by gfn,
    through the memory slots (kvm_vcpu_gfn_to_hva_prot), never through a device.

    A table in a gfn no slot backs (the VGA hole, above RAM) cannot be read, and the walk
    fails as if the entry were not present: LNX arch/x86/kvm/mmu/paging_tmpl.h
    FNAME(walk_addr_generic) `if (unlikely(kvm_is_error_hva(host_addr))) goto error;`,
    where the fault is a #PF whose error code has only the access bits (W, U; I/D with NX
    or SMEP, which vmsim lacks) and whose address is the linear one being translated.
    `walker` is the Mmu whose walk reads through this (it knows that address and access).
    """

    def __init__(self, mem: PhysicalMemory, walker: Any):
        self.mem = mem
        self.walker = walker

    def _check(self, gpa: int) -> None:
        if not self.mem.is_ram(gpa):
            w = self.walker
            raise CpuException(X.PF, PFEC_W if w._access == WRITE else 0, cr2=w._la)

    def read(self, gpa: int, size: int) -> int:
        self._check(gpa)
        return self.mem.read(gpa, size)

    def write(self, gpa: int, size: int, value: int) -> None:
        self._check(gpa)
        self.mem.write(gpa, size, value)


class SimVm:
    def __init__(self, kvm: SimKvm):
        self.kvm = kvm
        self.events = kvm.events
        self.slots: dict[int, tuple[int, int, memoryview, int]] = {}  # slot: (gpa, size, mv, hva)
        self.mem: PhysicalMemory | None = None
        self.trap = GuestMemoryTrap()
        self.vcpus: list[SimVcpu] = []
        self.tss_addr = 0
        self.host = HostPages()  # host memory kvm.ko allocates its tables from
        self.paging = kvm.paging  # "ept" (the TDP MMU) or "shadow" (the shadow MMU)
        self.tdp = None
        self.shadow = None
        self.irqchip = None  # KVM_CREATE_IRQCHIP's KvmIrqchip (vmsim.kvm.irq)
        self.apic_map = None  # kvm_apic_map: the vCPUs' APICs, for IPIs
        self.ioeventfds: list = []  # KVM_IOEVENTFD's (vmsim.kvm.eventfd.Ioeventfd)
        self.irqfds: list = []  # KVM_IRQFD's (vmsim.kvm.eventfd.Irqfd)
        # kvm_coalesced_mmio_init: the ring page, and the zones (vmsim.kvm.coalesced_mmio)
        self.coalesced_ring = api.CoalescedMmioRing(bytearray(PAGE_SIZE))
        self.coalesced_zones: list = []

    # -- state as plain data (issue 12) ----------------------------------------------------
    def state(self) -> dict[str, Any]:
        """struct kvm as plain data: the irqchip (PIC, PIT, GSI levels), the eventfds'
        counts, and kvm.ko's page tables: the host pages they live in and the TDP or
        shadow MMU's bookkeeping. The tables are kept, not rebuilt: a rebuilt MMU would
        fault its way back in with VM exits the saved run never made, and a resumed run
        must go on exactly (a migration to another host rebuilds them instead).
        The vCPUs' state is theirs (SimVcpu.state)."""
        host = self.host
        out: dict[str, Any] = {
            "tss_addr": self.tss_addr,
            "host": {"pages": [[hpa, bytes(page)] for hpa, page in host.pages.items()],
                     "next": host._next, "free": list(host._free)},
            "tdp": None if self.tdp is None else fields_state(self.tdp),
            "shadow": None,
            "irqchip": None,
            "ioeventfds": [e.state() for e in self.ioeventfds],
            "irqfds": [e.state() for e in self.irqfds],
            "coalesced": {"zones": [z.state() for z in self.coalesced_zones],
                          "ring": bytes(self.coalesced_ring.page)},
        }
        sh = self.shadow
        if sh is not None:
            if {id(p) for p in sh.by_spt.values()} != {id(p) for p in sh.pages.values()}:
                raise ValueError("shadow MMU: a page is in by_spt or pages but not both")
            out["shadow"] = {"pages": to_plain(sh.pages), "by_spt": list(sh.by_spt),
                             "fields": fields_state(sh, skip=("pages", "by_spt"))}
        chip = self.irqchip
        if chip is not None:
            out["irqchip"] = {"pic": chip.pic.state(), "irq_states": list(chip.irq_states),
                              "pit": None if chip.pit is None else chip.pit.state()}
        return out

    def load_state(self, d: dict[str, Any]) -> None:
        """Put back state(); the eventfds must have been assigned again first (by QEMU's
        side, which owns them), in the same order."""
        self.tss_addr = d["tss_addr"]
        host, h = self.host, d["host"]
        host.pages.clear()
        host.pages.update((hpa, bytearray(page)) for hpa, page in h["pages"])
        host._next, host._free = h["next"], list(h["free"])
        if d["tdp"] is not None:
            load_fields(self.tdp, d["tdp"])
        if d["shadow"] is not None:
            sh, sd = self.shadow, d["shadow"]
            sh.pages = {p.key: p for p in from_plain(sd["pages"]).values()}
            by_spt = {p.spt: p for p in sh.pages.values()}
            sh.by_spt = {spt: by_spt[spt] for spt in sd["by_spt"]}
            load_fields(sh, sd["fields"])
        if d["irqchip"] is not None:
            chip, cd = self.irqchip, d["irqchip"]
            chip.pic.load_state(cd["pic"])
            chip.irq_states[:] = cd["irq_states"]
            if cd["pit"] is not None:
                chip.pit.load_state(cd["pit"])
        co = d.get("coalesced")  # (a state saved before coalesced MMIO existed has none)
        if co is not None:
            from vmsim.kvm.coalesced_mmio import CoalescedZone

            self.coalesced_zones = [CoalescedZone(*z) for z in co["zones"]]
            self.coalesced_ring.page[:] = co["ring"]
        for kind, saved in (("ioeventfds", d["ioeventfds"]), ("irqfds", d["irqfds"])):
            fds = getattr(self, kind)
            if [e.state()["fd"] for e in fds] != [e["fd"] for e in saved]:
                raise ValueError(f"{kind}: assigned {len(fds)}, the state has {len(saved)}")
            for e, sd in zip(fds, saved, strict=True):
                if kind == "ioeventfds":
                    e.signals = sd["signals"]
                else:
                    e.injections = sd["injections"]

    # -- the in-kernel irqchip (LNX arch/x86/kvm/x86.c kvm_arch_vm_ioctl) ---------------------
    def create_irqchip(self) -> None:
        """KVM_CREATE_IRQCHIP: the PIC pair now, a local APIC with every vCPU created after."""
        from vmsim.kvm.irq import KvmIrqchip

        if self.irqchip is not None:
            raise KvmError(errno.EEXIST, "KVM_CREATE_IRQCHIP: the VM already has an irqchip")
        if self.vcpus:
            raise KvmError(errno.EINVAL, "KVM_CREATE_IRQCHIP: vCPUs already exist")
        self.irqchip = KvmIrqchip(self)

    def create_pit2(self, flags: int = 0) -> None:
        """KVM_CREATE_PIT2: the 8254 in the kernel, its hrtimer raising GSI 0."""
        if self.irqchip is None:
            raise KvmError(errno.ENOENT, "KVM_CREATE_PIT2 needs KVM_CREATE_IRQCHIP first")
        if self.irqchip.pit is not None:
            raise KvmError(errno.EEXIST, "KVM_CREATE_PIT2: the VM already has a PIT")
        self.irqchip.create_pit()

    def irq_line(self, irq: int, level: int) -> None:
        """KVM_IRQ_LINE: drive a GSI from userspace (needs the in-kernel irqchip)."""
        if self.irqchip is None:
            raise KvmError(errno.ENXIO, "KVM_IRQ_LINE needs KVM_CREATE_IRQCHIP")
        irq_mod.kvm_set_irq(self, irq_mod.KVM_USERSPACE_IRQ_SOURCE_ID, irq, 1 if level else 0)

    def get_irqchip(self, chip_id: int) -> dict[str, int]:
        """KVM_GET_IRQCHIP for a PIC: its struct kvm_pic_state fields."""
        from vmsim.kvm import x86_state

        return x86_state.kvm_vm_ioctl_get_irqchip(self, chip_id)

    def set_irqchip(self, chip_id: int, pic: dict[str, int]) -> None:
        """KVM_SET_IRQCHIP for a PIC."""
        from vmsim.kvm import x86_state

        x86_state.kvm_vm_ioctl_set_irqchip(self, chip_id, pic)

    def get_pit2(self) -> tuple[list[dict[str, int]], int]:
        """KVM_GET_PIT2: the three channels' struct kvm_pit_channel_state, and the flags."""
        from vmsim.kvm import x86_state

        return x86_state.kvm_vm_ioctl_get_pit2(self)

    def set_pit2(self, channels: list[dict[str, int]], flags: int = 0) -> None:
        """KVM_SET_PIT2."""
        from vmsim.kvm import x86_state

        x86_state.kvm_vm_ioctl_set_pit2(self, channels, flags)

    # -- eventfds (LNX virt/kvm/eventfd.c, vmsim.kvm.eventfd) -------------------------------
    def ioeventfd(self, notifier: api.EventNotifier, addr: int, length: int,
                  datamatch: int | None = None, flags: int = 0) -> None:
        """KVM_IOEVENTFD: a matching guest write signals `notifier`, with no exit."""
        from vmsim.kvm.eventfd import kvm_ioeventfd

        kvm_ioeventfd(self, notifier, addr, length, datamatch, flags)

    def irqfd(self, notifier: api.EventNotifier, gsi: int, flags: int = 0) -> None:
        """KVM_IRQFD: a signal on `notifier` injects GSI `gsi` (an edge)."""
        from vmsim.kvm.eventfd import kvm_irqfd

        kvm_irqfd(self, notifier, gsi, flags)

    def register_coalesced_mmio(self, addr: int, size: int, pio: int = 0) -> None:
        """KVM_REGISTER_COALESCED_MMIO: writes inside the zone queue in the ring."""
        from vmsim.kvm.coalesced_mmio import kvm_vm_ioctl_register_coalesced_mmio

        kvm_vm_ioctl_register_coalesced_mmio(self, addr, size, pio)

    def unregister_coalesced_mmio(self, addr: int, size: int, pio: int = 0) -> None:
        """KVM_UNREGISTER_COALESCED_MMIO."""
        from vmsim.kvm.coalesced_mmio import kvm_vm_ioctl_unregister_coalesced_mmio

        kvm_vm_ioctl_unregister_coalesced_mmio(self, addr, size, pio)

    def check_extension(self, cap: int) -> int:
        return self.kvm.check_extension(cap)

    def set_user_memory_region(self, slot: int, flags: int, guest_phys_addr: int,
                               memory_size: int, userspace: memoryview) -> None:
        if guest_phys_addr % PAGE_SIZE or memory_size % PAGE_SIZE:
            raise KvmError(errno.EINVAL, "KVM_SET_USER_MEMORY_REGION: unaligned region")
        if self.vcpus:
            raise KvmError(errno.EBUSY, "vmsim: memory slots must be set before KVM_CREATE_VCPU")
        hva = ctypes.addressof(ctypes.c_char.from_buffer(userspace))
        self.slots[slot] = (guest_phys_addr, memory_size, userspace, hva)
        self._build_guest_memory()

    def _build_guest_memory(self) -> None:
        """Guest-physical memory from the slots: RAM where a slot is, the trap elsewhere.

        vmsim simplification: the slots must come from one host mapping laid out as the
        guest sees it (hva - gpa the same for all), which is how QEMU maps its RAM.
        """
        slots = sorted(self.slots.values())
        offsets = {hva - gpa for gpa, _, _, hva in slots}
        if len(offsets) != 1:
            raise KvmError(errno.EINVAL, "vmsim: memory slots must share one host mapping")
        base = slots[0]
        end = max(gpa + size for gpa, size, _, _ in slots)
        holes = []
        at = 0
        for gpa, size, _, _ in slots:
            if gpa > at:
                holes.append((at, gpa))
            at = gpa + size
        backing = base[2].obj if base[0] == 0 else None
        if backing is None:
            raise KvmError(errno.EINVAL, "vmsim: a memory slot must start at guest-physical 0")
        self.mem = PhysicalMemory(end, tuple(holes), buffer=backing)
        # Holes between slots and everything above the last one: no RAM, so an access
        # leaves the guest (or, while emulating, is served by the emulator).
        top = 1 << 32
        for start, stop in [*holes, (end, top)]:
            if stop > start:
                self.mem.add_mmio(start, stop - start, _Offset(self.trap, start), "unbacked")

    def set_tss_addr(self, addr: int = 0xFFFBD000) -> None:
        self.tss_addr = addr  # unused by an unrestricted guest; accepted as on Intel hosts

    def create_vcpu(self, vcpu_id: int) -> SimVcpu:
        if self.mem is None:
            raise KvmError(errno.EINVAL, "vmsim: set a memory region before KVM_CREATE_VCPU")
        if self.paging == "ept" and self.tdp is None:
            from vmsim.kvm.tdp_mmu import TdpMmu

            self.tdp = TdpMmu(self)
        if self.paging == "shadow" and self.shadow is None:
            from vmsim.kvm.shadow_mmu import ShadowMmu

            self.shadow = ShadowMmu(self)
        if any(o.vcpu_id == vcpu_id for o in self.vcpus):
            raise KvmError(errno.EEXIST, f"KVM_CREATE_VCPU: vCPU {vcpu_id} exists")
        if len(self.vcpus) >= KVM_MAX_VCPUS:
            raise KvmError(errno.EINVAL, f"KVM_CREATE_VCPU: at most {KVM_MAX_VCPUS} vCPUs")
        v = SimVcpu(self, vcpu_id)
        self.vcpus.append(v)
        if self.irqchip is not None:
            self._create_lapic(v)
            # kvm_arch_vcpu_create: with the APIC in the kernel, an AP waits for INIT-SIPI
            # (KVM_MP_STATE_UNINITIALIZED); only the BSP (vCPU 0) is runnable.
            if vcpu_id != 0:
                v.mp_state = "uninitialized"
        return v

    def _create_lapic(self, v: SimVcpu) -> None:
        """kvm_create_lapic, and the VM's APIC map that IPIs are delivered through."""
        from vmsim.kvm.irq import kvm_vcpu_kick
        from vmsim.kvm.lapic import ApicMap, KvmLapic

        clock = self.kvm.clock
        v.lapic = KvmLapic(v.vcpu_id, lambda: clock.now,
                           lambda cb: clock.new_timer(f"{v.name} apic timer", cb),
                           lambda: (v.requests.add("event"), kvm_vcpu_kick(v)),
                           events=self.events, source=v.name)
        self.apic_map = ApicMap([o.lapic for o in self.vcpus if o.lapic is not None])
        for o in self.vcpus:
            if o.lapic is not None:
                o.lapic.apic_map = self.apic_map


class _Offset:
    """Give the trap absolute guest-physical addresses (the bus passes offsets)."""

    def __init__(self, trap: GuestMemoryTrap, base: int):
        self.trap, self.base = trap, base

    def read(self, offset: int, size: int) -> int:
        return self.trap.read(self.base + offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        self.trap.write(self.base + offset, size, value)


# KVM_MP_STATE_* in order (include/uapi/linux/kvm.h): the names SimVcpu.mp_state uses.
_MP_STATES = ("runnable", "uninitialized", "init_received", "halted", "sipi_received")
KVM_MAX_VCPUS = 8  # vmsim's limit (--smp 1..8); Linux's KVM_MAX_VCPUS is far larger


def complete_userspace_io_table() -> dict[str, Callable[[SimVcpu], int]]:
    """The functions vcpu->arch.complete_userspace_io can name, by name: a snapshot
    saves the name, never the callable."""
    from vmsim.kvm import emulate, x86

    fns = (x86.complete_fast_pio_in, emulate.complete_emulated_mmio_read,
           emulate.complete_emulated_pio_in, emulate.complete_emulated_mmio_write)
    return {f.__name__: f for f in fns}


class SimVcpu:
    """struct kvm_vcpu with its VMX part (struct vcpu_vmx): a CPU, a VMCS, kvm_run."""

    BATCH = 20_000  # guest instructions between yields to the session (x86.BATCH_MAX)

    def __init__(self, vm: SimVm, vcpu_id: int):
        self.vm = vm
        self.vcpu_id = vcpu_id
        self.name = f"vcpu{vcpu_id}"
        self.events: EventStream | None = vm.events
        self.cpu = Cpu(vm.mem, _NoPorts(), vm.events, self.name)
        self.vmx = Vmx(self.cpu, vm.events, self.name, host=vm.host)
        self.vmcs = Vmcs()
        self.kvm_run = KvmRun(bytearray(VCPU_MMAP_SIZE))
        self.cpuid_entries: dict[tuple[int, int], tuple[int, int, int, int]] = {}
        self.complete_userspace_io: Callable[[SimVcpu], int] | None = None
        self.requests: set[str] = set()
        self.reinjected = 0  # the event vmx_complete_interrupts queued again (not traced)
        self.mmio_fragments: list[tuple[int, int, bytes]] = []
        self.emulator: Any = None
        self.fail_entry_detail = ""
        # The last emulation failure (emulate._emulation_failed): (EIP, the instruction's
        # text or None where it could not be fetched, Linux's reason to refuse it).
        self.emulation_failure: tuple[int, str | None, str] | None = None
        self.instruction_limit: int | None = None
        self.limit_reached = False
        # vmsim's no-progress watchdog (x86.kvm_watch_progress): why it stopped the vCPU.
        self.stuck = ""
        self.progress_mark = (0, 0)  # (instructions retired, ECX) when it last moved
        self.idle_exits = self.idle_deliveries = 0
        self.stat = {"exits": 0, "halt_exits": 0, "io_exits": 0, "mmio_exits": 0,
                     "signal_exits": 0, "insn_emulation": 0, "irq_exits": 0,
                     "irq_window_exits": 0, "irq_injections": 0, "halt_wakeup": 0}
        # Interrupts (arch/x86/kvm): the local APIC when the irqchip is in the kernel, the
        # vector userspace queued with KVM_INTERRUPT otherwise, the vCPU's mode as
        # kvm_vcpu_kick sees it, the host interrupt that will make it exit, and the
        # multiprocessing state (KVM_MP_STATE_*).
        self.lapic: Any = None
        self.pending_external_vector = -1
        self.mode = "outside"  # OUTSIDE_GUEST_MODE, "in_guest", "blocked" (kvm_vcpu_block)
        self.host_irq: int | None = None  # a host interrupt vector due while in the guest
        self.next_host_tick = 0
        self.mp_state = "runnable"  # "halted", "init_received"
        # A signal sent to the vCPU thread (QEMU's SIG_IPI) that KVM_RUN has not yet seen
        # (signal_pending(current)); in_kvm_run: the thread is inside the ioctl.
        self.signal_pending = False
        self.in_kvm_run = False
        # CR0/CR4 bits the guest owns (no exit on writes; read from the hardware register).
        self.cr0_guest_owned = kvm_vmx.KVM_CR0_GUEST_OWNED
        self.cr4_guest_owned = kvm_vmx.KVM_CR4_GUEST_OWNED
        self.arch_cr3 = 0  # the guest's own CR3 under shadow paging (vcpu->arch.cr3)
        self.handler_cost = 0  # virtual cycles the current exit's handling adds
        # Where KVM_RUN stands, as plain data for snapshots (vmsim.vmm.vm positions):
        # run_point "entry" (just entered), "batch" (between two batches of guest
        # instructions), "exit" (a VM exit taken, not yet handled); block_start: when
        # kvm_vcpu_block began (its wakeup tracepoint reports the time blocked).
        self.run_point = "exit"
        self.block_start = 0
        # What is left of the batch the guest is running (x86.vcpu_enter_guest): a
        # sub-batch that stopped short of it (BATCH) resumes at once, never rescheduled.
        self.batch_left = 0
        kvm_vmx.vmx_vcpu_setup(self)

    def explain_stop(self, exit_reason: int) -> api.KvmStop | None:
        """Why kvm.ko ended the VM, where QEMU's own words would only name the exit: a
        KVM_EXIT_INTERNAL_ERROR is KVM's failure, not the guest's shutdown, and takes the
        status the host's KVM gives it (70; vmsim.hostkvm.explain words those)."""
        if exit_reason != api.KVM_EXIT_INTERNAL_ERROR:
            return None
        suberror, data = self.kvm_run.internal()
        what = api.internal_error_words(suberror)
        failure = self.emulation_failure
        if suberror == api.KVM_INTERNAL_ERROR_EMULATION and failure is not None:
            eip, text, why = failure
            if text is None:
                # Upstream KVM too: x86_decode_insn fetches from RAM only.
                words = (f"kvm.ko could not fetch a guest instruction at eip {eip:#010x}: no "
                         f"RAM is there ({what}); KVM runs guest code from RAM only")
            else:
                words = (f"kvm.ko could not emulate the guest instruction `{text}` at eip "
                         f"{eip:#010x} ({what})" + (f": {why}" if why else ""))
        elif suberror == api.KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON and data:
            reason = data[0] & 0xFFFF
            name = ExitReason(reason).name if reason in ExitReason._value2member_map_ else "?"
            words = (f"kvm.ko has no handler for VM exit reason {reason} ({name}) at eip "
                     f"{self.vmcs.read(F.GUEST_RIP):#010x} ({what})")
        else:
            words = f"kvm.ko stopped the guest at eip {self.vmcs.read(F.GUEST_RIP):#010x} ({what})"
        return api.KvmStop(words, api.EXIT_KVM_FAILED)

    # -- state as plain data (issue 12) ----------------------------------------------------
    def state(self) -> dict[str, Any]:
        """struct kvm_vcpu and vcpu_vmx as plain data: the CPU, the VMCS, kvm_run, the
        local APIC, what the VMX hardware keeps between entries, and kvm.ko's own fields.
        A completion callback is saved by name (complete_userspace_io_table). Only taken between
        two instructions: an emulation in flight (the emulator, MMIO fragments) is not
        state a snapshot can hold (VirtualMachine.at_rebuildable_point checks)."""
        if self.emulator is not None or self.mmio_fragments:
            raise ValueError(f"{self.name}: an instruction emulation is in flight")
        vmx, cui = self.vmx, self.complete_userspace_io
        ept = self.cpu.mmu.ept
        return {
            "cpu": self.cpu.state(),
            "vmcs": self.vmcs.state(),
            "vmx": {
                "has_vmcs": vmx.vmcs is not None,
                "guest_mode": vmx.guest_mode,
                "entry_failure": vmx.entry_failure,
                "entry_fail_valid": vmx.entry_fail_valid,
                "entry_exit": to_plain(vmx._entry_exit),
                "last_exit": None if vmx.last_exit is None else to_plain(
                    dataclasses.asdict(vmx.last_exit)),
                "host_loaded": to_plain(vmx._host_loaded),
                "host_checked": to_plain(vmx._host_checked),
                "ept": None if ept is None else {"refs": ept.refs, "software": ept.software},
            },
            "kvm_run": bytes(self.kvm_run.buf),
            "lapic": None if self.lapic is None else self.lapic.state(),
            "complete_userspace_io": None if cui is None else cui.__name__,
            "fields": fields_state(self, skip=("vcpu_id", "name")),
        }

    def load_state(self, d: dict[str, Any]) -> None:
        from vmsim.hw.vmx import ExitInfo
        self.vmcs.load_state(d["vmcs"])
        x, vmx, cpu = d["vmx"], self.vmx, self.cpu
        vmx.vmcs = self.vmcs if x["has_vmcs"] else None
        vmx.guest_mode = x["guest_mode"]
        vmx.entry_failure, vmx.entry_fail_valid = x["entry_failure"], x["entry_fail_valid"]
        vmx._entry_exit = from_plain(x["entry_exit"])
        vmx.last_exit = None if x["last_exit"] is None else ExitInfo(**from_plain(x["last_exit"]))
        vmx._host_loaded = from_plain(x["host_loaded"])
        vmx._host_checked = from_plain(x["host_checked"])
        vmx._host_cpu = None  # built from _host_loaded when looked at
        vmx._host_values = None  # (what _host_loaded was built from: built anew next exit)
        if x["ept"] is not None:
            ept = vmx.ept_in_use(self.vmcs)
            ept.refs, ept.software = x["ept"]["refs"], x["ept"]["software"]
            cpu.set_second_stage(ept)
        else:
            cpu.set_second_stage(None)
        # In VMX non-root operation the CPU exits to vmx.exit_decision (set on entry).
        cpu.intercept = vmx.exit_decision if vmx.guest_mode else None
        cpu.load_state(d["cpu"])
        self.kvm_run.buf[:] = d["kvm_run"]
        if self.lapic is not None:
            self.lapic.load_state(d["lapic"])
        name = d["complete_userspace_io"]
        self.complete_userspace_io = None if name is None else complete_userspace_io_table()[name]
        load_fields(self, d["fields"])

    # -- the guest's view of its control registers (what kvm_read_cr* return) ------------------
    @property
    def guest_cr0(self) -> int:
        return kvm_vmx.kvm_read_cr0(self)

    @property
    def guest_cr4(self) -> int:
        return kvm_vmx.kvm_read_cr4(self)

    @property
    def guest_cr3(self) -> int:
        return self.vmcs.read(F.GUEST_CR3) if self.vm.shadow is None else self.arch_cr3

    @guest_cr3.setter
    def guest_cr3(self, value: int) -> None:
        self.arch_cr3 = value & 0xFFFFFFFF

    # -- register ioctls (LNX arch/x86/kvm/x86.c kvm_arch_vcpu_ioctl_{get,set}_{regs,sregs}) --
    def mapping_page(self, offset: int):
        """Page `offset` of this vCPU's mapping (kvm_vcpu_fault): the ring page is the VM's,
        shared by every vCPU's mapping."""
        if offset == api.KVM_COALESCED_MMIO_PAGE_OFFSET:
            return self.vm.coalesced_ring.page
        if not 0 <= offset < VCPU_MMAP_SIZE // PAGE_SIZE:
            raise KvmError(errno.EINVAL, f"the vCPU mapping has no page {offset}")
        return memoryview(self.kvm_run.buf)[offset * PAGE_SIZE:(offset + 1) * PAGE_SIZE]

    def get_regs(self) -> KvmRegs:
        return kvm_vmx.get_regs(self)

    def set_regs(self, regs: KvmRegs) -> None:
        kvm_vmx.set_regs(self, regs)

    def get_sregs(self) -> KvmSregs:
        return kvm_vmx.get_sregs(self)

    def set_sregs(self, sregs: KvmSregs) -> None:
        kvm_vmx.set_sregs(self, sregs)

    def set_cpuid2(self, entries: list[tuple[int, int, int, int, int, int]]) -> None:
        self.cpuid_entries = {(fn, idx): (a, b, c, d) for fn, idx, a, b, c, d in entries}

    def interrupt(self, vector: int) -> None:
        """KVM_INTERRUPT: queue an external interrupt (only without an in-kernel irqchip)."""
        if self.vm.irqchip is not None:
            raise KvmError(errno.ENXIO, "KVM_INTERRUPT: the in-kernel irqchip delivers interrupts")
        if not 0 <= vector < 256:
            raise KvmError(errno.EINVAL, f"KVM_INTERRUPT: vector {vector} out of range")
        if self.pending_external_vector != -1:
            raise KvmError(errno.EEXIST, "KVM_INTERRUPT: an interrupt is already queued")
        self.pending_external_vector = vector
        irq_mod.kvm_make_request_event(self)

    def get_mp_state(self) -> int:
        """KVM_GET_MP_STATE."""
        return _MP_STATES.index(self.mp_state)

    def set_mp_state(self, mp_state: int) -> None:
        """KVM_SET_MP_STATE (vmsim: RUNNABLE, HALTED, UNINITIALIZED, INIT_RECEIVED)."""
        if not 0 <= mp_state < len(_MP_STATES) or _MP_STATES[mp_state] == "sipi_received":
            raise KvmError(errno.EINVAL, f"KVM_SET_MP_STATE: state {mp_state} not supported")
        if mp_state != api.KVM_MP_STATE_RUNNABLE and self.lapic is None:
            raise KvmError(errno.EINVAL, "KVM_SET_MP_STATE: needs the in-kernel irqchip")
        self.mp_state = _MP_STATES[mp_state]

    # -- the state ioctls (issue 12: vmsim.kvm.x86_state) -----------------------------------
    def get_msrs(self, indices: list[int]) -> list[tuple[int, int]]:
        """KVM_GET_MSRS: (index, value) for the MSRs read, up to the first unknown one."""
        from vmsim.kvm import x86_state

        return x86_state.kvm_get_msrs(self, indices)

    def set_msrs(self, entries: list[tuple[int, int]]) -> int:
        """KVM_SET_MSRS: how many of `entries` were written."""
        from vmsim.kvm import x86_state

        return x86_state.kvm_set_msrs(self, entries)

    def get_vcpu_events(self) -> api.KvmVcpuEvents:
        """KVM_GET_VCPU_EVENTS."""
        from vmsim.kvm import x86_state

        return x86_state.kvm_vcpu_ioctl_x86_get_vcpu_events(self)

    def set_vcpu_events(self, events: api.KvmVcpuEvents) -> None:
        """KVM_SET_VCPU_EVENTS."""
        from vmsim.kvm import x86_state

        x86_state.kvm_vcpu_ioctl_x86_set_vcpu_events(self, events)

    def get_lapic(self) -> bytes:
        """KVM_GET_LAPIC: struct kvm_lapic_state (1 KiB)."""
        from vmsim.kvm import x86_state

        return x86_state.kvm_vcpu_ioctl_get_lapic(self)

    def set_lapic(self, regs: bytes) -> None:
        """KVM_SET_LAPIC."""
        from vmsim.kvm import x86_state

        x86_state.kvm_vcpu_ioctl_set_lapic(self, regs)

    def kick_signal(self) -> bool:
        """A signal (QEMU's SIG_IPI) reaches the vCPU thread. True if the thread is inside
        KVM_RUN, where the kernel sees it (a vCPU in the guest exits for the IPI that
        signal delivery sends, one in kvm_vcpu_block wakes); False if it is in userspace,
        where QEMU's handler runs instead (it sets kvm_run.immediate_exit)."""
        if not self.in_kvm_run:
            return False
        self.signal_pending = True
        irq_mod.kvm_vcpu_kick(self)
        return True

    def block_wait(self):
        """What this vCPU sleeps on in kvm_vcpu_block (for a thread rebuilt there)."""
        from vmsim.kvm import x86

        return x86.kvm_vcpu_block_wait(self)

    def set_instruction_limit(self, n: int | None) -> None:
        """vmsim's own control: the run stops after n units of work (instructions retired,
        exceptions delivered, exits), between two steps of the VM, with nothing traced."""
        self.instruction_limit = n

    # -- KVM_RUN -----------------------------------------------------------------------------
    def run_steps(self, resume: str | None = None) -> Generator[int, None, int]:
        """KVM_RUN as a generator that yields virtual cycles as the guest runs; `resume`
        re-enters one rebuilt from a snapshot (x86.kvm_arch_vcpu_ioctl_run)."""
        return (yield from (_ioctl_run or _bind_ioctl_run())(self, resume))

    def run(self) -> int:
        gen = self.run_steps()
        while True:
            try:
                next(gen)
            except StopIteration as stop:
                return stop.value


# x86.kvm_arch_vcpu_ioctl_run, bound on first use (x86 imports this module): an import
# statement in run_steps cost a microsecond at every KVM_RUN.
_ioctl_run: Callable[..., Generator[Any, None, int]] | None = None


def _bind_ioctl_run() -> Callable[..., Generator[Any, None, int]]:
    global _ioctl_run
    import vmsim.kvm.x86 as x86

    _ioctl_run = x86.kvm_arch_vcpu_ioctl_run
    return _ioctl_run

class _NoPorts:
    """The port bus a guest sees in VMX non-root mode: every access exits first
    (unconditional I/O exiting); only the emulator reaches this, and it swaps it."""

    def read(self, port: int, size: int) -> int:
        return (1 << (8 * size)) - 1

    def write(self, port: int, size: int, value: int) -> None:
        pass


# KVM_CHECK_EXTENSION answers (include/uapi/linux/kvm.h numbers): what the simulated
# kvm.ko implements.
SIM_CAPS = {api.KVM_CAP_IRQCHIP: 1, api.KVM_CAP_PIT2: 1, api.KVM_CAP_IMMEDIATE_EXIT: 1,
            api.KVM_CAP_MP_STATE: 1, api.KVM_CAP_VCPU_EVENTS: 1, api.KVM_CAP_PIT_STATE2: 1,
            api.KVM_CAP_NR_VCPUS: KVM_MAX_VCPUS, api.KVM_CAP_MAX_VCPUS: KVM_MAX_VCPUS,
            api.KVM_CAP_COALESCED_MMIO: api.KVM_COALESCED_MMIO_PAGE_OFFSET}


class SimKvm:
    """/dev/kvm of the simulated kvm.ko. `paging` is the module parameter: "ept" (kvm_intel
    ept=1, the default) or "shadow" (ept=0: shadow page tables)."""

    def __init__(self, events: EventStream | None = None, paging: str = "ept"):
        if paging not in ("ept", "shadow"):
            raise ValueError(f"paging must be ept or shadow, not {paging!r}")
        self.events = events
        self.paging = paging
        # The host's clock: the simulation's scheduler (hrtimers, "now"); VirtualMachine
        # gives it with use_clock before creating the VM.
        self.clock: Any = None

    def use_clock(self, clock: Any) -> None:
        self.clock = clock

    def get_api_version(self) -> int:
        return KVM_API_VERSION

    def check_extension(self, cap: int) -> int:
        return SIM_CAPS.get(cap, 0)

    def create_vm(self, machine_type: int = 0) -> SimVm:
        if machine_type != 0:
            raise KvmError(errno.EINVAL, "KVM_CREATE_VM: unknown machine type")
        return SimVm(self)

    def get_vcpu_mmap_size(self) -> int:
        return VCPU_MMAP_SIZE
