"""savevm and loadvm for a session (issue 12): the machine's state in snapshot files.

A snapshot (`vmsim run --save FILE`, the GUI's File > Save snapshot) holds, each in a
section of its own type and version (vmsim/snapshot_format.py, as QEMU's
VMStateDescriptions):

- `session`: what reopens the session from the file alone: the guest's source (or binary
  image), the machine's configuration (vCPUs, irqchip, memory, disk options, serial
  input), the backend and paging mode it ran with, what COM1 has sent so far;
- `ram`: guest RAM; `disk`: the disk image's contents, when the machine has one;
- QEMU's devices, one section each: `serial` (COM1), `debug-exit`, `vga`, `machine` (the
  ISA IRQ lines, a shutdown request), the userspace `pic` and `pit`, `virtio-mmio0`...,
  `virtio-blk`, `blk` (the block backend's counters), `bql`;
- the simulator's exact state (taken on the simulated backend only; names `sim-...`):
  kvm.ko's VM (`sim-kvm-vm`: the EPT or shadow tables, the in-kernel PIC, PIT and their
  timers), each vCPU (`sim-vcpu0`...: the CPU with its TLB, the VMCS, kvm_run, the local
  APIC), QEMU's view of each vCPU (`sim-cpustate0`...), and the threads (`sim-threads`:
  where each simulated thread stands, the clock, the main loop's timers, the iothread,
  the event counters).

Loading on the simulated backend with the same paging mode puts the exact state back: the
run continues as if it had never stopped, event for event (numbers and virtual times
included). The sections are checked against their declared schemas when read; the exact
ones hold the models' own fields (snapshot_format.PLAIN), which the models' load_state
take back; anything that does not fit refuses the whole file with one line, and nothing
half-loaded is ever returned: a new session is built, loaded, and only then handed out.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from typing import TYPE_CHECKING, Any

from vmsim.snapshot_format import (
    MAX_RAM,
    PLAIN,
    RAM,
    SECTION_TYPES,
    SUFFIX,
    Nullable,
    OlderVersion,
    SectionData,
    SectionType,
    Snapshot,
    SnapshotError,
    read_snapshot,
    write_snapshot,
)
from vmsim.vmm.savevm import PORTABLE_SECTIONS

if TYPE_CHECKING:
    from collections.abc import Callable

    from vmsim.events import Event
    from vmsim.session import Session

MAX_DISK = MAX_RAM  # a disk image in a snapshot, at most (as RAM)

def _session_schema(config_extra: dict) -> dict:
    return {
        "guest": str,  # the guest's file name, as the session was opened with
        "source": Nullable(str),  # its assembly source; null for a flat binary
        "image": bytes,  # the bytes loaded at `origin` (a check on the source; the binary)
        "origin": int,
        "backend": str,
        "paging": str,
        "config": {"memory_mib": int, "smp": int, "irqchip": str, "ioeventfd": bool,
                   "disk": Nullable(str), "disk_readonly": bool, "serial_in": bytes,
                   **config_extra},
        "serial": bytes,  # what COM1 sent (the last Session.SERIAL_KEEP bytes or more)
        "serial_total": int,
        "instructions": int,  # guest instructions retired before the snapshot
        "virtual_time": int,
        "exact": bool,  # the simulator's exact state is in the file
    }


# Version 2: the machine's coalesced-MMIO zone (MachineConfig.coalesced_mmio); version 1
# had none, as every machine before it.
SESSION = SectionType("vmsim-session", 2, _session_schema({"coalesced_mmio": bool}), older={
    1: OlderVersion(_session_schema({}), lambda d: {
        **d, "config": {**d["config"], "coalesced_mmio": False}})})
DISK = SectionType("disk-image", 1, None, max_size=MAX_DISK)

# QEMU's devices and the simulator's exact state: the models' fields (vmsim.state).
_PLAIN_TYPES = {
    "machine": "pc-machine", "serial": "isa-serial", "debug_exit": "isa-debug-exit",
    "vga": "vga-text", "pic": "i8259-pair", "pit": "i8254", "virtio_blk": "virtio-blk",
    "blk": "block-backend", "bql": "qemu-bql",
}
PLAIN_SECTIONS = {name: SectionType(name, 1, PLAIN) for name in (
    *_PLAIN_TYPES.values(), "virtio-mmio", "vmsim-threads", "vmsim-kvm-vm", "vmsim-kvm-vcpu",
    "vmsim-qemu-cpu")}

# The portable state (vmsim/vmm/savevm.py: what crosses the KVM API), in sections named
# migration-*: the KVM structures with their declared schemas, QEMU's devices as plain data.
MIGRATION = "migration-"
QEMU_DEVICES = SectionType("qemu-devices", 1, PLAIN)
MIGRATION_DISK = "migration-disk"  # the disk after the portable save's drain, if it differs

for _st in (SESSION, DISK, QEMU_DEVICES, *PLAIN_SECTIONS.values()):
    SECTION_TYPES[_st.name] = _st
for _st in PORTABLE_SECTIONS.values():
    SECTION_TYPES.setdefault(_st.name, _st)

_MACHINE_FIELDS = ("stop_requested", "stop_reason", "exit_status", "irq_levels")


def _section_name(key: str) -> str:
    return key.replace("_", "-")


# ---------------------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------------------


def snapshot_sections(session: Session, on_stop_event: Callable[[Event], None] | None = None
                      ) -> dict[str, SectionData]:
    """The session as snapshot sections. The VM must stand at a rebuildable point
    (Session.save_snapshot steps to one). `on_stop_event` is called with each event of
    QEMU's stop path on the copy (its KVM_GET_* ioctls ...; see _portable_from_copy)."""
    vm = session.vm
    if vm is None:
        raise ValueError("snapshots need a VM (--backend sim or kvm), not the bare CPU")
    m = session.machine
    cfg = m.config
    image = session.image
    exact = session.backend == "sim"
    out: dict[str, SectionData] = {
        "session": SectionData(SESSION.name, {
            "guest": os.path.basename(image.source_file) or "guest",
            "source": image.source,
            "image": bytes(image.data), "origin": image.origin,
            "backend": session.backend, "paging": session.paging,
            "config": {"memory_mib": cfg.memory_mib, "smp": cfg.smp, "irqchip": cfg.irqchip,
                       "ioeventfd": cfg.ioeventfd, "coalesced_mmio": cfg.coalesced_mmio,
                       "disk": None if cfg.disk is None else os.path.basename(cfg.disk),
                       "disk_readonly": cfg.disk_readonly, "serial_in": bytes(cfg.serial_in)},
            "serial": bytes(session.serial), "serial_total": session.serial_total,
            "instructions": session.instructions, "virtual_time": session.virtual_time,
            "exact": exact,
        }),
    }
    if not exact:
        # The host's KVM: only what the KVM_GET_* ioctls give, through QEMU's stop path
        # (the VM is continued after, as savevm does).
        from vmsim.vmm.savevm import qemu_savevm_portable

        out.update(_migration_sections(qemu_savevm_portable(vm, resume=True)))
        if m.blk is not None:
            out["disk"] = SectionData(DISK.name, _read_disk(m.blk.path))
        return out
    state = vm.save_state()
    out["ram"] = SectionData(RAM.name, state["ram"])
    dev = state["machine"]
    out["machine"] = SectionData("pc-machine", {k: dev[k] for k in _MACHINE_FIELDS})
    for key, type_name in _PLAIN_TYPES.items():
        if key != "machine" and dev[key] is not None:
            out[_section_name(key)] = SectionData(type_name, dev[key])
    for i, d in enumerate(dev["virtio_transports"]):
        out[f"virtio-mmio{i}"] = SectionData("virtio-mmio", d)
    out["sim-threads"] = SectionData("vmsim-threads", {
        k: state[k] for k in ("version", "positions", "main_loop", "iothread", "sched",
                              "events", "idle")})
    out["sim-kvm-vm"] = SectionData("vmsim-kvm-vm", state["kvm_vm"])
    for i, (vd, cd) in enumerate(zip(state["vcpus"], state["cpu_states"], strict=True)):
        out[f"sim-vcpu{i}"] = SectionData("vmsim-kvm-vcpu", vd)
        out[f"sim-cpustate{i}"] = SectionData("vmsim-qemu-cpu", cd)
    disk = None
    if m.blk is not None:
        disk = _read_disk(m.blk.path)
        out["disk"] = SectionData(DISK.name, disk)
    portable, disk_after = _portable_from_copy(session, state, disk, on_stop_event)
    out.update(_migration_sections(portable))
    if disk_after is not None and disk_after != disk:
        out[MIGRATION_DISK] = SectionData(DISK.name, disk_after)
    return out


def _migration_sections(d: dict[str, Any]) -> dict[str, SectionData]:
    from vmsim.vmm.savevm import portable_sections

    out = {MIGRATION + name: SectionData(type_name, value)
           for name, type_name, value in portable_sections(d)}
    out[MIGRATION + "devices"] = SectionData(QEMU_DEVICES.name, d["devices"])
    return out


def _portable_from_copy(session: Session, state: dict[str, Any], disk: bytes | None,
                        on_event: Callable[[Event], None] | None = None
                        ) -> tuple[dict[str, Any], bytes | None]:
    """The portable state of the VM `state` describes, taken through QEMU's stop path on
    a copy of it (a session rebuilt from `state`, with a copy of the disk): the session
    itself runs on untouched, as if never stopped. With the disk after the copy's drain.
    `on_event` sees the events of the stop path on the copy (not those of building it):
    a lesson records them; the session's own stream never does, its numbering intact."""
    from dataclasses import replace as dc_replace

    from vmsim.events import EventStream
    from vmsim.session import Session
    from vmsim.vmm.savevm import qemu_savevm_portable

    cfg = session.machine.config
    with tempfile.TemporaryDirectory(prefix="vmsim-save-") as tmp:
        if disk is not None:
            path = os.path.join(tmp, "disk.img")
            with open(path, "wb") as f:
                f.write(disk)
            cfg = dc_replace(cfg, disk=path)
        copy = Session.from_state(session.image, {"vm": state, "serial": b"",
                                                  "serial_total": 0},
                                  backend="sim", config=cfg, paging=session.paging,
                                  events=EventStream(), serial_out=lambda data: None,
                                  history=False)
        unsubscribe = copy.events.subscribe(on_event) if on_event is not None else None
        try:
            portable = qemu_savevm_portable(copy.vm)
        finally:
            if unsubscribe is not None:
                unsubscribe()
            copy.machine.close()
        disk_after = None
        if disk is not None:
            with open(os.path.join(tmp, "disk.img"), "rb") as f:
                disk_after = f.read()
    return portable, disk_after


def _read_disk(path: str) -> bytes:
    with open(path, "rb") as f:
        data = f.read(MAX_DISK + 1)
    if len(data) > MAX_DISK:
        raise ValueError(f"{path}: the disk image is larger than a snapshot holds "
                         f"({MAX_DISK} bytes)")
    return data


def save_session(session: Session, path: str,
                 on_stop_event: Callable[[Event], None] | None = None) -> str:
    """Write the session to `path` (SnapshotError, OutputError or ValueError, one line);
    the caller has brought it to a rebuildable point. Returns a one-line summary.
    `on_stop_event`: as for snapshot_sections."""
    name = os.fspath(path)
    try:
        sections = snapshot_sections(session, on_stop_event)
    except ValueError as e:
        raise SnapshotError(name, str(e)) from None
    meta = {"guest": sections["session"].data["guest"], "backend": session.backend,
            "paging": session.paging, "vcpus": session.machine.config.smp,
            "instructions": session.instructions, "virtual_time": session.virtual_time}
    cfg = session.machine.config
    write_snapshot(name, sections, meta,
                   inputs=[("guest file", session.image.source_file),
                           ("disk image", cfg.disk)])
    where = (f"after {session.instructions} instructions" if session.cpus
             else f"at eip {session.registers()['EIP']:#010x}")  # the host counts none
    return f"saved {name}: {meta['guest']} {where}, virtual time {session.virtual_time} cycles"


# ---------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------


def open_snapshot(path: str) -> Snapshot:
    """Read and validate the file (SnapshotError, one line), and check that it holds a
    session."""
    snap = read_snapshot(path)
    if "session" not in snap.sections or snap.sections["session"].type != SESSION.name:
        raise SnapshotError(snap.path, "holds no vmsim session (no 'session' section)")
    return snap


def load_session(path: str, **kwargs: Any) -> Session:
    """A new session from the snapshot at `path` alone: its guest, configuration and state.
    `kwargs` go to Session (serial_out, events, max_instructions; backend and paging
    default to the snapshot's). A disk image in the snapshot is written to a private
    temporary file (removed when the machine closes) unless `disk` names a file that
    holds the same bytes (shared storage, as a migration needs)."""
    from vmsim.asm import AsmError, assemble
    from vmsim.asm.image import GuestImage
    from vmsim.session import Session
    from vmsim.vmm.machine import MachineConfig

    snap = open_snapshot(path)
    name = snap.path
    secs = snap.sections
    sd = secs["session"].data
    backend = kwargs.pop("backend", None) or sd["backend"]
    paging = kwargs.pop("paging", None) or sd["paging"]
    disk_path = kwargs.pop("disk", None)
    image = None
    if sd["source"] is not None:
        try:
            image = assemble(sd["source"], sd["guest"])
        except AsmError:
            image = None
        if image is not None and (image.data != sd["image"] or image.origin != sd["origin"]):
            image = None  # another vmsim's assembler: the saved bytes are what ran
    if image is None:
        image = GuestImage(data=sd["image"], origin=sd["origin"], source_file=sd["guest"],
                           source=sd["source"])
    c = sd["config"]
    exact = sd["exact"] and backend == "sim" and paging == sd["paging"] and sd["backend"] == "sim"
    if not exact and MIGRATION + "vm" not in secs:
        raise SnapshotError(name, f"taken on --backend {sd['backend']} --paging {sd['paging']} "
                            "without the portable state: it loads there only")
    tmpdir = None
    disk = None
    if c["disk"] is not None:
        if "disk" not in secs:
            raise SnapshotError(name, "the machine has a disk but the file holds no 'disk' "
                                "section")
        data = secs["disk"].data
        if not exact and MIGRATION_DISK in secs:
            data = secs[MIGRATION_DISK].data  # as the portable save's drain left it
        if disk_path is not None:
            if _sha256_file(disk_path) != hashlib.sha256(data).hexdigest():
                raise SnapshotError(name, f"{disk_path} does not hold the disk image the "
                                    "snapshot was taken with")
            disk = disk_path
        else:
            tmpdir = tempfile.TemporaryDirectory(prefix="vmsim-disk-")
            disk = os.path.join(tmpdir.name, c["disk"] or "disk.img")
            with open(disk, "wb") as f:
                f.write(data)
    config = MachineConfig(c["memory_mib"], c["serial_in"], smp=c["smp"], irqchip=c["irqchip"],
                           disk=disk, disk_readonly=c["disk_readonly"], ioeventfd=c["ioeventfd"],
                           coalesced_mmio=c["coalesced_mmio"])
    limit = kwargs.get("max_instructions")
    try:
        if exact:
            s = Session.from_state(image, _exact_state(secs, sd), backend="sim",
                                   config=config, paging=paging, **kwargs)
        else:
            s = _load_portable(image, secs, sd, backend, config, paging, kwargs)
    except SnapshotError:
        raise
    except Exception as e:  # any mismatch in a file from elsewhere is a refusal
        if tmpdir is not None:
            tmpdir.cleanup()
        raise SnapshotError(name, f"does not fit this machine: {type(e).__name__}: "
                            f"{str(e)[:160]}") from None
    for c_ in s.vm.cpus:  # this run's budget, not the one the saved run stopped at
        if hasattr(c_.vcpu, "instruction_limit"):
            c_.vcpu.instruction_limit = limit
            c_.vcpu.limit_reached = False
    if tmpdir is not None:
        s.machine.on_close.append(tmpdir.cleanup)
    s.snapshot_path = name
    return s


def _load_portable(image: Any, secs: dict[str, SectionData], sd: dict[str, Any],
                   backend: str, config: Any, paging: str, kwargs: dict[str, Any]) -> Session:
    """A fresh VM on `backend` with the portable state put in (QEMU's incoming
    migration: RAM, devices, KVM_SET_* before the first KVM_RUN)."""
    from vmsim.session import Session
    from vmsim.vmm.savevm import VCPU_PARTS, qemu_loadvm_portable

    def need(name: str) -> Any:
        if MIGRATION + name not in secs:
            raise KeyError(f"section {MIGRATION}{name} is missing")
        return secs[MIGRATION + name].data

    def maybe(name: str) -> Any:
        sec = secs.get(MIGRATION + name)
        return None if sec is None else sec.data

    d = {"vm": need("vm"), "ram": need("ram"), "devices": need("devices"),
         "irqchip": maybe("irqchip"), "pit2": maybe("pit2"),
         "vcpus": [{key: need(f"cpu{i}-{key.replace('_', '-')}") for key, _ in VCPU_PARTS}
                   for i in range(sd["config"]["smp"])]}
    s = Session(image, backend, config, paging=paging, **kwargs)
    try:
        qemu_loadvm_portable(s.vm, d)
    except BaseException:
        s.machine.close()
        raise
    s.serial[:] = sd["serial"]
    s.serial_total = sd["serial_total"]
    if s.history is not None:
        # Steps back go no further than the migration: the history starts at the first
        # point after it where every thread can be rebuilt (a checkpoint needs one).
        if not s.advance_to_rebuildable_point():
            raise ValueError("the migrated VM reached no point a checkpoint can hold")
        s.history.reset()
    return s


def _exact_state(secs: dict[str, SectionData], sd: dict[str, Any]) -> dict[str, Any]:
    """Session.save_state's dict again, from the sections."""
    def need(name: str) -> Any:
        if name not in secs:
            raise KeyError(f"section {name} is missing")
        return secs[name].data

    threads = need("sim-threads")
    machine = {k: need("machine")[k] for k in _MACHINE_FIELDS}
    for key in _PLAIN_TYPES:
        if key != "machine":
            sec = secs.get(_section_name(key))
            machine[key] = None if sec is None else sec.data
    machine["virtio_transports"] = [secs[f"virtio-mmio{i}"].data
                                    for i in range(len(secs)) if f"virtio-mmio{i}" in secs]
    n = sd["config"]["smp"]
    vm = {**threads, "ram": need("ram"), "machine": machine, "kvm_vm": need("sim-kvm-vm"),
          "vcpus": [need(f"sim-vcpu{i}") for i in range(n)],
          "cpu_states": [need(f"sim-cpustate{i}") for i in range(n)]}
    return {"vm": vm, "serial": sd["serial"], "serial_total": sd["serial_total"]}


def _sha256_file(path: str) -> str:
    from vmsim.files import open_input_file

    h = hashlib.sha256()
    with open_input_file(path) as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def default_name(guest: str) -> str:
    """guest.asm -> guest.vmsnap (the GUI's suggestion)."""
    return os.path.splitext(os.path.basename(guest))[0] + SUFFIX
