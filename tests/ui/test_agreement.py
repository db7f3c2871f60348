"""One source of truth (issue 13): at every stop, every panel's numbers are the session's.

At stops reached by a seeded random mix of the window's own actions (step event, to the
next VM exit, a run_for batch, step back one event) on hello.asm, paging.asm under
shadow paging and timer.asm with two vCPUs, each view is read as the user sees it and
compared with the session: Registers, the VMCS fields and last exit, the exit statistics
(rows and totals: the oracle is an ExitStats fed by the session's own event stream, as
`vmsim run --stats` counts, finished at the stop), the exits to userspace, the diagram's
vCPU and CPU boxes, the status bar, the page tables, the interrupts and vCPUs panels and
the disassembly's current line. Panels hidden in a tab are brought up one at a time (a
hidden panel may lag; shown, it must be current at once). A few dozen stops in all.

Also: every event kind the simulator emits in the sample guests has a place in the
diagram (a route) and a caption; F10 walks the exit round trip hop by hop.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.ui.conftest import ROOT

SAMPLES = ROOT / "sample_guests"
RIGHT_TABS = ("registers", "vmcs", "pagetables", "interrupts", "vcpus")
LEFT_TABS = ("source", "disasm")
CASES = {  # guest, window options, stops
    "hello": ("hello", {}, 14),
    "paging-shadow": ("paging", {"paging": "shadow"}, 12),
    "timer-smp2": ("timer", {"smp": 2}, 12),
}


class Oracle:
    """The exit statistics as `vmsim run --stats` counts them: an ExitStats over the
    session's events (ExitStats.KINDS) up to its present event; a step back drops the
    events it undid (Session.on_rewind), as a front end must."""

    def __init__(self, s):
        from vmsim.stats import ExitStats

        self.s = s
        self.events: list = []
        s.events.subscribe(self.events.append, list(ExitStats.KINDS))
        s.on_rewind.append(self._rewound)

    def _rewound(self, seq: int) -> None:
        while self.events and self.events[-1].seq > seq:
            self.events.pop()

    def stats(self):
        from vmsim.stats import ExitStats

        st = ExitStats()
        seq = self.s.events.seq
        for ev in self.events:
            if ev.seq <= seq:
                st._on_event(ev)
        st.finish(self.s.instructions, self.s.virtual_time)
        return st.as_dict()


def _shown(win, name: str) -> bool:
    return not win.docks[name].visibleRegion().isEmpty()


def check(win, where: str, only: set[str] | None = None) -> int:
    """Compare every visible panel (or those in `only`) with the session; returns how
    many panels were compared."""
    from ui.panels import _cell

    s = win.bridge.session
    regs = s.registers(0)
    checked = 0

    def want(name: str) -> bool:
        return (only is None and _shown(win, name)) or (only is not None and name in only)

    # The status bar (once the run ended it says why instead) and the diagram are always
    # in view.
    status = win.status.text()
    if not win.bridge.finished:
        assert f"EIP {regs['EIP']:#010x}" in status, (where, status)
        assert f"| {s.instructions} instructions" in status and \
            f"virtual time {s.virtual_time} cycles" in status, (where, status)
    d = win.diagram_details
    for n in range(len(s.cpus)):
        r = s.registers(n)
        assert d[f"guest.vcpu{n}"].startswith(f"EIP {r['EIP']:#010x}  EAX {r['EAX']:#x}  "
                                              f"ESP {r['ESP']:#x}"), (where, n, d[f"guest.vcpu{n}"])
        shown = " ".join(win.diagram.boxes[f"guest.vcpu{n}"].detail.text().split())
        assert f"EIP {r['EIP']:#010x}" in shown, (where, shown)
    vmx = s.vm.cpus[0].vcpu.vmx
    assert d["hw.cpu"] == ("VMX non-root: running the guest" if vmx.guest_mode else
                           "VMX root: host (kvm.ko / QEMU)") + f"; CR0 {regs['CR0']:#x}", where
    # Exit statistics (a bottom dock, always in view here) against --stats' count.
    o = win.oracle.stats()
    assert win.bridge.stats.as_dict() == o, where
    t = win.stats.table
    rows = [(t.item(i, 0).text(), int(t.item(i, 2).text())) for i in range(t.rowCount())]
    assert rows == [(r["reason"], r["count"]) for r in o["vm_exits"]], (where, rows)
    summary = win.stats.summary.text()
    us = ", ".join(f"{k} {v}" for k, v in o["userspace_exits"].items()) or "none"
    assert summary.startswith(f"VM exits {o['vm_exits_total']}, VM entries {o['vm_entries']}; "
                              f"exits to userspace: {us}; guest instructions {s.instructions}; "
                              f"virtual time {s.virtual_time} cycles"), (where, summary)
    assert d["kvm.exit_handlers"] == "kvm_vmx_exit_handlers[]: " + (
        ", ".join(f"{r['reason']} {r['count']}" for r in o["vm_exits"][:3]) or "none yet"), where
    checked += 2
    if want("registers"):
        p = win.registers
        shown_regs = s.registers(p.cpu)
        for name, v in shown_regs.items():
            assert p.value_text(name) == f"{v:08X}", (where, name)
        assert p.value_text("icount") == str(s.instructions), where
        assert p.value_text("time") == str(s.virtual_time), where
        checked += 1
    if want("vmcs"):
        p = win.vmcs
        for _area, name, enc, value in s.vmcs_fields():
            assert p.items[enc].text(2) == f"{value:#x}", (where, name)
        ex = s.last_exit()
        label = p.exit_label.text()
        assert (label == "no VM exit yet") if ex is None else \
            label.startswith(f"last exit: {ex['reason']}, qualification {ex['qualification']:#x}"), \
            (where, label)
        checked += 1
    if want("pagetables"):
        tree = win.pagetables.guest
        pts = s.guest_page_tables()
        if not pts:
            assert tree.topLevelItemCount() == 1 and "CR0.PG=0" in tree.topLevelItem(0).text(0), where
        else:
            assert [tree.topLevelItem(i).text(1) for i in range(tree.topLevelItemCount())] == \
                [f"{pde:08X}" for _, pde, _ in pts], where
        checked += 1
    if want("interrupts"):
        p = win.interrupts
        groups = p.describe(s.interrupt_controllers(), s.virtual_time)
        assert p.rows == {(g, name): (value, meaning) for g, rows in groups
                          for name, value, meaning in rows}, where
        checked += 1
    if want("vcpus"):
        p = win.vcpus
        for n, st in enumerate(s.vcpu_states()):
            for key in ("mode", "mp_state", "thread", "waiting", "time"):
                if key in p.vcpu_rows:
                    assert p.vcpu_text(n, key) == _cell(st.get(key)), (where, n, key)
        checked += 1
    if want("disasm"):
        lines = win.disasm.disasm.toPlainText().splitlines()
        cur = [ln for ln in lines if ln.startswith("=>")]
        assert cur and int(cur[0].split()[1], 16) == regs["EIP"], (where, cur)
        checked += 1
    return checked


def _stop(win, qtbot, rng: random.Random) -> str:
    """One of the user's ways of moving; what it was."""
    b = win.bridge
    op = rng.choices(["event", "vmexit", "run_for", "back"], [6, 2, 1, 2])[0]
    if op == "event":
        for _ in range(rng.randrange(1, 12)):  # F10 a few times
            win.a_step_event.trigger()
    elif op == "vmexit":
        win.a_step_exit.trigger()
    elif op == "run_for":  # a batch, as Run's timer takes them (a fixed size here)
        b._step(lambda: b.session.run_for(None, instructions=rng.choice([50, 400, 3000])))
    elif win.a_back_event.isEnabled():
        for _ in range(rng.randrange(1, 4)):
            win.a_back_event.trigger()
    return op


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_panel_agrees_with_the_session_at_every_stop(make_window, qtbot, case: str) -> None:
    name, opts, stops = CASES[case]
    win = make_window(SAMPLES / f"{name}.asm", **opts)
    win.oracle = Oracle(win.bridge.session)
    qtbot.waitExposed(win)
    rng = random.Random(f"agreement {case}")
    assert check(win, f"{case}: start") >= 3
    compared = 0
    for i in range(stops):
        op = _stop(win, qtbot, rng)
        qtbot.wait(1)  # let Qt deliver what a real window would before the user looks
        where = f"{case}: stop {i} after {op}"
        compared += check(win, where)
        # A panel hidden in its tab while the run moved, brought up: current at once.
        tabs = RIGHT_TABS if i % 2 else LEFT_TABS
        hidden = [n for n in tabs if not _shown(win, n)]
        if hidden:
            name_ = rng.choice(hidden)
            win.docks[name_].raise_()
            compared += check(win, f"{where}, {name_} brought up", only={name_})
        if win.bridge.finished:
            break
    assert compared > stops


def test_after_the_end_the_counts_are_the_clis(window, qtbot) -> None:
    """hello.asm run to the end in the window: its exit statistics, its userspace count,
    the diagram's vCPU box and Registers say what `vmsim run --stats` says (the last
    exit, the isa-debug-exit write, never re-entered the guest and counts all the same)."""
    from vmsim.events import EventStream
    from vmsim.session import Session
    from vmsim.stats import ExitStats

    events = EventStream()
    cli = ExitStats()
    cli.attach(events)  # as vmsim/cli.py does, before the VM exists
    ref = Session(str(SAMPLES / "hello.asm"), events=events, history=False)
    ref.run()
    cli.finish(ref.instructions, ref.virtual_time)
    want = cli.as_dict()
    b = window.bridge
    window.oracle = Oracle(b.session)
    for _ in range(30):  # F10 through the start, then Run to the end
        window.a_step_event.trigger()
    b.run()
    qtbot.waitUntil(lambda: b.finished, timeout=60_000)
    got = b.stats.as_dict()
    assert got["vm_exits"] == want["vm_exits"] and got["vm_exits_total"] == want["vm_exits_total"]
    assert got["userspace_exits"] == want["userspace_exits"]
    assert got["vm_entries"] == want["vm_entries"]
    check(window, "hello: the end")
    assert window.registers.value_text("EIP") == f"{ref.registers()['EIP']:08X}"


def test_f10_walks_the_exit_round_trip_hop_by_hop(window) -> None:
    """Step event moves exactly one event, lights its box and names it in the caption:
    the first VM entry comes after KVM_RUN, and an OUT to COM1 goes guest -> VM exit ->
    kvm.ko's handler -> KVM_RUN returns -> QEMU's vCPU thread -> BQL -> the serial device
    -> BQL -> KVM_RUN -> VM entry, each its own step."""
    b = window.bridge
    boxes = []
    for _ in range(60):
        out = b.step_event()
        assert len(out.events) == 1
        ev = out.events[0]
        assert b.session.events.seq == ev.seq
        box = window.diagram.active_box
        caption = window.diagram.caption.text()
        assert box is not None and caption, ev.kind
        boxes.append((ev.kind, box, caption))
    kinds = [k for k, _, _ in boxes]
    first_entry = kinds.index("kvm_entry")
    ioctl = boxes[kinds.index("kvm_vcpu_ioctl")]
    assert kinds.index("kvm_vcpu_ioctl") < first_entry
    assert ioctl[1] == "kvm.run_loop" and ioctl[2].startswith("KVM_RUN"), ioctl
    # The first read of COM1's status port (IN from 0x3FD), from its VM exit to the
    # VM entry after it.
    at = kinds.index("device_access")
    start = max(i for i in range(at) if kinds[i] == "kvm_exit")
    end = kinds.index("kvm_entry", at) + 1
    assert [(k, box) for k, box, _ in boxes[start:end]] == [
        ("kvm_exit", "kvm.run_loop"),  # guest -> VMX -> kvm.ko
        ("kvm_handler", "kvm.exit_handlers"),  # handle_io
        ("kvm_userspace_exit", "qemu.vcpu_thread0"),  # KVM_RUN returns
        ("kvm_run_exit", "qemu.vcpu_thread0"),  # kvm_cpu_exec
        ("bql", "qemu.bql"),  # lock
        ("device_access", "qemu.serial"),
        ("bql", "qemu.bql"),  # unlock
        ("kvm_vcpu_ioctl", "kvm.run_loop"),  # KVM_RUN entered again
        ("kvm_handler", "kvm.run_loop"),  # complete_userspace_io
        ("kvm_pio", "kvm.exit_handlers"),
        ("kvm_signal_check", "kvm.run_loop"),
        ("kvm_entry", "guest.vcpu0")]  # VM entry
    captions = [c for _, _, c in boxes[start:end]]
    assert captions[0].startswith("VM exit IO_INSTRUCTION (30) at 0x"), captions
    assert captions[4] == "BQL lock" and captions[6] == "BQL unlock", captions
    assert captions[5].startswith("device_access: port 0x3fd"), captions


# Guests and machines whose runs show the kinds of events the simulator emits.
# (Each adds kinds or sources the others lack; apic's second vCPU stands for every smp.)
KIND_CASES = [("hello", {}, "ept"), ("paging", {}, "shadow"),
              ("timer", {"irqchip": "userspace"}, "ept"), ("apic", {"smp": 2}, "ept"),
              ("virtio_blk", {"disk": True}, "ept"),
              ("virtio_blk", {"disk": True, "irqchip": "userspace", "ioeventfd": False}, "ept"),
              ("virtio_blk", {}, "ept"), ("exceptions", {}, "ept"), ("hypercall", {}, "ept"),
              ("ports", {}, "ept")]


def test_every_event_kind_has_a_route_and_a_caption(tmp_path: Path) -> None:
    from ui.layout import load_layout
    from ui.mainwindow import _caption
    from vmsim.history import HISTORY_KINDS
    from vmsim.session import Session
    from vmsim.vmm.machine import MachineConfig

    seen_kinds: set[str] = set()
    for name, opts, paging in KIND_CASES:
        o = dict(opts)
        if o.pop("disk", False):
            disk = tmp_path / "disk.img"
            disk.write_bytes(bytes(64 * 512))
            o["disk"] = str(disk)
        s = Session(str(SAMPLES / f"{name}.asm"), config=MachineConfig(**o), paging=paging,
                    history=False, max_instructions=30_000)
        first: dict = {}
        s.events.subscribe(lambda ev, first=first: first.setdefault((ev.kind, ev.source), ev),
                           HISTORY_KINDS)
        s.run()
        s.machine.close()
        layout = load_layout(smp=o.get("smp", 1), irqchip=o.get("irqchip", "kernel"))
        for (kind, source), ev in first.items():
            rule = layout.route(kind, source, dict(ev.fields))
            assert rule is not None and rule.box in layout.boxes, (name, o, kind, source)
            assert _caption(ev) and _caption(ev) != kind, (kind, source)
        seen_kinds |= {k for k, _ in first}
    assert len(seen_kinds) > 60, sorted(seen_kinds)
