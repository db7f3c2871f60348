"""Random assembler sources (asm_fuzz.py's grammar): bytes or one AsmError at the
file:line:col of a real line; never another exception, a hang or gigabytes of memory.
A sample also goes through `vmsim asm` in a subprocess."""

from __future__ import annotations

import random
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed

from tests.fuzz.asm_fuzz import SOURCES, check_source
from tests.fuzz.budget import Budget, scratch
from tests.fuzz.harness import ASM_STATUSES, check_cli, run_cli
from tests.fuzz.known import Tally

ASM_CLI_TIMEOUT = 90.0  # wall seconds; a spinning child meets its CPU limit first


def _settings(budget: Budget, examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, database=None,
                    derandomize=not budget.soak, print_blob=True,
                    suppress_health_check=list(HealthCheck))


def test_random_sources_in_process(findings_dir: Path) -> None:
    budget = Budget.from_env(ci_count=150)
    tally = Tally("asm")
    batch = min(budget.count, 500)
    rounds = 0
    for _ in budget.inputs():
        # hypothesis draws `batch` sources per round; a soak runs rounds until its count
        # or its seconds are spent
        if rounds * batch >= budget.count:
            break

        @hypothesis_seed(budget.seed + rounds)
        @_settings(budget, batch)
        @given(SOURCES)
        def one(source: str) -> None:
            tally.inputs += 1
            f = check_source(source)
            if f is None:
                return
            p = findings_dir / f"asm-{budget.seed}-{tally.inputs}.asm"
            p.write_text(source, encoding="utf-8", errors="surrogateescape")
            tally.add(f, "assemble()", f"python -m tests.fuzz.minimize asm {p}")

        one()
        rounds += 1
    tally.finish()


def test_random_sources_through_the_command(tmp_path: Path, findings_dir: Path) -> None:
    """A few sources through `vmsim asm`: the CLI's own reading and writing around the
    assembler; one line on stderr, a status of vmsim.asm.cli.ASM_STATUSES."""
    budget = Budget.from_env(ci_count=4)
    rng = random.Random(budget.seed)
    tally = Tally("asm")
    sources: list[str] = []

    @hypothesis_seed(budget.seed)
    @_settings(budget, 40)
    @given(SOURCES)
    def collect(source: str) -> None:
        sources.append(source)

    collect()
    for i in budget.inputs():
        if not sources:
            collect()
        source = sources.pop(rng.randrange(len(sources)))
        with scratch(tmp_path, i) as tmp:
            src = tmp / f"s{i}.asm"
            src.write_text(source, encoding="utf-8", errors="surrogateescape")
            res = run_cli(["asm", str(src), "-o", str(tmp / f"s{i}.bin"),
                           "-l", str(tmp / f"s{i}.lst")], ASM_CLI_TIMEOUT)
        tally.inputs += 1
        f = check_cli(res, ASM_STATUSES, ASM_CLI_TIMEOUT)
        if f is not None:
            p = findings_dir / f"asm-cli-{budget.seed}-{i}.asm"
            p.write_text(source, encoding="utf-8", errors="surrogateescape")
            tally.add(f, "vmsim asm", f"vmsim asm {p}")
    tally.finish()
