"""The side-by-side window (ui/compare.py, `vmsim gui --compare`): each side's numbers equal
a headless Session's with that side's configuration at the same point (the same number of
VM exits taken), the difference is said right, stepping keeps both sides at the same VM
exit count, reset starts both again. Runs go to their end or to a count of exits, never
timed (qtbot.waitUntil only bounds a hang)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.ui.conftest import HELLO, ROOT

WAIT = 120_000  # ms: a bound on a hang, not a timing


def headless(mode: str, side: int, exits: int | None, disk: str | None = None) -> dict:
    """A Session with side `side`'s configuration of `mode` (its default guest), stepped to
    its `exits`-th VM exit (None: run to the end): the numbers a column shows."""
    from ui.compare import MODES, SAMPLES
    from vmsim.events import EventStream
    from vmsim.session import Session
    from vmsim.stats import ExitStats
    from vmsim.vmm.machine import MachineConfig

    m = MODES[mode]
    kw = {"paging": "ept", "irqchip": "kernel", "ioeventfd": True, "coalesced_mmio": True,
          **(m.left, m.right)[side]}
    events = EventStream()
    stats = ExitStats()
    stats.attach(events)
    injections = []
    events.subscribe(lambda ev: injections.append(ev) if ev.fields.get("name") == "KVM_INTERRUPT"
                     else None, ["kvm_vcpu_ioctl"])
    s = Session(str(SAMPLES / m.guest), "sim",
                MachineConfig(irqchip=kw["irqchip"], ioeventfd=kw["ioeventfd"], disk=disk,
                              coalesced_mmio=kw["coalesced_mmio"]),
                events=events, paging=kw["paging"], history=False)
    if exits is None:
        s.run()
    else:
        for _ in range(exits):
            assert not s.step_vmexit().finished
    stats.finish(s.instructions, s.virtual_time)  # as --stats, and every view, count an exit in flight
    d = stats.as_dict()
    s.machine.close()
    return {"exits": {r["reason"]: r["count"] for r in d["vm_exits"]}, "total": d["vm_exits_total"],
            "userspace": d["userspace_exits"], "injections": len(injections),
            "instructions": s.instructions, "time": s.virtual_time}


def check_side(col, want: dict) -> None:
    """The column's numbers and its Exit statistics panel equal the headless session's."""
    got = col.counts()
    for key in ("exits", "total", "userspace", "injections", "instructions", "time"):
        assert got[key] == want[key], key
    t = col.stats.table
    rows = {t.item(i, 0).text(): int(t.item(i, 2).text()) for i in range(t.rowCount())}
    assert rows == want["exits"]


@pytest.fixture
def compare(qtbot):
    from ui.compare import CompareWindow

    def make(mode: str, **kw):
        win = CompareWindow(mode, **kw)
        qtbot.addWidget(win)
        win.show()
        return win

    return make


def _run_to_end(win, qtbot) -> None:
    win.a_run.trigger()
    qtbot.waitUntil(lambda: win.finished, timeout=WAIT)
    assert not win.running


def test_paging_sides_equal_headless_sessions_step_run_and_reset(compare, qtbot) -> None:
    from ui.compare import difference_text

    win = compare("paging")
    assert win.left.panel.host.headerItem().text(0).startswith("EPT")  # EPT leaves beside the guest's tables
    # Stepping: both at their 40th, then (Step of 10) 50th VM exit.
    win.step_exits(40)
    assert win.left.counter.exits == win.right.counter.exits == 40
    win.step_box.setCurrentIndex(1)
    win.a_step.trigger()
    assert win.left.counter.exits == win.right.counter.exits == 50
    left, right = headless("paging", 0, 50), headless("paging", 1, 50)
    check_side(win.left, left)
    check_side(win.right, right)
    assert win.right.panel.host.headerItem().text(0).startswith("shadow pages")
    assert win.diff.text() == difference_text("paging", left, right)
    first = win.diff.text().splitlines()[0]
    assert f"{left['total']} VM exits, {left['instructions']} guest instructions" in first
    # Run to the end: the whole run's difference.
    _run_to_end(win, qtbot)
    left, right = headless("paging", 0, None), headless("paging", 1, None)
    check_side(win.left, left)
    check_side(win.right, right)
    n = right["total"] - left["total"]
    assert n > 0  # shadow paging costs exits: CR3 loads, page faults, INVLPG
    lines = win.diff.text().splitlines()
    assert lines[0] == (f"Both ran the guest to its end. shadow paging (--paging shadow): {n} more VM "
                        f"exits than EPT (--paging ept) ({right['total']} against {left['total']}).")
    more = lines[1]
    for reason in ("CR_ACCESS", "EXCEPTION_NMI", "INVLPG"):
        assert f"{reason} +{right['exits'][reason] - left['exits'].get(reason, 0)}" in more
    assert f"EPT_VIOLATION -{left['exits']['EPT_VIOLATION']}" in lines[2]
    # Reset: both from the start, and stepping again agrees.
    win.a_reset.trigger()
    assert [c.bridge.session.instructions for c in win.sides] == [0, 0]
    assert [c.counts()["total"] for c in win.sides] == [0, 0]
    win.step_exits(3)
    check_side(win.left, headless("paging", 0, 3))
    check_side(win.right, headless("paging", 1, 3))


def test_irqchip_userspace_exits_and_injections(compare, qtbot) -> None:
    win = compare("irqchip")
    win.a_run.trigger()  # Run, then Pause midway: both sides at the same count of VM exits
    qtbot.waitUntil(lambda: win.left.counter.exits > 100 or win.finished, timeout=WAIT)
    win.a_run.trigger()
    assert not win.running and not win.finished
    assert win.left.counter.exits == win.right.counter.exits
    check_side(win.right, headless("irqchip", 1, win.right.counter.exits))
    _run_to_end(win, qtbot)
    left, right = headless("irqchip", 0, None), headless("irqchip", 1, None)
    check_side(win.left, left)
    check_side(win.right, right)
    assert (left["injections"], right["injections"]) == (0, 10)  # timer.asm's ten ticks
    lu, ru = sum(left["userspace"].values()), sum(right["userspace"].values())
    assert ru > lu
    assert win.diff.text().splitlines()[-1] == (
        f"Exits to userspace (KVM_RUN returns): {ru} against {lu}; KVM_INTERRUPT injections by "
        f"QEMU: 10 against 0.")


def test_ioeventfd_mmio_exits_on_the_kick(compare, tmp_path) -> None:
    from ui.compare import default_disk

    win = compare("ioeventfd")
    assert win.disks[0] != win.disks[1]  # each side writes to its own copy
    win.step_exits(700)  # past the first requests' kicks
    assert win.left.counter.exits == win.right.counter.exits == 700
    disk = default_disk(str(tmp_path))
    left, right = headless("ioeventfd", 0, 700, disk), headless("ioeventfd", 1, 700, disk)
    check_side(win.left, left)
    check_side(win.right, right)
    lm, rm = left["userspace"].get("KVM_EXIT_MMIO", 0), right["userspace"].get("KVM_EXIT_MMIO", 0)
    assert rm > lm  # each kick is an MMIO exit to QEMU without the ioeventfd
    assert win.diff.text().splitlines()[-1].startswith(
        f"MMIO exits to QEMU (KVM_EXIT_MMIO): {rm} against {lm};")


def test_coalesced_mmio_takes_the_same_vm_exits_and_fewer_trips_to_qemu(compare, qtbot) -> None:
    win = compare("coalesced")
    _run_to_end(win, qtbot)
    left, right = headless("coalesced", 0, None), headless("coalesced", 1, None)
    check_side(win.left, left)
    check_side(win.right, right)
    # Left the default (coalesced), right --no-coalesced-mmio. Every store exits either
    # way (EPT_MISCONFIG), but with coalescing a REP STOSW or MOVSW over the screen runs on
    # in kvm.ko's emulator where it goes back to the guest after each element's trip to
    # QEMU: fewer VM exits on the left, and no other reason moves.
    assert left["exits"]["EPT_MISCONFIG"] < right["exits"]["EPT_MISCONFIG"]
    assert {**left["exits"], "EPT_MISCONFIG": 0} == {**right["exits"], "EPT_MISCONFIG": 0}
    lm, rm = left["userspace"]["KVM_EXIT_MMIO"], right["userspace"]["KVM_EXIT_MMIO"]
    assert lm < rm
    assert win.diff.text().splitlines()[-1].startswith(
        f"MMIO exits to QEMU (KVM_EXIT_MMIO): {rm} against {lm};")
    # Both screens show what the guest wrote, the left one through its ring's queue.
    assert win.left.panel.vga.text() == win.right.panel.vga.text() != ""
    assert win.left.panel.ring.isVisible() and not win.right.panel.ring.isVisible()


def test_view_compare_opens_on_the_windows_guest(window, qtbot, monkeypatch) -> None:
    from PySide6.QtWidgets import QInputDialog

    from ui.compare import CompareWindow, mode_titles

    monkeypatch.setattr(QInputDialog, "getItem",
                        staticmethod(lambda *a, **k: (mode_titles()["irqchip"], True)))
    window.a_compare.trigger()
    wins = window.findChildren(CompareWindow)
    assert len(wins) == 1
    win = wins[0]
    assert [c.bridge.irqchip for c in win.sides] == ["kernel", "userspace"]
    assert all(c.bridge.session.image.data == window.bridge.session.image.data for c in win.sides)
    win.step_exits(2)
    assert win.left.counter.exits == win.right.counter.exits == 2
    win.close()


def test_compare_screenshot_writes_a_png(tmp_path) -> None:
    out = tmp_path / "compare.png"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    r = subprocess.run([sys.executable, "-m", "vmsim", "gui", str(HELLO), "--compare", "paging",
                        "--screenshot", str(out), "--size", "1000x700", "--steps", "5"],
                       capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = subprocess.run([sys.executable, "-m", "vmsim", "gui", "--compare", "paging", "--paging", "shadow"],
                       capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert r.returncode == 2 and "--compare sets the compared option itself" in r.stderr
