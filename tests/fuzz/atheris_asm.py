"""Coverage-guided fuzzing of the assembler with atheris (libFuzzer). Not run by pytest
(optional dependency: `pip install -e '.[fuzz]'`); see docs/fuzzing.md.

    .venv/bin/python tests/fuzz/atheris_asm.py CORPUS_DIR -max_total_time=600

The input, as UTF-8 text, is one source file. The property is asm_fuzz.check_source's:
bytes, or an AsmError at the file:line:col of a line with code on it; anything else
raises and libFuzzer keeps the input as crash-* (`python -m tests.fuzz.minimize asm
crash-...`). An empty CORPUS_DIR is filled with the sample guests' sources first. Do not
pass libFuzzer's -timeout: the harness has its own watchdog (SIGALRM).
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports(include=["vmsim"]):
    import vmsim.asm.assembler  # noqa: F401  (imported here to be instrumented)

from tests.fuzz.asm_fuzz import check_source
from tests.fuzz.harness import SAMPLES


class Finding(Exception):
    """An undocumented ending, raised so that libFuzzer records the input."""


def test_one_input(data: bytes) -> None:
    source = data.decode("utf-8", errors="replace")
    f = check_source(source, seconds=10.0)
    if f is not None:
        raise Finding(str(f))


def main() -> None:
    dirs = [Path(a) for a in sys.argv[1:] if not a.startswith("-")]
    if dirs and dirs[0].is_dir() and not any(dirs[0].iterdir()):
        for p in sorted(SAMPLES.glob("*.asm")):
            (dirs[0] / p.name).write_bytes(p.read_bytes())
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
