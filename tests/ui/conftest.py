"""GUI tests run offscreen; they skip (with the reason) when PySide6, pytest-qt or a Qt
platform is not available."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "sample_guests" / "hello.asm"

_SKIP: str | None = None
try:
    import PySide6.QtWidgets  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the installation
    _SKIP = f"PySide6 is not importable: {e}"
if _SKIP is None:
    try:
        import pytestqt  # noqa: F401
    except ImportError:  # pragma: no cover
        _SKIP = "pytest-qt is not installed"
if _SKIP is None:
    # A missing platform plugin aborts the process (qFatal), so probe in a child.
    probe = subprocess.run([sys.executable, "-c", "from PySide6.QtWidgets import QApplication; "
                            "QApplication([])"], capture_output=True, timeout=60, env=os.environ)
    if probe.returncode != 0:  # pragma: no cover
        _SKIP = (f"no usable Qt platform ({os.environ['QT_QPA_PLATFORM']}): "
                 f"{probe.stderr.decode(errors='replace').strip()[-200:]}")


def pytest_collection_modifyitems(config, items):
    if _SKIP is None:
        return
    mark = pytest.mark.skip(reason=_SKIP)
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(mark)


@pytest.fixture
def window(qtbot):
    from ui.mainwindow import MainWindow

    win = MainWindow(str(HELLO), settings=None)
    win.diagram.animate = False
    qtbot.addWidget(win)
    win.resize(1400, 900)
    win.show()
    return win


@pytest.fixture
def make_window(qtbot):
    from ui.mainwindow import MainWindow

    def make(guest, **kw):
        win = MainWindow(str(guest), settings=None, **kw)
        win.diagram.animate = False
        qtbot.addWidget(win)
        win.resize(1400, 900)
        win.show()
        return win

    return make
