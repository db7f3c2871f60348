"""Random programs from the integer subset, vmsim against unicorn in lock-step.

Default: a fixed set of programs (CI). `VMSIM_SOAK=20000 python -m pytest tests/diff -q`
runs 20000 fresh ones per property instead (see README.md).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from tests.diff.conftest import SOAK
from tests.diff.gen import programs
from tests.diff.harness import Pair

EXAMPLES = SOAK or 1500

# Reporting a failure makes hypothesis import libcst (to suggest an @example patch), which
# trips a DeprecationWarning from mypy_extensions; with warnings as errors that would hide
# the divergence behind an INTERNALERROR.
pytestmark = pytest.mark.filterwarnings(
    "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning")


@settings(settings.get_profile("vmsim-diff"), max_examples=EXAMPLES)
@given(programs())
def test_random_programs_match_unicorn(program):
    Pair(program.code, program.start).run(max_steps=400)
