"""An exit makes no import statement once the run is going (issue 15).

An import statement of a module already loaded still costs about a microsecond (a CR
exit under shadow paging ran two, in MOV CR's intercepted stop and in kvm_main's
guest_cr0: 3% of a context switch). Function-level imports are how this code base keeps
start-up short and breaks import cycles, so a new one can land on a hot path unseen. Each
run here is made at two lengths after a run that imported what it needs; no import
statement may be run more often in the longer one, counted where Python runs them
(builtins.__import__), whatever the machine's speed.
"""

from __future__ import annotations

import builtins
import io
import re
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from vmsim.asm import assemble
from vmsim.events import EventStream
from vmsim.session import Session
from vmsim.trace import TraceWriter
from vmsim.vmm.machine import MachineConfig

ROOT = Path(__file__).resolve().parents[2]
# (guest, its count's equ, short and long counts)
GUESTS = {
    "out_loop": (ROOT / "benchmarks" / "guests" / "out_loop.asm", "COUNT", 20, 40),
    "mmio_loop": (ROOT / "benchmarks" / "guests" / "mmio_loop.asm", "COUNT", 20, 40),
    "address_spaces": (ROOT / "sample_guests" / "address_spaces.asm", "ROUNDS", 4, 8),
    "timer": (ROOT / "sample_guests" / "timer.asm", "TICKS", 2, 4),
}


def _image(name: str, count: int):
    path, equ, _short, _long = GUESTS[name]
    src = path.read_text()
    text, n = re.subn(rf"^({equ}\s+equ\s+)\d+", lambda m: f"{m.group(1)}{count}", src,
                      flags=re.M)
    assert n == 1, f"{path.name}: no `{equ} equ N` line"
    return assemble(text, str(path))


def _run(name: str, count: int, paging: str, irqchip: str, how: str) -> None:
    events = EventStream()
    writer = TraceWriter(events, io.StringIO(), "vm") if how == "trace" else None
    s = Session(_image(name, count), "sim", MachineConfig(16, b"", irqchip=irqchip),
                serial_out=lambda b: None, events=events, paging=paging,
                history=how in ("history", "slices"))
    if how == "slices":
        while not s.run_for(None, instructions=500).finished:
            pass
    else:
        s.run()
    if writer is not None:
        writer.close()
    assert s.outcome is not None and s.outcome.exit_status == 1, s.outcome


def _imports(run: Callable[[], None], monkeypatch: pytest.MonkeyPatch) -> Counter:
    counted: Counter = Counter()
    real = builtins.__import__

    def counting(name, globals=None, locals=None, fromlist=(), level=0):
        code = sys._getframe(1).f_code
        counted[(code.co_filename, code.co_name, name)] += 1
        return real(name, globals, locals, fromlist, level)

    with monkeypatch.context() as m:
        m.setattr(builtins, "__import__", counting)
        run()
    return counted


@pytest.mark.parametrize(("name", "paging", "irqchip", "how"), [
    ("out_loop", "ept", "kernel", "run"),
    ("out_loop", "ept", "kernel", "trace"),
    ("out_loop", "ept", "kernel", "history"),
    ("out_loop", "ept", "kernel", "slices"),
    ("mmio_loop", "ept", "kernel", "trace"),
    ("address_spaces", "ept", "kernel", "run"),
    ("address_spaces", "shadow", "kernel", "trace"),
    ("timer", "ept", "kernel", "trace"),
    ("timer", "shadow", "userspace", "trace"),
])
def test_a_longer_run_makes_no_more_import_statements(name: str, paging: str, irqchip: str,
                                                      how: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _path, _equ, short, long = GUESTS[name]
    _run(name, short, paging, irqchip, how)  # what the run needs, imported
    few = _imports(lambda: _run(name, short, paging, irqchip, how), monkeypatch)
    more = _imports(lambda: _run(name, long, paging, irqchip, how), monkeypatch)
    grew = {k: (few[k], n) for k, n in more.items() if n > few[k]}
    assert not grew, f"import statements that grow with the run: {grew}"
