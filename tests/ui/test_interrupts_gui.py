"""Issue 10 in the GUI: one vCPU box and one vCPU-thread box per vCPU, the interrupt
controllers in kvm.ko or in QEMU, the Interrupts and vCPUs & threads panels against the
session's own views, and the interrupt-injected and BQL-contended breakpoints. Runs are
driven to breakpoints and to their end, never timed (qtbot.waitUntil only bounds a hang)."""

from __future__ import annotations

import pytest

from tests.ui.conftest import ROOT

TIMER = ROOT / "sample_guests" / "timer.asm"
WAIT = 120_000  # ms: a bound on a hang, not a timing (a loaded machine is slow)

# Two vCPUs doing port I/O to a port nobody claims (0x80): each OUT is an exit to QEMU,
# which takes the BQL for it; vCPU 0 then leaves through isa-debug-exit, vCPU 1 halts.
PIO_GUEST = """\
bits 32
org 0x100000
start:
        mov eax, 1
        cpuid
        shr ebx, 24                 ; initial APIC ID: which vCPU this is
        mov ecx, 200
.loop:  out 0x80, al
        loop .loop
        test ebx, ebx
        jnz .park
        mov dx, 0x501
        mov al, 0
        out dx, al
.park:  cli
        hlt
        jmp .park
"""


def _run_until_stopped(b, qtbot) -> None:
    b.run()
    qtbot.waitUntil(lambda: not b.running, timeout=WAIT)


def _show(win, panel: str) -> None:
    """Raise a dock and repaint: a panel behind another tab is not refreshed."""
    win.raise_panel("", panel)
    win.refresh()


# -- the diagram ------------------------------------------------------------------------------
@pytest.mark.parametrize("irqchip", ["kernel", "userspace"])
def test_layouts_for_one_to_eight_vcpus(irqchip: str) -> None:
    from ui.layout import load_layout
    from vmsim.events import CATALOGUE

    for smp in range(1, 9):
        L = load_layout(smp=smp, irqchip=irqchip)
        layers = {layer["id"]: layer["rect"] for layer in L.layers}
        for prefix, layer in (("guest.vcpu", "guest"), ("qemu.vcpu_thread", "vmm")):
            ids = L.vcpu_boxes(prefix)
            assert ids == [f"{prefix}{n}" for n in range(smp)]
            assert f"{prefix}{smp}" not in L.boxes
            lx, ly, lw, lh = layers[layer]
            rects = [L.boxes[i].rect for i in ids]
            for x, y, w, h in rects:  # inside its layer, big enough for a title
                assert lx <= x and x + w <= lx + lw and ly <= y and y + h <= ly + lh
                assert w >= 80 and h >= 40
            for i, a in enumerate(rects):  # no two overlap
                for b in rects[i + 1:]:
                    assert (a[0] + a[2] <= b[0] or b[0] + b[2] <= a[0]
                            or a[1] + a[3] <= b[1] or b[1] + b[3] <= a[1])
        # The irqchip's boxes: in kvm.ko (with the local APICs) or in QEMU (no APIC).
        in_kernel = {"kvm.pic", "kvm.pit", "kvm.lapic"}
        in_qemu = {"qemu.pic", "qemu.pit"}
        assert (in_kernel <= L.boxes.keys()) == (irqchip == "kernel")
        assert not (in_qemu & L.boxes.keys()) == (irqchip == "kernel")
        assert not (in_kernel & L.boxes.keys()) == (irqchip == "userspace")
        for rule in L.rules:
            assert rule.kind in CATALOGUE or rule.kind == "instruction", rule.kind


def test_events_of_vcpu_n_go_to_vcpu_n_boxes() -> None:
    from ui.layout import load_layout

    L = load_layout(smp=4)
    r = L.route("kvm_entry", "vcpu3", {})
    assert r.box == "guest.vcpu3" and r.path[-1] == "guest.vcpu3"
    r = L.route("kvm_userspace_exit", "vcpu2", {})
    assert r.box == "qemu.vcpu_thread2"
    r = L.route("qemu_cpu_kick", "vcpu1", {"cpu_index": 1, "why": "shutdown"})
    assert r.path == ("qemu.main_loop", "qemu.vcpu_thread1")
    # An IPI: fixed to APIC ID 2 (shorthand 00), to self (01); "all" has no one target.
    assert L.route("kvm_apic_ipi", "vcpu0", {"icr_low": 0x4041, "dest_id": 2}).path == (
        "guest.vcpu0", "kvm.lapic", "guest.vcpu2")
    assert L.route("kvm_apic_ipi", "vcpu1", {"icr_low": 0x40041, "dest_id": 0}).path == (
        "guest.vcpu1", "kvm.lapic", "guest.vcpu1")
    assert L.route("kvm_apic_ipi", "vcpu1", {"icr_low": 0xC0041, "dest_id": 0}).path == (
        "guest.vcpu1", "kvm.lapic")


def test_smp2_window_draws_two_vcpus_and_two_threads_and_animates_each(make_window) -> None:
    win = make_window(TIMER, smp=2)
    d = win.diagram
    assert [b for b in d.boxes if b.startswith("guest.vcpu")] == ["guest.vcpu0", "guest.vcpu1"]
    assert [b for b in d.boxes if b.startswith("qemu.vcpu_thread")] == [
        "qemu.vcpu_thread0", "qemu.vcpu_thread1"]
    assert win.bridge.session.machine.config.smp == 2
    assert len(win.bridge.session.vcpu_states()) == 2
    # Before the first step, vmsim's entry contract: ESP = 0x100000 - index * 0x10000.
    win.raise_panel("guest.vcpu1", "registers")
    win.refresh()
    assert win.registers.value_text("ESP") == f"{0x100000 - 0x10000:08X}"
    # Step events until vCPU 1's own events light vCPU 1's boxes (and never vCPU 0's).
    lit_by = {}
    for _ in range(400):
        win.a_step_event.trigger()
        box = d.active_box
        if box in ("guest.vcpu1", "qemu.vcpu_thread1", "guest.vcpu0", "qemu.vcpu_thread0"):
            ev = next(e for e in reversed(win.bridge.history)
                      if d.route(e.kind, e.source, e.fields) is not None)
            lit_by.setdefault(box, set()).add(ev.source)
        if {"guest.vcpu1", "qemu.vcpu_thread1"} <= lit_by.keys():
            break
    assert lit_by.get("guest.vcpu1") == {"vcpu1"}
    assert lit_by.get("qemu.vcpu_thread1") == {"vcpu1"}
    assert all(src == {"vcpu0"} for box, src in lit_by.items() if box.endswith("0"))
    # Each vCPU box shows that vCPU's EIP; clicking it shows that vCPU's registers.
    s = win.bridge.session
    for n in (1, 0):
        regs = s.registers(n)
        assert f"EIP {regs['EIP']:#010x}" in d.boxes[f"guest.vcpu{n}"].detail.text()
        win.raise_panel(f"guest.vcpu{n}", "registers")
        win.refresh()
        assert win.registers.cpu == n and win.registers.cpu_box.currentText() == f"vCPU{n}"
        for name in ("EIP", "ESP", "EAX", "EFLAGS"):
            assert win.registers.value_text(name) == f"{regs[name]:08X}", (n, name)


def test_toolbar_changes_vcpus_and_irqchip_and_restarts(make_window) -> None:
    win = make_window(TIMER)
    b = win.bridge
    win.a_step_event.trigger()
    win.smp_box.setValue(3)
    assert b.smp == 3 and b.session.machine.config.smp == 3
    assert b.session.instructions == 0  # the guest started again
    assert sorted(x for x in win.diagram.boxes if x.startswith("guest.vcpu")) == [
        "guest.vcpu0", "guest.vcpu1", "guest.vcpu2"]
    assert "kvm.pic" in win.diagram.boxes and "qemu.pic" not in win.diagram.boxes
    win.irqchip_box.setCurrentText("userspace")
    assert b.session.machine.config.irqchip == "userspace" and b.session.machine.config.smp == 3
    assert "qemu.pic" in win.diagram.boxes and "kvm.pic" not in win.diagram.boxes
    assert "3 vCPUs, irqchip userspace" in win.windowTitle()
    _show(win, "interrupts")
    assert "QEMU" in win.interrupts.where.text()
    assert not any(g.startswith("local APIC") for g, _ in win.interrupts.rows)
    win.smp_box.setValue(1)
    win.irqchip_box.setCurrentText("kernel")
    assert (b.smp, b.irqchip) == (1, "kernel")
    assert "kvm.lapic" in win.diagram.boxes and "guest.vcpu1" not in win.diagram.boxes


# -- the Interrupts panel against the session ------------------------------------------------------
PIC_ROWS = {"vector base": "irq_base", "IRR": "irr", "ISR": "isr", "IMR": "imr", "ELCR": "elcr"}
PIT_ROWS = {"mode": "mode", "reload": "reload", "counter": "counter", "out": "out", "gate": "gate"}
APIC_INT_ROWS = {"ID": "id", "TPR": "tpr", "PPR": "ppr", "initial count": "initial_count",
                 "current count": "current_count"}


def _check_interrupts_panel(win) -> dict:
    """Every number the Interrupts panel shows is the session's; returns the view."""
    s = win.bridge.session
    _show(win, "interrupts")
    ic = s.interrupt_controllers()
    p = win.interrupts
    groups = {g for g, _ in p.rows}
    for i, chip in enumerate(ic["pic"]):
        g = ("PIC master (0x20)", "PIC slave (0xA0)")[i]
        for row, key in PIC_ROWS.items():
            assert int(p.value_text(g, row), 16) == chip[key], (g, row)
    assert int(p.value_text("PIC master (0x20)", "INT output")) == ic["pic_output"]
    for n, ch in enumerate(ic["pit"]):
        g = f"PIT channel {n}"
        for row, key in PIT_ROWS.items():
            assert int(p.value_text(g, row)) == ch[key], (g, row)
        if n == 0:
            text = p.value_text(g, "next IRQ")
            assert (None if text == "-" else int(text)) == ch["next_irq"]
    for n, apic in enumerate(ic["apics"]):
        g = f"local APIC, vCPU {n}"
        for row, key in APIC_INT_ROWS.items():
            assert int(p.value_text(g, row), 0) == apic[key], (g, row)
        for row, key in (("IRR", "irr"), ("ISR", "isr")):
            text = p.value_text(g, row)
            assert ([] if text == "none" else [int(v, 16) for v in text.split()]) == apic[key]
        assert p.value_text(g, "timer").split()[0] == apic["lvt_timer"]["mode"]
        assert int(p.value_text(g, "timer").split()[1], 16) == apic["lvt_timer"]["vector"]
    expected = {"PIC master (0x20)", "PIC slave (0xA0)", *(f"PIT channel {n}" for n in range(3)),
                *(f"local APIC, vCPU {n}" for n in range(len(ic["apics"])))}
    assert groups == expected
    return ic


@pytest.mark.parametrize("irqchip", ["kernel", "userspace"])
def test_interrupts_panel_after_timer_guest_runs_to_its_end(make_window, qtbot, irqchip) -> None:
    win = make_window(TIMER, irqchip=irqchip)
    b = win.bridge
    b.run()
    qtbot.waitUntil(lambda: b.finished, timeout=WAIT)
    assert b.outcome.exit_status == 1
    assert "timer: 10 ticks, 10 of them woke the hlt" in win.devices.console.toPlainText()
    ic = _check_interrupts_panel(win)
    assert ic["irqchip"] == irqchip
    # What timer.asm programmed (ICW2 0x20 and 0x28; PIT channel 0 in mode 2 at 100 Hz:
    # 1193182 / 100 rounded), and that it masked IRQ 0 again after the tenth tick.
    master = win.interrupts
    assert master.value_text("PIC master (0x20)", "vector base") == "0x20"
    assert master.value_text("PIC slave (0xA0)", "vector base") == "0x28"
    assert master.value_text("PIC master (0x20)", "IMR") == "0xFF"
    assert master.value_text("PIT channel 0", "mode") == "2"
    assert master.value_text("PIT channel 0", "reload") == "11932"
    assert ("kvm.ko" if irqchip == "kernel" else "QEMU") in master.where.text()
    assert len(ic["apics"]) == (1 if irqchip == "kernel" else 0)


# -- breakpoints ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("irqchip", ["kernel", "userspace"])
def test_interrupt_injected_breakpoint_stops_timer_at_kvm_inj_virq(make_window, qtbot, irqchip) -> None:
    win = make_window(TIMER, irqchip=irqchip)
    b = win.bridge
    win.event_bp_actions["kvm_inj_virq"].trigger()  # Breakpoints > Break on interrupt injected
    assert b.session.breakpoints.events == {"kvm_inj_virq"}
    _run_until_stopped(b, qtbot)
    assert not b.finished
    ev = b.break_event
    assert ev is not None and ev.kind == "kvm_inj_virq" and ev.source == "vcpu0"
    # The run stopped in the step that injected: nothing exited the guest after it.
    after = list(b.history)[list(b.history).index(ev) + 1:]
    assert not [e for e in after if e.kind in ("kvm_exit", "kvm_inj_virq")]
    assert "interrupt injected" in win.status.text()
    # The vector is IRQ 0's: the master PIC's base, as the panel shows it now, with IRQ 0
    # in service and the IMR the guest set (only IRQ 0 unmasked).
    ic = _check_interrupts_panel(win)
    assert ev["irq"] == ic["pic"][0]["irq_base"] == 0x20
    assert win.interrupts.value_text("PIC master (0x20)", "IMR") == "0xFE"
    assert win.interrupts.value_text("PIC master (0x20)", "ISR") == "0x01"
    # The diagram draws the injection from the PIC, wherever it lives, into vCPU 0.
    if irqchip == "kernel":
        assert win.diagram.last_path == ("kvm.pic", "kvm.run_loop", "guest.vcpu0")
    else:
        assert win.diagram.last_path == ("qemu.pic", "qemu.vcpu_thread0", "kvm.run_loop",
                                         "guest.vcpu0")
    assert win.diagram.active_box == "guest.vcpu0"
    # Run on: the next tick stops it again; without the breakpoint it runs to its end.
    _run_until_stopped(b, qtbot)
    assert sum(1 for e in b.history if e.kind == "kvm_inj_virq") == 2
    win.event_bp_actions["kvm_inj_virq"].trigger()
    assert b.session.breakpoints.events == set()
    b.run()
    qtbot.waitUntil(lambda: b.finished, timeout=WAIT)
    assert "timer: 10 ticks" in win.devices.console.toPlainText()


@pytest.mark.parametrize("irqchip", ["kernel", "userspace"])
def test_bql_contended_breakpoint_stops_two_vcpus_doing_port_io(make_window, qtbot, tmp_path,
                                                                 irqchip) -> None:
    """smp.asm contends for the BQL only as the VM shuts down (its vCPUs never exit before
    vCPU 0 prints), after the run has ended: this guest's two vCPUs exit to QEMU for every
    OUT, so they meet at the BQL."""
    guest = tmp_path / "pio2.asm"
    guest.write_text(PIO_GUEST)
    win = make_window(guest, smp=2, irqchip=irqchip)
    b = win.bridge
    win.event_bp_actions["bql:action=wait"].trigger()
    _run_until_stopped(b, qtbot)
    assert not b.finished
    ev = b.break_event
    assert ev is not None and ev.kind == "bql" and ev["action"] == "wait"
    assert "BQL contended" in win.status.text()
    s = b.session
    th = s.threads()
    bql = th["bql"]
    # The session agrees: the waiter queues behind the holder the event names.
    assert bql["owner"] == ev["holder"] and ev.source in bql["waiters"]
    assert bql["contended"] >= 1
    _show(win, "vcpus")
    assert win.vcpus.bql.text() == (f"BQL: owner {bql['owner']}; waiters {', '.join(bql['waiters'])}; "
                                    f"contended {bql['contended']} times")
    # The threads table: every thread's virtual time and what it waits for.
    rows = {win.vcpus.threads.item(r, 0).text(): r for r in range(win.vcpus.threads.rowCount())}
    assert set(rows) == {t["name"] for t in th["threads"]}
    for t in th["threads"]:
        r = rows[t["name"]]
        assert int(win.vcpus.threads.item(r, 1).text()) == t["time"]
        assert win.vcpus.threads.item(r, 3).text() == (t["waiting"] or "-")
    assert win.vcpus.threads.item(rows[ev.source], 2).text() == "waiting"
    _check_vcpus_panel(win)
    # The diagram: the wait comes from the waiting thread's box into the BQL box, which
    # names the owner and the waiter.
    d = win.diagram
    assert d.active_box == "qemu.bql"
    src_box = "qemu.main_loop" if ev.source == "main-loop" else f"qemu.vcpu_thread{ev.source[-1]}"
    assert d.last_path == (src_box, "qemu.bql")
    detail = d.boxes["qemu.bql"].detail.text().replace("\n", " ")
    assert f"owner {bql['owner']}" in detail and ev.source in detail
    assert "qemu.bql" in d.lit


def _check_vcpus_panel(win) -> None:
    """The vCPUs & threads panel shows each vCPU's state as vcpu_states() has it."""
    _show(win, "vcpus")
    p = win.vcpus
    for d in win.bridge.session.vcpu_states():
        n = d["index"]
        assert p.vcpu_text(n, "thread") == d["thread"]
        assert p.vcpu_text(n, "mode") == d["mode"]
        assert p.vcpu_text(n, "mp_state") == d["mp_state"]
        assert p.vcpu_text(n, "window_exiting") == ("yes" if d["window_exiting"] else "no")
        assert int(p.vcpu_text(n, "request_interrupt_window")) == d["request_interrupt_window"]
        assert int(p.vcpu_text(n, "ready_for_interrupt_injection")) == d["ready_for_interrupt_injection"]
        assert int(p.vcpu_text(n, "if_flag")) == d["if_flag"]
        inj = p.vcpu_text(n, "injecting")
        assert (None if inj == "-" else int(inj, 16)) == d["injecting"]
        assert int(p.vcpu_text(n, "interruptibility"), 16) == d["interruptibility"]
        assert int(p.vcpu_text(n, "time")) == d["time"]
        for k, v in d["stat"].items():
            assert int(p.vcpu_text(n, f"stat.{k}")) == v


@pytest.mark.parametrize("irqchip", ["kernel", "userspace"])
def test_main_loop_box_lights_when_the_userspace_pit_fires(make_window, qtbot, irqchip) -> None:
    """In userspace mode the PIT is a QEMU timer: each tick runs in the main loop, whose box
    lights; in kernel mode kvm.ko's PIT ticks and the main loop sleeps between two ticks."""
    win = make_window(TIMER, irqchip=irqchip)
    b = win.bridge
    b.set_breakpoints(events={"kvm_inj_virq"})
    _run_until_stopped(b, qtbot)  # the first tick
    mark = b.history[-1].seq
    _run_until_stopped(b, qtbot)  # the second: what ran in between
    between = [e for e in b.history if e.seq > mark]
    timers = [e for e in between if e.kind == "qemu_timer"]
    lit = "qemu.main_loop" in win.diagram.lit
    if irqchip == "userspace":
        # QEMU's PIT timer runs at each OUT transition (mode 2: the fall and the rise).
        assert timers and {e["name"] for e in timers} == {"i8254"}
        assert lit  # it ran just now (microseconds of virtual time before the injection)
        assert "qemu.main_loop" in win.lit_boxes()
    else:
        assert not timers and not [e for e in between if e.source == "main-loop"]
        assert not lit and "qemu.main_loop" not in win.lit_boxes()
    # Through a tick event by event: the PIT's line, the kick, the injection, each drawn.
    b.set_breakpoints(events={"qemu_timer"} if irqchip == "userspace" else {"kvm_set_irq"})
    _run_until_stopped(b, qtbot)
    d = win.diagram
    if irqchip == "userspace":
        assert b.break_event["name"] == "i8254"
        assert d.last_path == ("qemu.main_loop", "qemu.pit")  # QEMU's timer runs the PIT
        assert "qemu.main_loop" in d.lit
        injection = ("qemu.pic", "qemu.vcpu_thread0", "kvm.run_loop", "guest.vcpu0")
    else:
        assert b.break_event["irq_source_id"] == 2  # KVM_PIT_IRQ_SOURCE_ID
        assert d.last_path == ("kvm.pit", "kvm.pic")  # kvm.ko's PIT raises IRQ 0
        injection = ("kvm.pic", "kvm.run_loop", "guest.vcpu0")
    b.set_breakpoints(events=set())
    paths = []
    for _ in range(300):
        win.a_step_event.trigger()
        paths.append(d.last_path)
        if d.last_path == injection:
            break
    assert injection in paths
    if irqchip == "userspace":  # QEMU kicked the vCPU thread from the PIC's INTR
        assert ("qemu.pic", "qemu.vcpu_thread0") in paths or any(
            e.kind == "qemu_cpu_kick" for e in b.history if e.seq > mark)


@pytest.mark.parametrize("args", [["--smp", "9"], ["--smp", "0"], ["--smp", "two"],
                                  ["--irqchip", "split"]])
def test_gui_machine_options_are_checked_before_qt(tmp_path, args) -> None:
    import os
    import subprocess
    import sys

    out = tmp_path / "shot.png"
    p = subprocess.run([sys.executable, "-m", "vmsim", "gui", str(TIMER), *args, "--screenshot",
                        str(out)], capture_output=True, timeout=120, cwd=ROOT,
                       env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 2 and "Traceback" not in err, err
    assert ("--smp" if args[0] == "--smp" else "--irqchip") in err.strip().splitlines()[-1]
    assert not out.exists()


def test_event_breakpoint_in_slow_motion_and_clear_all(make_window, qtbot, tmp_path) -> None:
    """Below full speed the run goes event by event (the diagram animates each); an event
    breakpoint stops it there too. Clear all breakpoints clears the event ones."""
    guest = tmp_path / "pio2.asm"
    guest.write_text(PIO_GUEST)
    win = make_window(guest, smp=2)
    b = win.bridge
    b.set_speed(9)  # the fastest slow motion: one event step per tick
    win.event_bp_actions["bql:action=wait"].trigger()
    _run_until_stopped(b, qtbot)
    assert b.break_event is not None and b.break_event.kind == "bql"
    assert b.break_event["action"] == "wait"
    assert b.break_event.source in b.session.threads()["bql"]["waiters"]
    assert win.diagram.active_box == "qemu.bql"
    win._bp_clear()
    assert b.session.breakpoints.events == set() and b.event_breakpoints == set()
    assert not any(a.isChecked() for a in win.event_bp_actions.values())


def test_userspace_tick_makes_the_vcpu_wait_for_the_main_loops_bql(make_window, qtbot) -> None:
    """The seed's story with --irqchip userspace: the main loop takes the BQL to run the PIT's
    timer, raises IRQ 0 and kicks vCPU 0, whose thread then waits for the BQL the main loop
    still holds. The BQL-contended breakpoint stops there."""
    win = make_window(TIMER, irqchip="userspace")
    b = win.bridge
    win.event_bp_actions["bql:action=wait"].trigger()
    prev = 0
    for _ in range(20):  # other waits first (the main loop and vCPU 0 starting up)
        _run_until_stopped(b, qtbot)
        assert not b.finished
        ev = b.break_event
        since = [e for e in b.history if prev < e.seq < ev.seq]
        if ev.source == "vcpu0" and ev["holder"] == "main-loop" \
                and any(e.kind == "qemu_timer" for e in since):
            break
        prev = ev.seq
    else:
        raise AssertionError("no PIT tick made vCPU 0 wait for the main loop's BQL")
    timer = max(i for i, e in enumerate(since) if e.kind == "qemu_timer")
    story = [e.kind for e in since[timer:]]
    assert since[timer]["name"] == "i8254"
    assert "qemu_set_irq" in story and "qemu_cpu_kick" in story
    assert b.session.threads()["bql"] == {"owner": "main-loop", "waiters": ["vcpu0"],
                                          "contended": b.session.threads()["bql"]["contended"]}
    assert win.diagram.last_path == ("qemu.vcpu_thread0", "qemu.bql")
    assert {"qemu.main_loop", "qemu.bql"} <= win.diagram.lit
    assert "waits: " in win.diagram.boxes["qemu.vcpu_thread0"].detail.text()
