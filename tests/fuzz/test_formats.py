"""Mutated trace, snapshot and lesson files against vmsim's readers (formats.py): each file
is loaded or refused with the reader's documented error, never anything else. Kinds with
no reader yet are skipped, naming what is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.budget import Budget, Hang, memory_cap, scratch, watchdog
from tests.fuzz.formats import FILE_KINDS, FileKind
from tests.fuzz.harness import Finding, _short_traceback
from tests.fuzz.known import Tally
from tests.fuzz.mutate import mutate_bytes, mutate_lines

READ_SECONDS = 20.0


def read_one(kind: FileKind, path: Path) -> Finding | None:
    assert kind.reader is not None
    try:
        with memory_cap(), watchdog(READ_SECONDS):
            kind.reader(path)
    except kind.errors as e:
        text = str(e)
        if "\n" in text.strip() or str(path) not in text:
            return Finding("error not one line naming the file", text[:300])
        return None
    except Hang:
        return Finding("hang", f"no result within {READ_SECONDS:g} s")
    except MemoryError as e:
        return Finding("MemoryError", _short_traceback(e))
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            raise
        return Finding(f"exception {type(e).__name__}", _short_traceback(e))
    return None


@pytest.mark.parametrize("kind", FILE_KINDS, ids=lambda k: k.name)
def test_mutated_files(kind: FileKind, tmp_path: Path, findings_dir: Path) -> None:
    if kind.reader is None or kind.make_valid is None:
        pytest.skip(f"{kind.name}: {kind.todo}")
    budget = Budget.from_env(ci_count=50)
    rng = budget.rng(f"formats:{kind.name}")
    seeds = kind.make_valid()
    tally = Tally(kind.name)
    pool = [ln for s in seeds for ln in s.decode(errors="replace").splitlines()[:200]]
    for i in budget.inputs():
        if kind.binary:
            data = mutate_bytes(rng, seeds)
        else:
            text = rng.choice(seeds).decode(errors="replace")
            data = "\n".join(mutate_lines(rng, text.splitlines(), pool)).encode()
        with scratch(tmp_path, i) as tmp:
            path = tmp / f"f{i}{kind.suffix}"
            path.write_bytes(data)
            f = read_one(kind, path)
        tally.inputs += 1
        if f is not None:
            keep = findings_dir / f"{kind.name}-{budget.seed}-{i}{kind.suffix}"
            keep.write_bytes(data)
            tally.add(f, kind.name, f"read {keep}")
    tally.finish()
