"""Shared fixtures: NASM is the oracle; tests that need it skip cleanly without it."""

from __future__ import annotations

import pytest

from tests.asm.oracle import NASM


@pytest.fixture
def nasm() -> str:
    if NASM is None:
        pytest.skip("nasm is not on PATH (needed as the reference assembler)")
    return NASM
