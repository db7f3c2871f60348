"""The words of the GUI's interrupt, vCPU and thread views in one place (English; the
translations come with their own issue)."""

from __future__ import annotations

# Event breakpoints: Session.breakpoints.events specs ("|" between several that mean the same
# thing) -> what the menu and the status bar say. A virtqueue kick is the guest's QueueNotify
# write: completed in kvm.ko by an ioeventfd, or an MMIO exit to QEMU (--no-ioeventfd).
KICK = "ioeventfd_write|virtio_mmio_write_offset:register=QUEUE_NOTIFY"
COMPLETED = "virtio_blk_req_complete"
EVENT_BREAKPOINTS = {
    "kvm_inj_virq": "interrupt injected",
    "bql:action=wait": "BQL contended",
    KICK: "virtqueue kick",
    COMPLETED: "request completed",
}
EVENT_BREAKPOINT_TIPS = {
    "kvm_inj_virq": "stop when kvm.ko injects an interrupt into a vCPU (kvm_inj_virq)",
    "bql:action=wait": "stop when a thread waits for the BQL another thread holds (bql wait)",
    KICK: "stop when the driver kicks a virtqueue: its QueueNotify write (ioeventfd_write, "
          "or virtio_mmio_write_offset without ioeventfd)",
    COMPLETED: "stop when virtio-blk completes a request: status written, used ring advanced "
               "(virtio_blk_req_complete)",
}

# Run options (toolbar and window title).
VCPUS_LABEL = " vCPUs: "
VCPUS_TIP = "vCPUs of the machine (--smp): the guest starts again"
IRQCHIP_LABEL = " irqchip: "
IRQCHIP_TIP = ("kernel: PIC, PIT and local APICs in kvm.ko (KVM_CREATE_IRQCHIP); userspace: "
               "PIC and PIT in QEMU, injected with KVM_INTERRUPT (--irqchip): the guest starts again")

# Dock titles.
INTERRUPTS_TITLE = "Interrupts"
VCPUS_TITLE = "vCPUs && threads"

# The Interrupts panel.
PIC_CHIPS = ("PIC master (0x20)", "PIC slave (0xA0)")
PIT_TITLE = "PIT channel {n}"
APIC_TITLE = "local APIC, vCPU {n}"
WHERE_KERNEL = "in kvm.ko (--irqchip kernel)"
WHERE_USERSPACE = "in QEMU (--irqchip userspace)"
NO_APIC = "no local APIC: QEMU's userspace irqchip has none (--irqchip userspace)"
NO_CONTROLLERS = "no interrupt controllers on this backend"
PIT_MODES = {0: "interrupt on terminal count", 1: "hardware one-shot", 2: "rate generator",
             3: "square wave", 4: "software strobe", 5: "hardware strobe"}

# The vCPUs & threads panel: row labels and what the values mean.
VCPU_ROWS = (  # (vcpu_states() key, short label, what it is)
    ("thread", "thread", "the vCPU's QEMU thread"),
    ("mode", "mode", "kvm.ko's vcpu->mode: in_guest, blocked (kvm_vcpu_block), outside"),
    ("mp_state", "mp_state", "KVM_GET_MP_STATE: runnable, halted, init_received ..."),
    ("qemu_halted", "halted (QEMU)", "cpu->halted: QEMU's vCPU thread sleeps (userspace HLT)"),
    ("if_flag", "IF", "kvm_run.if_flag: the guest's EFLAGS.IF as KVM_RUN returned"),
    ("window_exiting", "window exiting", "the VMCS's interrupt-window exiting control"),
    ("request_interrupt_window", "request window", "kvm_run.request_interrupt_window (QEMU asks)"),
    ("ready_for_interrupt_injection", "ready for inj.",
     "kvm_run.ready_for_interrupt_injection: KVM_INTERRUPT would be taken now"),
    ("injecting", "injecting", "the vector in the VM-entry interruption information"),
    ("interruptibility", "interruptib.", "guest interruptibility state: STI / MOV SS blocking"),
    ("signal_pending", "signal", "a signal (SIG_IPI) pending for the vCPU thread"),
    ("time", "time", "the thread's virtual time (cycles)"),
    ("waiting", "waits for", "what the thread waits for"),
)
THREAD_HEADERS = ["thread", "virtual time (cycles)", "state", "waits for"]
BQL_LINE = "BQL: owner {owner}; waiters {waiters}; contended {contended} times"
MAIN_LOOP_LINE = "main loop: {state}; timers armed: {timers}"
MAIN_LOOP_RUNNING = "running (timers, fd handlers, bottom halves under the BQL)"
MAIN_LOOP_POLLING = "waiting in ppoll"
NOBODY = "nobody"
NONE = "none"

# The disk (--disk FILE[,readonly]; File > Attach disk image...).
ATTACH_DISK = "Attach disk image…"
ATTACH_DISK_RO = "Attach disk image read-only…"
DETACH_DISK = "Detach disk"
ATTACH_DISK_TIP = ("a raw image for virtio-blk on the last virtio-mmio transport, as vmsim run "
                   "--disk: the guest starts again")
DISK_ATTACHED = "disk {name}{ro} attached: the guest starts again"
DISK_DETACHED = "no disk: the guest starts again"
DISK_REFUSED = "cannot attach the disk: {error}"
NO_DISK = "(none)"
DISK_BOX = ("{name}{ro}: {size} ({capacity} sectors); sectors read {read}, written {written}; "
            "{touched} touched")
READONLY = ", read-only"

# The diagram's virtio boxes.
VIRTIO_BOX_NONE = "no disk (--disk FILE, or File > Attach disk image)"
VIRTIO_BOX = ("transport {transport} at {base:#x}, IRQ {irq}; status {status}; queue 0: "
              "avail idx {avail}, device at {last_avail}, used idx {used}")
IOTHREAD_NONE = "none: the vCPU thread runs the device"
IOTHREAD_BOX = "{name}: {state}"

# The Device queues panel.
QUEUES_TITLE = "Device queues"
QUEUES_NONE = "no virtio device (--disk FILE, or File > Attach disk image)"
TRANSPORT = "virtio-mmio transport {transport} at {base:#x}, IRQ {irq} (line {level}): {device}"
DEVICE_NAMES = {2: "virtio-blk"}
STATUS_LINE = "status {status:#04x}: {names}"
FEATURES_LINE = "features: device {device:#x}, driver {driver:#x}; negotiated: {names}"
BROKEN_LINE = "broken: {why}"
QUEUE_LINE = ("queue {index}: size {size}, {ready}; desc {desc:#x}, avail {avail:#x}, "
              "used {used:#x}; in use {inuse}")
READY = "ready"
NOT_READY = "not ready"
AVAIL_LINE = "available ring: idx {idx} (driver), last_avail_idx {last} (device); flags {flags:#x}"
USED_LINE = "used ring: idx {idx}; flags {flags:#x}"
NO_RING = "no rings: the queue is not ready"
DESC_HEADERS = ["#", "address", "length", "flags", "next"]
AVAIL_HEADERS = ["slot", "head", "state"]
USED_HEADERS = ["slot", "id", "len", "state"]
REQ_HEADERS = ["head", "type", "sector", "sectors", "descriptors", "status", "progress"]
DISK_HEADERS = ["sector", "access"]
RING_WAITING = "not popped yet"
RING_POPPED = "popped"
RING_NEW = "new"
RING_OLD = ""
DISK_LINE = "{name}{ro}: {capacity} sectors; read {read}, written {written}; {touched} touched"
TAB_DESCRIPTORS = "Descriptors"
TAB_AVAIL = "Available ring"
TAB_USED = "Used ring"
TAB_REQUESTS = "Requests"
TAB_DISK = "Disk sectors"
ACCESS_NAMES = {"r": "read", "w": "written", "rw": "read, written"}


def event_breakpoint_name(spec: str) -> str:
    """The words for one Breakpoints.events spec (a part of an EVENT_BREAKPOINTS key)."""
    return next((name for key, name in EVENT_BREAKPOINTS.items() if spec in key.split("|")), spec)


# Steps backwards (issue 12): each back action sits beside its forward one; its key is the
# forward key with Shift.
BACK_INSN = "◀ Instruction"
BACK_INSN_TIP = "step back one guest instruction (undo Step instruction)"
BACK_EVENT = "◀ Event"
BACK_EVENT_TIP = "step back one event (undo Step event)"
BACK_EXIT = "◀ VM exit"
BACK_EXIT_TIP = "back to just after the previous VM exit (kvm_exit)"
BACK_USER = "◀ Userspace exit"
BACK_USER_TIP = "back to just after the previous exit to userspace (kvm_userspace_exit)"
REVERSE_CONTINUE = "◀◀ Reverse"
REVERSE_CONTINUE_TIP = ("reverse continue: back to the previous hit of any breakpoint, "
                        "else to the start of the run")
# Why the back actions are off (their tooltip then).
NO_BACK_KVM = "steps back need the simulated kvm.ko: the host's KVM keeps its state in the kernel"
NO_BACK_BARE = "steps back need a VM (--backend sim)"
NO_BACK_HISTORY = "this session keeps no history of its run (Session(history=False))"
NO_BACK_START = "at the start of the run: nothing earlier to go back to"
NO_BACK_GDB = "gdb drives this guest: detach it first"
BACK_STOPPED = {  # Outcome.reason of a step back -> the status bar
    "start": "back at the start of the run",
}
BACK_DONE = "back at virtual time {time} cycles, event {seq}"
REVERSE_HIT = "reverse continue: breakpoint: {what}"
REVERSE_START = "reverse continue: no breakpoint hit earlier: back at the start of the run"

# The timeline (Session.timeline(): the virtual time reached so far, exits as ticks).
TIMELINE_TITLE = "Timeline"
TIMELINE_EXITS = "VM exits"
TIMELINE_USER = "exits to userspace"
TIMELINE_EMPTY = "timeline: no virtual time yet"
TIMELINE_TIP = ("the run in virtual time: ticks are VM exits (top row) and exits to userspace "
                "(bottom row); click or drag, then release, to go to that point")
TIMELINE_SPAN = "{now} / {end} cycles"
TIMELINE_NONE = "no timeline: {why}"
SEEK_DONE = "at virtual time {time} cycles (asked for {asked})"

# Snapshots (File > Save snapshot..., Open snapshot...; vmsim gui --load FILE).
SAVE_SNAPSHOT = "Save snapshot…"
SAVE_SNAPSHOT_TIP = "write the whole session (guest source, machine, state) to a .vmsnap file"
OPEN_SNAPSHOT = "Open snapshot…"
OPEN_SNAPSHOT_TIP = "reopen a session from a .vmsnap file: its guest, its machine, its state"
SNAPSHOT_FILTER = "vmsim snapshots (*.vmsnap);;All files (*)"
SNAPSHOT_SAVED = "snapshot saved: {summary}"
SNAPSHOT_OPENED = ("snapshot {name} opened: {backend}, {smp} vCPU{s}, irqchip {irqchip}, at virtual "
                   "time {time} cycles")
# The exit statistics count what the window saw: after a snapshot was opened, from there.
STATS_SINCE_SNAPSHOT = " (exits counted since {name} was opened)"
SNAPSHOT_SAVE_FAILED = "cannot save the snapshot: {error}"
SNAPSHOT_OPEN_FAILED = "cannot open the snapshot: {error}"

# The page tables panel's last walk, on the backend that steps back.
WALKS_NOT_TRACED = "walks are not traced here (--backend sim): see the tooltip"
WALKS_NOT_TRACED_TIP = ("A step back replays the run with the events numbered as they were; the "
                        "per-access MMU events (walk_step, tlb_miss, tlb_hit) would change that "
                        "numbering, so the window does not listen to them on the simulated "
                        "backend (--backend bare shows each walk).")

# The VMCS panel, while the vCPU is out of the guest (VMX root: kvm.ko or QEMU has it): the
# note, and its tooltip with the whole story.
VMCS_OUT_OF_GUEST = ("vCPU out of the guest: its state stays in this VMCS; QEMU sees only "
                     "copies (KVM_GET_REGS / KVM_GET_SREGS)")
VMCS_OUT_OF_GUEST_TIP = ("Between a VM exit and the next VM entry the guest's RIP, RSP, RFLAGS, "
                         "control and segment registers stay in the VMCS's guest-state area (its "
                         "general registers in kvm.ko's vcpu->arch.regs). QEMU never reads the "
                         "VMCS: cpu_synchronize_state asks kvm.ko for copies with KVM_GET_REGS and "
                         "KVM_GET_SREGS, and writes changes back with KVM_SET_*.")
