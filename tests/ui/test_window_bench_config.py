"""benchmarks/exit_bench.py's `window` configuration counts an exit as the window runs a
guest: it must listen to what the bridge listens to while running at full speed, each kind
by as many listeners (besides the history's own), or its figure says nothing of the window."""

from __future__ import annotations

import sys

from tests.ui.conftest import HELLO, ROOT


def _heard(events) -> dict[str, int]:
    return {k: len(events._deliver[k][1]) for k in sorted(events._heard)}


def test_the_window_configuration_listens_as_the_running_window(qtbot) -> None:
    from ui.bridge import SPEED_MAX, SessionBridge
    from vmsim.events import EventStream
    from vmsim.session import Session

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import exit_bench
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    bridge = SessionBridge(str(HELLO))
    bridge.set_speed(SPEED_MAX)
    bridge.run()
    try:
        window = _heard(bridge.session.events)
    finally:
        bridge.pause()
    events, kept = EventStream(), []
    exit_bench.window_listeners(events, kept, built=False)
    Session(str(HELLO), events=events)
    exit_bench.window_listeners(events, kept, built=True)
    assert window["kvm_exit"] == 3  # the statistics, the history, the coarse events
    assert _heard(events) == window
