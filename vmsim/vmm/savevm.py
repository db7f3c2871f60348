"""The portable VM state: what QEMU's savevm and migration move (migration/savevm.c), as
plain data that loads into a fresh VM on either backend (issue 12).

What crosses is what crosses the KVM API, plus QEMU's own: guest RAM, QEMU's devices
(Machine.state()) with their virtual-clock timers and the clock itself, and per vCPU the
copies the KVM_GET_* ioctls gave (struct kvm_regs, kvm_sregs, the MSRs, kvm_vcpu_events,
kvm_mp_state, kvm_lapic_state), with the in-kernel PIC pair (KVM_GET_IRQCHIP) and PIT
(KVM_GET_PIT2). They are taken through QEMU's stop path (vmsim.vmm.cpus: vm_stop, then
cpu_synchronize_all_states), never from the simulator's CPU object or its VMCS.

What does not cross, and is rebuilt on the destination as after a real migration:
kvm.ko's TLB contents, EPT or shadow page tables (the destination faults them in again),
the simulator's decoded instructions, and where each simulated thread stood (each vCPU
starts at the top of KVM_RUN). VirtualMachine.save_state is the other, exact-sim-only
state (docs/snapshots.md).

Loading is QEMU's incoming side: the destination is made with the same configuration
(its entry state already put at creation, as QEMU resets a machine before loading),
then RAM and the devices are loaded, and every vCPU gets kvm_arch_put_registers(
KVM_PUT_FULL_STATE) before its first KVM_RUN (cpu_synchronize_all_post_init), then
vm_start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import vmsim.kvm.api as api
from vmsim.kvm.api import KvmRegs, KvmVcpuEvents, sregs_from_plain, sregs_to_plain
from vmsim.snapshot_format import RAM, MapOf, Nullable, SectionType
from vmsim.state import fields_state
from vmsim.vmm import cpus
from vmsim.vmm.iothread import THREAD as IOTHREAD
from vmsim.vmm.kvm_x86 import (
    KVM_PUT_FULL_STATE,
    X86CpuState,
    kvm_arch_put_registers,
    kvm_pic_get,
    kvm_pic_put,
    kvm_pit_get,
    kvm_pit_put,
)

if TYPE_CHECKING:
    from vmsim.vmm.vm import VirtualMachine

PORTABLE_VERSION = 1

# -- the declared schema of each part (vmsim.snapshot_format's kinds), for snapshot files --
_SEGMENT = {"base": int, "limit": int, "selector": int, "type": int, "present": int,
            "dpl": int, "db": int, "s": int, "l": int, "g": int, "avl": int, "unusable": int}
_DTABLE = {"base": int, "limit": int}
REGS_SCHEMA = {name: int for name in KvmRegs.__dataclass_fields__}
SREGS_SCHEMA = {**{name: _SEGMENT for name in api.SEGMENT_NAMES}, "gdt": _DTABLE,
                "idt": _DTABLE, "cr0": int, "cr2": int, "cr3": int, "cr4": int, "cr8": int,
                "efer": int, "apic_base": int, "interrupt_bitmap": [int]}
EVENTS_SCHEMA = {name: int for name in KvmVcpuEvents.__dataclass_fields__}
PIC_SCHEMA = {name: int for name in api.PIC_STATE_FIELDS}
PIT_CHANNEL_SCHEMA = {name: int for name in api.PIT_CHANNEL_FIELDS}
VM_SCHEMA = {"version": int, "smp": int, "irqchip": str, "ram_size": int, "iothread": bool,
             "clock": int, "qemu_timers": [{"name": str, "expire_time": Nullable(int)}]}

# Section types, as QEMU's VMStateDescriptions: one per structure of the KVM API (a
# section per vCPU: cpu0-regs, cpu1-regs ...), the VM's, and guest RAM (the file format's
# own binary RAM type). QEMU's device state is Machine.state(), written by the snapshot's
# own device sections.
PORTABLE_SECTIONS: dict[str, SectionType] = {t.name: t for t in (
    SectionType("kvm-vm", 1, VM_SCHEMA),
    SectionType("kvm-regs", 1, REGS_SCHEMA),  # struct kvm_regs
    SectionType("kvm-sregs", 1, SREGS_SCHEMA),  # struct kvm_sregs
    SectionType("kvm-msrs", 1, MapOf(int)),  # struct kvm_msrs: "0x174": value ...
    SectionType("kvm-vcpu-events", 1, EVENTS_SCHEMA),  # struct kvm_vcpu_events
    SectionType("kvm-mp-state", 1, {"mp_state": int}),  # struct kvm_mp_state
    SectionType("kvm-lapic", 1, {"regs": Nullable(bytes)}),  # struct kvm_lapic_state
    SectionType("kvm-irqchip", 1, {"master": PIC_SCHEMA, "slave": PIC_SCHEMA}),
    SectionType("kvm-pit2", 1, {"channels": [PIT_CHANNEL_SCHEMA], "flags": int}),
    # QEMU's own part of a vCPU (vmstate_cpu_common): halted, pending interrupt requests
    SectionType("qemu-cpu-common", 1, {"halted": bool, "interrupt_request": int}),
    RAM,
)}
# Where each part of qemu_savevm_portable's dict goes: (key in the vCPU's dict, section
# type) per vCPU, and (key in the dict, section type) for the VM.
VCPU_PARTS = (("regs", "kvm-regs"), ("sregs", "kvm-sregs"), ("msrs", "kvm-msrs"),
              ("vcpu_events", "kvm-vcpu-events"), ("mp_state", "kvm-mp-state"),
              ("lapic", "kvm-lapic"), ("cpu_common", "qemu-cpu-common"))
VM_PARTS = (("vm", "kvm-vm"), ("irqchip", "kvm-irqchip"), ("pit2", "kvm-pit2"),
            ("ram", "ram"))


def _config(vm: VirtualMachine) -> dict[str, Any]:
    return {"smp": len(vm.cpus), "irqchip": vm.machine.config.irqchip,
            "ram_size": len(vm.machine.ram), "iothread": vm.iothread is not None}


def bdrv_drain_all(vm: VirtualMachine) -> None:
    """vm_stop's bdrv_drain_all, and the virtio-blk dataplane's stop: the guest's kicks
    still in the iothread's ioeventfds are taken and every request in flight completes,
    so that nothing is left in the block layer or the iothread (neither crosses)."""
    from vmsim.vmm.cpus import PAUSE_STEP_LIMIT

    io = vm.iothread
    if io is None or io.proxy is None:
        return
    thread = next(t for t in vm.sched.threads if t.name == IOTHREAD)

    def drained() -> bool:
        vdev = io.proxy.vdev if io.proxy is not None else None
        idle = thread.done or (thread.blocked is not None and thread.blocked.reason == "aio_poll")
        return idle and not io.aio_poll_ready() and not (vdev is not None and vdev.inflight)

    for _ in range(PAUSE_STEP_LIMIT):
        if drained() or vm.sched.step() is None:
            break
    if not drained():
        raise ValueError("the iothread did not drain its requests")


def _vcpu_plain(env: X86CpuState) -> dict[str, Any]:
    return {"regs": {k: v for k, v in vars(env.regs).items()},
            "sregs": sregs_to_plain(env.sregs),
            "msrs": {f"{i:#x}": d for i, d in env.msrs.items()},
            "vcpu_events": dict(vars(env.events)),
            "mp_state": {"mp_state": env.mp_state},
            "lapic": {"regs": env.lapic}}


def _vcpu_env(d: dict[str, Any]) -> X86CpuState:
    return X86CpuState(KvmRegs(**d["regs"]), sregs_from_plain(d["sregs"]),
                       {int(k, 16): v for k, v in d["msrs"].items()},
                       KvmVcpuEvents(**d["vcpu_events"]), d["mp_state"]["mp_state"],
                       d["lapic"]["regs"])


def qemu_savevm_portable(vm: VirtualMachine, *, resume: bool = False) -> dict[str, Any]:
    """The VM's portable state, taken through vm_stop (RUN_STATE_SAVE_VM) and
    cpu_synchronize_all_states: only what the KVM_GET_* ioctls return, RAM, and QEMU's
    devices. The VM stays stopped, as a migration source does, unless `resume` (what
    savevm does: vm_start again if it was running)."""
    m = vm.machine
    if m.stop_requested:
        raise ValueError("the VM has shut down: there is no state to save")
    was_running = cpus.vm_stop(vm, cpus.RUN_STATE_SAVE_VM)
    if m.stop_requested:  # the exit a vCPU was finishing as it stopped ended the VM
        raise ValueError(f"the VM shut down as it stopped ({m.stop_reason}): "
                         f"there is no state to save")
    bdrv_drain_all(vm)
    cpus.cpu_synchronize_all_states(vm)
    s = vm.kvm
    irqchip = pit2 = None
    if s.irqchip_in_kernel:
        irqchip = kvm_pic_get(s)  # the kvm-i8259 devices' pre_save
        pit2 = vm.pit_state if vm.pit_state is not None else kvm_pit_get(s)
    devices = m.state()
    del devices["bql"]  # the lock's holder and waiters are thread positions: not state
    # Writes still queued in kvm.ko's coalesced-MMIO ring were complete for the guest: the
    # VGA's state carries them applied (the ring does not cross; the running VM's stays).
    devices["vga"] = {**devices["vga"], "buffer": m.vga_display()}
    ml = vm.main_loop
    d = {
        "vm": {"version": PORTABLE_VERSION, **_config(vm), "clock": vm.sched.now,
               # QEMU_CLOCK_VIRTUAL timers are part of their devices' vmstate
               "qemu_timers": [{"name": t.name, "expire_time": t.expire_time}
                               for t in ml.timers]},
        "ram": bytes(m.ram),
        "devices": devices,
        "vcpus": [{**_vcpu_plain(c.env),
                   # vmstate_cpu_common: QEMU's own halted flag and pending interrupts
                   "cpu_common": {"halted": c.halted,
                                  "interrupt_request": c.interrupt_request}}
                  for c in vm.cpus],
        "irqchip": irqchip,
        "pit2": pit2,
    }
    if resume and was_running:
        cpus.vm_start(vm)
    elif was_running:
        cpus.runstate_set(vm, cpus.RUN_STATE_POSTMIGRATE)
    return d


def qemu_loadvm_portable(vm: VirtualMachine, d: dict[str, Any]) -> None:
    """Load `d` (from qemu_savevm_portable, on either backend) into `vm`, a fresh VM of the
    same configuration that has not run: RAM, the devices, the in-kernel PIC and PIT,
    every vCPU's KVM_SET_* (KVM_PUT_FULL_STATE) before its first KVM_RUN, then vm_start.
    ValueError (one line) if it does not fit."""
    meta = d.get("vm") if isinstance(d, dict) else None
    if not isinstance(meta, dict) or meta.get("version") != PORTABLE_VERSION:
        raise ValueError(f"portable VM state version "
                         f"{meta.get('version') if isinstance(meta, dict) else None!r}, "
                         f"this vmsim reads {PORTABLE_VERSION}")
    want = _config(vm)
    for key, have in want.items():
        if meta.get(key) != have:
            raise ValueError(f"the saved VM has {key} {meta.get(key)!r}, this one {have!r}: "
                             f"make the destination with the same configuration")
    if any(t.steps for t in vm.sched.threads):
        raise ValueError("the destination VM has already run: load into a fresh one")
    m, s = vm.machine, vm.kvm
    ev = m.events
    cpus.runstate_set(vm, cpus.RUN_STATE_INMIGRATE)
    for c in vm.cpus:
        c.stopped = True  # created stopped: nothing runs until vm_start
    # The virtual clock (QEMU's timers_state): the destination goes on from the source's
    # time, so the devices' deadlines mean the same.
    now = meta["clock"]
    for t in vm.sched.threads:
        t.time = max(t.time, now)
    vm.sched.last_time = max(vm.sched.last_time, now)
    if ev is not None:
        ev.time = vm.sched.now
    m.load_ram(d["ram"])
    m.load_state({**d["devices"], "bql": fields_state(m.bql)})
    vm.main_loop.load_state({"timers": [[t["name"], t["expire_time"]]
                                        for t in meta["qemu_timers"]], "notified": False,
                             "running": False})
    if s.irqchip_in_kernel:
        kvm_pic_put(s, d["irqchip"])
        kvm_pit_put(s, d["pit2"])
    for c, vd in zip(vm.cpus, d["vcpus"], strict=True):
        c.env = _vcpu_env(vd)
        kvm_arch_put_registers(s, c, KVM_PUT_FULL_STATE)  # cpu_synchronize_all_post_init
        c.vcpu_dirty = False
        common = vd["cpu_common"]
        c.halted, c.interrupt_request = common["halted"], common["interrupt_request"]
        c.eflags_if = bool(c.env.regs.rflags & 0x200)
    # virtio-blk's dataplane starts again on the destination (the device's vm state
    # change handler): its ioeventfds and irqfd are assigned to this KVM.
    for proxy in m.virtio_transports:
        if proxy.ioeventfd_started:
            proxy.ioeventfd_started = False
            proxy.virtio_mmio_start_ioeventfd()
    cpus.vm_start(vm)


def portable_sections(d: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """`d` as snapshot sections: (section name, section type, value) in PORTABLE_SECTIONS'
    types; QEMU's devices ("devices") are left to the snapshot's device sections."""
    out = [(key, type_name, d[key]) for key, type_name in VM_PARTS if d[key] is not None]
    for i, vd in enumerate(d["vcpus"]):
        out += [(f"cpu{i}-{key.replace('_', '-')}", type_name, vd[key])
                for key, type_name in VCPU_PARTS]
    return out
