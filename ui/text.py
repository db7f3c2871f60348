"""The words of the GUI's interrupt, vCPU, thread, disk, timeline and snapshot views in one
place, translated where they are used (issue 13).

They are read as attributes of this module (`T.INTERRUPTS_TITLE`), as before; each read
gives them in the application's current language. A constant evaluated at import would
stay in the language of that moment (before any translator is installed), so the words
are made by `_words()`, whose `tr("...")` calls pyside6-lupdate extracts, once per
language (`ui.i18n.generation()` changes at each switch), and the module's `__getattr__`
hands them out. Spec strings and names that are not words (event kinds, device names)
stay plain constants.
"""

from __future__ import annotations

from typing import Any

from ui import i18n
from ui.i18n import tr

# Event breakpoint specs (Session.breakpoints.events; "|" between several that mean the
# same thing). A virtqueue kick is the guest's QueueNotify write: completed in kvm.ko by an
# ioeventfd, or an MMIO exit to QEMU (--no-ioeventfd).
KICK = "ioeventfd_write|virtio_mmio_write_offset:register=QUEUE_NOTIFY"
COMPLETED = "virtio_blk_req_complete"
DEVICE_NAMES = {2: "virtio-blk"}  # the Device queues panel's device names (virtio device IDs): not translated
RING_OLD = ""  # a ring slot neither new nor waiting


def _words() -> dict[str, Any]:
    # Event breakpoints: Session.breakpoints.events specs ("|" between several that mean the same
    # thing) -> what the menu and the status bar say. A virtqueue kick is the guest's QueueNotify
    # write: completed in kvm.ko by an ioeventfd, or an MMIO exit to QEMU (--no-ioeventfd).
    EVENT_BREAKPOINTS = {
        "kvm_inj_virq": tr("interrupt injected"),
        "bql:action=wait": tr("BQL contended"),
        KICK: tr("virtqueue kick"),
        COMPLETED: tr("request completed"),
    }
    EVENT_BREAKPOINT_TIPS = {
        "kvm_inj_virq": tr("stop when kvm.ko injects an interrupt into a vCPU (kvm_inj_virq)"),
        "bql:action=wait": tr("stop when a thread waits for the BQL another thread holds (bql wait)"),
        KICK: tr("stop when the driver kicks a virtqueue: its QueueNotify write (ioeventfd_write, "
              "or virtio_mmio_write_offset without ioeventfd)"),
        COMPLETED: tr("stop when virtio-blk completes a request: status written, used ring advanced "
                   "(virtio_blk_req_complete)"),
    }

    # Run options (toolbar and window title).
    VCPUS_LABEL = tr(" vCPUs: ")
    VCPUS_TIP = tr("vCPUs of the machine (--smp): the guest starts again")
    IRQCHIP_LABEL = tr(" irqchip: ")
    IRQCHIP_TIP = (tr("kernel: PIC, PIT and local APICs in kvm.ko (KVM_CREATE_IRQCHIP); userspace: "
                   "PIC and PIT in QEMU, injected with KVM_INTERRUPT (--irqchip): the guest starts again"))

    # Dock titles.
    INTERRUPTS_TITLE = tr("Interrupts")
    VCPUS_TITLE = tr("vCPUs && threads")

    # The Interrupts panel.
    PIC_CHIPS = (tr("PIC master (0x20)"), tr("PIC slave (0xA0)"))
    PIT_TITLE = tr("PIT channel {n}")
    APIC_TITLE = tr("local APIC, vCPU {n}")
    WHERE_KERNEL = tr("in kvm.ko (--irqchip kernel)")
    WHERE_USERSPACE = tr("in QEMU (--irqchip userspace)")
    NO_APIC = tr("no local APIC: QEMU's userspace irqchip has none (--irqchip userspace)")
    NO_CONTROLLERS = tr("no interrupt controllers on this backend")
    PIT_MODES = {0: tr("interrupt on terminal count"), 1: tr("hardware one-shot"), 2: tr("rate generator"),
                 3: tr("square wave"), 4: tr("software strobe"), 5: tr("hardware strobe")}

    # The vCPUs & threads panel: row labels and what the values mean.
    VCPU_ROWS = (  # (vcpu_states() key, short label, what it is)
        ("thread", tr("thread"), tr("the vCPU's QEMU thread")),
        ("mode", tr("mode"), tr("kvm.ko's vcpu->mode: in_guest, blocked (kvm_vcpu_block), outside")),
        ("mp_state", "mp_state", tr("KVM_GET_MP_STATE: runnable, halted, init_received ...")),
        ("qemu_halted", tr("halted (QEMU)"), tr("cpu->halted: QEMU's vCPU thread sleeps (userspace HLT)")),
        ("if_flag", "IF", tr("kvm_run.if_flag: the guest's EFLAGS.IF as KVM_RUN returned")),
        ("window_exiting", tr("window exiting"), tr("the VMCS's interrupt-window exiting control")),
        ("request_interrupt_window", tr("request window"),
         tr("kvm_run.request_interrupt_window (QEMU asks)")),
        ("ready_for_interrupt_injection", tr("ready for inj."),
         tr("kvm_run.ready_for_interrupt_injection: KVM_INTERRUPT would be taken now")),
        ("injecting", tr("injecting"), tr("the vector in the VM-entry interruption information")),
        ("interruptibility", tr("interruptib."), tr("guest interruptibility state: STI / MOV SS blocking")),
        ("signal_pending", tr("signal"), tr("a signal (SIG_IPI) pending for the vCPU thread")),
        ("time", tr("time"), tr("the thread's virtual time (cycles)")),
        ("waiting", tr("waits for"), tr("what the thread waits for")),
    )
    THREAD_HEADERS = [tr("thread"), tr("virtual time (cycles)"), tr("state"), tr("waits for")]
    BQL_LINE = tr("BQL: owner {owner}; waiters {waiters}; contended {contended} times")
    MAIN_LOOP_LINE = tr("main loop: {state}; timers armed: {timers}")
    MAIN_LOOP_RUNNING = tr("running (timers, fd handlers, bottom halves under the BQL)")
    MAIN_LOOP_POLLING = tr("waiting in ppoll")
    NOBODY = tr("nobody")
    NONE = tr("none")

    # The disk (--disk FILE[,readonly]; File > Attach disk image...).
    ATTACH_DISK = tr("Attach disk image…")
    ATTACH_DISK_RO = tr("Attach disk image read-only…")
    DETACH_DISK = tr("Detach disk")
    ATTACH_DISK_TIP = (tr("a raw image for virtio-blk on the last virtio-mmio transport, as vmsim run "
                       "--disk: the guest starts again"))
    DISK_ATTACHED = tr("disk {name}{ro} attached: the guest starts again")
    DISK_DETACHED = tr("no disk: the guest starts again")
    DISK_REFUSED = tr("cannot attach the disk: {error}")
    NO_DISK = tr("(none)")
    DISK_BOX = (tr("{name}{ro}: {size} ({capacity} sectors); sectors read {read}, written {written}; "
                "{touched} touched"))
    READONLY = tr(", read-only")

    # The diagram's virtio boxes.
    VIRTIO_BOX_NONE = tr("no disk (--disk FILE, or File > Attach disk image)")
    VIRTIO_BOX = (tr("transport {transport} at {base:#x}, IRQ {irq}; status {status}; queue 0: "
                  "avail idx {avail}, device at {last_avail}, used idx {used}"))
    IOTHREAD_NONE = tr("none: the vCPU thread runs the device")
    IOTHREAD_BOX = tr("{name}: {state}")

    # The Device queues panel.
    QUEUES_TITLE = tr("Device queues")
    QUEUES_NONE = tr("no virtio device (--disk FILE, or File > Attach disk image)")
    TRANSPORT = tr("virtio-mmio transport {transport} at {base:#x}, IRQ {irq} (line {level}): {device}")
    STATUS_LINE = tr("status {status:#04x}: {names}")
    FEATURES_LINE = tr("features: device {device:#x}, driver {driver:#x}; negotiated: {names}")
    BROKEN_LINE = tr("broken: {why}")
    QUEUE_LINE = (tr("queue {index}: size {size}, {ready}; desc {desc:#x}, avail {avail:#x}, "
                  "used {used:#x}; in use {inuse}"))
    READY = tr("ready")
    NOT_READY = tr("not ready")
    AVAIL_LINE = tr("available ring: idx {idx} (driver), last_avail_idx {last} (device); flags {flags:#x}")
    USED_LINE = tr("used ring: idx {idx}; flags {flags:#x}")
    NO_RING = tr("no rings: the queue is not ready")
    DESC_HEADERS = ["#", tr("address"), tr("length"), tr("flags"), tr("next")]
    AVAIL_HEADERS = [tr("slot"), tr("head"), tr("state")]
    USED_HEADERS = [tr("slot"), "id", "len", tr("state")]
    REQ_HEADERS = [tr("head"), tr("type"), tr("sector"), tr("sectors"), tr("descriptors"), tr("status"),
                   tr("progress")]
    DISK_HEADERS = [tr("sector"), tr("access")]
    RING_WAITING = tr("not popped yet")
    RING_POPPED = tr("popped")
    RING_NEW = tr("new")
    DISK_LINE = tr("{name}{ro}: {capacity} sectors; read {read}, written {written}; {touched} touched")
    TAB_DESCRIPTORS = tr("Descriptors")
    TAB_AVAIL = tr("Available ring")
    TAB_USED = tr("Used ring")
    TAB_REQUESTS = tr("Requests")
    TAB_DISK = tr("Disk sectors")
    ACCESS_NAMES = {"r": tr("read"), "w": tr("written"), "rw": tr("read, written")}


    # Steps backwards (issue 12): each back action sits beside its forward one; its key is the
    # forward key with Shift.
    BACK_INSN = tr("◀ Instruction")
    BACK_INSN_TIP = tr("step back one guest instruction (undo Step instruction)")
    BACK_EVENT = tr("◀ Event")
    BACK_EVENT_TIP = tr("step back one event (undo Step event)")
    BACK_EXIT = tr("◀ VM exit")
    BACK_EXIT_TIP = tr("back to just after the previous VM exit (kvm_exit)")
    BACK_USER = tr("◀ Userspace exit")
    BACK_USER_TIP = tr("back to just after the previous exit to userspace (kvm_userspace_exit)")
    REVERSE_CONTINUE = tr("◀◀ Reverse")
    REVERSE_CONTINUE_TIP = (tr("reverse continue: back to the previous hit of any breakpoint, "
                            "else to the start of the run"))
    # Why the back actions are off (their tooltip then).
    NO_BACK_KVM = tr("steps back need the simulated kvm.ko: the host's KVM keeps its state in the kernel")
    NO_BACK_BARE = tr("steps back need a VM (--backend sim)")
    NO_BACK_HISTORY = tr("this session keeps no history of its run (Session(history=False))")
    NO_BACK_START = tr("at the start of the run: nothing earlier to go back to")
    NO_BACK_GDB = tr("gdb drives this guest: detach it first")
    BACK_STOPPED = {  # Outcome.reason of a step back -> the status bar
        "start": tr("back at the start of the run"),
    }
    BACK_DONE = tr("back at virtual time {time} cycles, event {seq}")
    REVERSE_HIT = tr("reverse continue: breakpoint: {what}")
    REVERSE_START = tr("reverse continue: no breakpoint hit earlier: back at the start of the run")

    # The timeline (Session.timeline(): the virtual time reached so far, exits as ticks).
    TIMELINE_TITLE = tr("Timeline")
    TIMELINE_EXITS = tr("VM exits")
    TIMELINE_USER = tr("exits to userspace")
    TIMELINE_EMPTY = tr("timeline: no virtual time yet")
    TIMELINE_TIP = (tr("the run in virtual time: ticks are VM exits (top row) and exits to userspace "
                    "(bottom row); click or drag, then release, to go to that point"))
    TIMELINE_SPAN = tr("{now} / {end} cycles")
    TIMELINE_NONE = tr("no timeline: {why}")
    SEEK_DONE = tr("at virtual time {time} cycles (asked for {asked})")

    # Snapshots (File > Save snapshot..., Open snapshot...; vmsim gui --load FILE).
    SAVE_SNAPSHOT = tr("Save snapshot…")
    SAVE_SNAPSHOT_TIP = tr("write the whole session (guest source, machine, state) to a .vmsnap file")
    OPEN_SNAPSHOT = tr("Open snapshot…")
    OPEN_SNAPSHOT_TIP = tr("reopen a session from a .vmsnap file: its guest, its machine, its state")
    SNAPSHOT_FILTER = tr("vmsim snapshots (*.vmsnap);;All files (*)")
    SNAPSHOT_SAVED = tr("snapshot saved: {summary}")
    SNAPSHOT_OPENED = (tr("snapshot {name} opened: {backend}, {smp} vCPU{s}, irqchip {irqchip}, at virtual "
                       "time {time} cycles"))
    # The exit statistics count what the window saw: after a snapshot was opened, from there.
    STATS_SINCE_SNAPSHOT = tr(" (exits counted since {name} was opened)")
    SNAPSHOT_SAVE_FAILED = tr("cannot save the snapshot: {error}")
    SNAPSHOT_OPEN_FAILED = tr("cannot open the snapshot: {error}")

    # The page tables panel's last walk, on the backend that steps back.
    WALKS_NOT_TRACED = tr("walks are not traced here (--backend sim): see the tooltip")
    WALKS_NOT_TRACED_TIP = (tr("A step back replays the run with the events numbered as they were; the "
                            "per-access MMU events (walk_step, tlb_miss, tlb_hit) would change that "
                            "numbering, so the window does not listen to them on the simulated "
                            "backend (--backend bare shows each walk)."))

    # The VMCS panel, while the vCPU is out of the guest (VMX root: kvm.ko or QEMU has it): the
    # note, and its tooltip with the whole story.
    VMCS_OUT_OF_GUEST = (tr("vCPU out of the guest: its state stays in this VMCS; QEMU sees only "
                         "copies (KVM_GET_REGS / KVM_GET_SREGS)"))
    VMCS_OUT_OF_GUEST_TIP = (tr("Between a VM exit and the next VM entry the guest's RIP, RSP, RFLAGS, "
                             "control and segment registers stay in the VMCS's guest-state area (its "
                             "general registers in kvm.ko's vcpu->arch.regs). QEMU never reads the "
                             "VMCS: cpu_synchronize_state asks kvm.ko for copies with KVM_GET_REGS and "
                             "KVM_GET_SREGS, and writes changes back with KVM_SET_*."))
    return {k: v for k, v in locals().items() if k.isupper()}


_cache: tuple[int, dict[str, Any]] = (-1, {})


def words() -> dict[str, Any]:
    """Every word of this module in the current language."""
    global _cache
    if _cache[0] != i18n.generation():
        _cache = (i18n.generation(), _words())
    return _cache[1]


def __getattr__(name: str) -> Any:
    try:
        return words()[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def event_breakpoint_name(spec: str) -> str:
    """The words for one Breakpoints.events spec (a part of an EVENT_BREAKPOINTS key)."""
    return next((name for key, name in words()["EVENT_BREAKPOINTS"].items() if spec in key.split("|")), spec)
