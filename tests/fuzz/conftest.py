"""Fixtures of the fuzz tests: where failing inputs are kept, and the soak switch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def findings_dir(tmp_path: Path) -> Path:
    """Where a failing input is written, for `python -m tests.fuzz.minimize`:
    VMSIM_FUZZ_OUT if set (a soak keeps them), else the test's tmp_path."""
    out = os.environ.get("VMSIM_FUZZ_OUT")
    if out:
        p = Path(out)
        p.mkdir(parents=True, exist_ok=True)
        return p
    return tmp_path


def pytest_report_header(config: pytest.Config) -> list[str]:
    keys = ("VMSIM_FUZZ", "VMSIM_FUZZ_SECONDS", "VMSIM_FUZZ_SEED", "VMSIM_FUZZ_OUT")
    set_ = [f"{k}={os.environ[k]}" for k in keys if os.environ.get(k)]
    return [f"vmsim fuzz soak: {' '.join(set_)}"] if set_ else []
