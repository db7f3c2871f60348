"""Findings the fixed-seed CI runs may meet while their fix is still being made.

A random test that meets only these is reported as xfailed (with the list), so CI stays
green and the finding stays visible in `pytest -ra`; anything else fails the test. Each
entry names the issue it belongs to: delete it when the fix lands (the test then fails
again if the bug comes back). Reproducers of each are in regressions/manifest.toml.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.fuzz.harness import Finding


@dataclass(frozen=True)
class Known:
    area: str  # "guest", "asm", "cli"
    symptom: str  # Finding.symptom, exactly
    reason: str
    where: str = ""  # a substring of the input's description (config name, arguments)


# Empty since the fixes of issue 8 landed (every run bounded by work; huge TIMES/RESB/ALIGN
# refused before allocating; nesting and convergence errors at their line). An entry
# looks like:
#   Known("guest", "hang", "issue N: what is being fixed", where="sim+shadow"),
KNOWN: tuple[Known, ...] = ()


def known(area: str, finding: Finding, description: str = "") -> Known | None:
    for k in KNOWN:
        if k.area == area and k.symptom == finding.symptom and k.where in description:
            return k
    return None


class Tally:
    """Findings of one test run: new ones fail it, known ones only make it xfail."""

    def __init__(self, area: str):
        import time

        self.started = time.monotonic()
        self.area = area
        self.new: list[str] = []
        self.known: dict[str, list[str]] = {}
        self.inputs = 0
        self.count: dict[str, int] = {}  # findings per symptom (only the first few are kept)

    def add(self, finding: Finding, description: str, reproduce: str) -> None:
        k = known(self.area, finding, description)
        n = self.count[finding.symptom] = self.count.get(finding.symptom, 0) + 1
        if n > 20:  # a broken build would otherwise list every input
            return
        line = f"{description}: {finding}\n    reproduce: {reproduce}"
        if k is None:
            self.new.append(line)
        else:
            self.known.setdefault(k.reason, []).append(line)

    def finish(self) -> None:
        import os
        import time

        import pytest

        test = os.environ.get("PYTEST_CURRENT_TEST", self.area).split(" ")[0]
        secs = time.monotonic() - self.started
        counts = ", ".join(f"{n} x {s}" for s, n in self.count.items()) or "no findings"
        line = f"{test}\t{self.inputs} inputs\t{secs:.0f} s\t{counts}"
        print(line)
        if os.environ.get("VMSIM_FUZZ_OUT"):  # a soak: one line per test, and every finding
            with open(os.path.join(os.environ["VMSIM_FUZZ_OUT"], "summary.txt"), "a") as f:
                f.write(line + "\n")
                for item in self.new:
                    f.write(f"  NEW {item}\n")
                for reason, items in self.known.items():
                    for item in items:
                        f.write(f"  KNOWN ({reason}) {item}\n")

        if self.new:
            pytest.fail(f"{len(self.new)} finding(s) in {self.inputs} inputs:\n"
                        + "\n".join(self.new[:10]), pytrace=False)
        if self.known:
            pytest.xfail("; ".join(f"{reason} ({len(v)} inputs, e.g. {v[0]})"
                                   for reason, v in self.known.items()))
