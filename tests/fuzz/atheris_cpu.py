"""Coverage-guided fuzzing of the CPU and the simulated KVM with atheris (libFuzzer).
Not run by pytest (optional dependency: `pip install -e '.[fuzz]'`); see docs/fuzzing.md.

    .venv/bin/python tests/fuzz/atheris_cpu.py CORPUS_DIR -max_total_time=600

The first input byte picks the backend, paging mode and RAM size; the rest is the guest
binary, loaded at 0x100000 and run through the session API with a 5 000-instruction
budget. An undocumented ending (a Python exception, a hang past the watchdog, MemoryError)
raises, and libFuzzer keeps the input as crash-*: minimize it with
`python -m tests.fuzz.minimize guest crash-... --backend ... --paging ... --memory ...`.
An empty CORPUS_DIR is filled with the assembled sample guests first. Do not pass
libFuzzer's -timeout: the harness has its own watchdog (SIGALRM).
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports(include=["vmsim"]):
    import vmsim.kvm.kvm_main
    import vmsim.session  # noqa: F401

from tests.fuzz.harness import Config, run_guest, sample_images

CONFIGS = [Config(b, p, m) for b, p in (("sim", "ept"), ("sim", "shadow"), ("bare", "ept"))
           for m in (2, 4, 16)]
MAX_INSTRUCTIONS = 5_000


class Finding(Exception):
    """An undocumented ending, raised so that libFuzzer records the input."""


def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    cfg = CONFIGS[data[0] % len(CONFIGS)]
    r = run_guest(data[1:], cfg, MAX_INSTRUCTIONS, seconds=15.0)
    if r.finding is not None:
        raise Finding(f"{cfg.name} --memory {cfg.memory}: {r.finding}")


def main() -> None:
    dirs = [Path(a) for a in sys.argv[1:] if not a.startswith("-")]
    if dirs and dirs[0].is_dir() and not any(dirs[0].iterdir()):
        for i, image in enumerate(sample_images()):
            (dirs[0] / f"sample{i}").write_bytes(bytes([i % len(CONFIGS)]) + image)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
