"""Style checks run as tests: ruff over the whole tree, and the layering of DESIGN.md."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# DESIGN.md: imports point downwards only. A package may import those listed for it.
_BOTTOM = {"vmsim.events", "vmsim.clock", "vmsim.costs", "vmsim.state", "vmsim.msr_index"}
ALLOWED = {
    "vmsim.events": set(),
    "vmsim.msr_index": set(),
    "vmsim.state": set(),
    "vmsim.clock": set(),
    "vmsim.costs": set(),
    "vmsim.asm": set(),
    "vmsim.hw": _BOTTOM,
    "vmsim.kvm.api": {"vmsim.msr_index"},
    # What Linux's emulator refuses: a fact of KVM both backends word their stops by.
    "vmsim.kvm.refused": set(),
    "vmsim.kvm": _BOTTOM | {"vmsim.hw", "vmsim.kvm.api", "vmsim.kvm.refused"},
    "vmsim.hostkvm": _BOTTOM | {"vmsim.kvm.api", "vmsim.kvm.refused"},
    # The VMM reaches KVM only through the API module (and uses hw's memory model). It
    # declares its state's section types as QEMU's devices declare VMStateDescriptions
    # (vmsim.vmm.savevm), from the format module, which knows nothing of the machine.
    "vmsim.vmm": _BOTTOM | {"vmsim.hw", "vmsim.asm", "vmsim.kvm.api", "vmsim.snapshot_format"},
    "vmsim.bare": _BOTTOM | {"vmsim.hw", "vmsim.vmm", "vmsim.asm"},
}


def _ruff() -> list[str] | None:
    """The ruff installed beside this Python (the project's pinned one), else any on PATH."""
    local = Path(sys.executable).parent / "ruff"
    if local.exists():
        return [str(local)]
    exe = shutil.which("ruff")
    return [exe] if exe else None


def test_ruff_clean() -> None:
    ruff = _ruff()
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    proc = subprocess.run([*ruff, "check", "--quiet", str(ROOT)], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _package_of(module: str) -> str | None:
    for pkg in sorted(ALLOWED, key=len, reverse=True):
        if module == pkg or module.startswith(pkg + "."):
            return pkg
    return None


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_core_never_imports_qt() -> None:
    for path in (ROOT / "vmsim").rglob("*.py"):
        for mod in _imports(path):
            assert not mod.startswith(("PySide6", "PyQt", "ui")), f"{path} imports {mod}"


def test_imports_point_down() -> None:
    for path in (ROOT / "vmsim").rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        pkg = _package_of(module)
        if pkg is None:
            continue
        for imported in _imports(path):
            target = _package_of(imported)
            if target is None or target == pkg:
                continue
            assert target in ALLOWED[pkg], f"{module} imports {imported}: {pkg} may not use {target}"
