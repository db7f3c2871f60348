"""The files vmsim reads besides guests and sources, for the mutated-file fuzz test.

One `FileKind` per format: how to make valid files of it (the seeds the mutators start
from), and the reader vmsim offers for it. The test (test_formats.py) mutates the valid
files and hands them to the reader, which must either load them or refuse them with its
documented error (one line naming the file); never another exception, a hang or
gigabytes of memory.

A kind whose reader does not exist yet has `reader=None`: its test is skipped, saying
so. When a reader lands, fill it in here;
see docs/fuzzing.md.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.fuzz.harness import SAMPLES


@dataclass(frozen=True)
class FileKind:
    name: str
    suffix: str
    make_valid: Callable[[], list[bytes]] | None  # a few valid files, as bytes
    # Reads the file at the path; returns normally or raises one of `errors`.
    reader: Callable[[Path], object] | None
    errors: tuple[type[BaseException], ...] = ()
    binary: bool = False  # mutate bytes, not lines
    todo: str = ""  # what is missing while reader is None


def valid_traces() -> list[bytes]:
    """JSON Lines traces of two sample guests, as `vmsim run --trace` writes them."""
    from vmsim.events import EventStream
    from vmsim.session import Session
    from vmsim.trace import TraceWriter

    out = []
    for name, level in (("hello.asm", "vm"), ("ports.asm", "insn")):
        events = EventStream()
        buf = io.StringIO()
        trace = TraceWriter(events, buf, level)
        s = Session(str(SAMPLES / name), "sim", events=events, max_instructions=200_000)
        s.run()
        trace.close()
        out.append(buf.getvalue().encode())
    return out


def read_trace(path: Path) -> object:
    """What `vmsim stats TRACEFILE` does with the file (stats_from_trace, then the report)."""
    from vmsim.files import open_input_file
    from vmsim.stats import stats_from_trace

    with open_input_file(path) as f:
        stats = stats_from_trace(str(path), f)
    stats.report(io.StringIO())
    return stats


def _trace_errors() -> tuple[type[BaseException], ...]:
    from vmsim.stats import TraceFormatError

    return (TraceFormatError,)


def valid_snapshots() -> list[bytes]:
    """Snapshots of the test sections (tests/snapshot_samples.py: CPUs, a device with every
    kind of field, RAM) deflated and stored, and the checked-in version 1 file, whose
    section goes through a migration."""
    import tempfile

    from tests import snapshot_samples as samples
    from vmsim.snapshot_format import write_snapshot

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for compress in (True, False):
            path = Path(tmp) / f"seed-{compress}.vmsnap"
            write_snapshot(path, samples.sections(), {"guest": "hello.asm", "n": 1},
                           types=samples.TYPES, created=samples.CREATED, compress=compress)
            out.append(path.read_bytes())
    out.append(samples.V1_FILE.read_bytes())
    return out


def read_snapshot_file(path: Path) -> object:
    """The snapshot reader with the test section types (the machine's own come later)."""
    from tests import snapshot_samples as samples
    from vmsim.snapshot_format import read_snapshot

    return read_snapshot(path, types=samples.TYPES)


def _snapshot_errors() -> tuple[type[BaseException], ...]:
    from vmsim.snapshot_format import SnapshotError

    return (SnapshotError,)


def valid_sessions() -> list[bytes]:
    """Snapshots of a session (vmsim/snapshot.py): hello.asm cut early, and the timer
    guest with two vCPUs and the userspace irqchip."""
    import tempfile

    from vmsim.session import Session
    from vmsim.vmm.machine import MachineConfig

    out = []
    with tempfile.TemporaryDirectory() as d:
        for guest, config, n in (("hello.asm", None, 150),
                                 ("timer.asm", MachineConfig(smp=2, irqchip="userspace"), 3000)):
            s = Session(str(SAMPLES / guest), "sim", config, max_instructions=n,
                        serial_out=lambda b: None)
            s.run()
            path = Path(d) / "s.vmsnap"
            s.save_snapshot(str(path))
            s.machine.close()
            out.append(path.read_bytes())
    return out


def load_session_file(path: Path) -> object:
    """Session.load_snapshot: a new session from the file alone."""
    from vmsim.session import Session

    s = Session.load_snapshot(str(path), serial_out=lambda b: None)
    s.machine.close()
    return s


LESSON_FIXTURES = Path(__file__).resolve().parents[1] / "data" / "lessons"


def valid_lessons() -> list[bytes]:
    """The fixture lessons' manifests (tests/data/lessons/*/lesson.toml) and the lessons'
    in lessons/, when there are any."""
    roots = [LESSON_FIXTURES, Path(__file__).resolve().parents[2] / "lessons"]
    return [p.read_bytes() for root in roots for p in sorted(root.glob("[0-9][0-9]-*/lesson.toml"))]


def read_lesson_manifest(path: Path) -> object:
    """vmsim.lessons.loader.read_manifest: the manifest checked key by key (the files it
    names are not looked for: they are not beside the mutated copy)."""
    from vmsim.lessons.loader import read_manifest

    return read_manifest(path)


def _lesson_errors() -> tuple[type[BaseException], ...]:
    from vmsim.lessons import LessonError

    return (LessonError,)


FILE_KINDS: tuple[FileKind, ...] = (
    FileKind("trace", ".jsonl", valid_traces, reader=read_trace, errors=_trace_errors()),
    FileKind("snapshot", ".vmsnap", valid_snapshots, reader=read_snapshot_file,
             errors=_snapshot_errors(), binary=True),
    FileKind("session", ".vmsnap", valid_sessions, reader=load_session_file,
             errors=_snapshot_errors(), binary=True),
    FileKind("lesson", ".toml", valid_lessons, reader=read_lesson_manifest,
             errors=_lesson_errors()),
)
