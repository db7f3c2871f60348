"""Hypothesis profile for the differential suite: fixed (derandomized), no example database.

`VMSIM_SOAK=N` raises the number of generated programs per property to N (see README.md).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

SOAK = int(os.environ.get("VMSIM_SOAK", "0") or 0)

settings.register_profile(
    "vmsim-diff",
    deadline=None,
    derandomize=not SOAK,  # CI: the same programs every run; soak: fresh ones
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.large_base_example],
)
