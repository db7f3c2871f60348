"""Reading a lesson directory (docs/lessons.md): lesson.toml checked key by key, the prose
files split at their step markers. Every mistake is a LessonError naming the file, the
line and the column of what is wrong; nothing a lesson says is ever evaluated."""

from __future__ import annotations

import os
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

from vmsim.lessons.model import LANGUAGES, Lesson, LessonError, Option, Step, Text
from vmsim.lessons.tomlpos import locate, positions

FORMAT = 1
STEP_KINDS = ("do", "predict", "modify", "choice", "practice")
PANELS = ("source", "disasm", "registers", "vmcs", "pagetables", "stats", "interrupts",
          "vcpus", "devices", "virtio", "events", "diagram", "lesson")
GENERATORS = ("ept_walk", "exit_prediction", "shadow_faults")  # vmsim.lessons.practice's
ACTIONS = ("step_instruction", "step_event", "step_vmexit", "step_userspace_exit", "run",
           "run_until", "save_snapshot", "resume_snapshot")
CHECK_TYPES = ("events", "sequence", "at", "register", "memory", "vmcs", "serial", "outcome",
               "instructions", "translate", "compare")
MEASURE_TYPES = ("events", "register", "instructions", "serial_bytes", "exit_status")
RELATIONS = ("greater", "less", "equal")
ID_RE = re.compile(r"[a-z0-9-]+\Z")
DIR_RE = re.compile(r"(\d\d)-[a-z0-9-]+\Z")
MARKER_RE = re.compile(r"^<!--\s*step:\s*(\S*)\s*-->\s*$")
MAX_INSTRUCTIONS = 5_000_000  # a lesson's default limit of every headless run
MANIFEST = "lesson.toml"
MANIFEST_LIMIT = 1 << 20
PROSE_LIMIT = 4 << 20

# [machine]: key -> (type, check)
MACHINE_KEYS = ("backend", "paging", "irqchip", "smp", "memory_mib", "disk", "disk_readonly",
                "ioeventfd", "coalesced_mmio", "serial_in", "snapshot", "max_instructions")
REGISTERS = ("EAX", "ECX", "EDX", "EBX", "ESP", "EBP", "ESI", "EDI", "EIP", "EFLAGS",
             "CR0", "CR2", "CR3", "CR4")


class _Ctx:
    """One manifest being checked: its text's positions, for errors."""

    def __init__(self, path: Path, text: str, directory: Path, check_files: bool = True):
        self.path = path
        self.check_files = check_files
        self.source = text
        self.directory = directory
        self._pos: dict | None = None

    def error(self, where: tuple, message: str) -> LessonError:
        if self._pos is None:
            self._pos = positions(self.source)
        line, col = locate(self._pos, where)
        return LessonError(f"{_dotted(where)}: {message}" if where else message,
                           self.path, line, col)

    # -- typed getters ------------------------------------------------------------------
    def keys(self, table: dict, where: tuple, allowed: tuple[str, ...] | set[str]) -> None:
        for k in table:
            if k not in allowed:
                raise self.error((*where, k), f"unknown key {k!r} (expected one of "
                                              f"{', '.join(sorted(allowed))})")

    def need(self, table: dict, key: str, where: tuple) -> Any:
        if key not in table:
            raise self.error(where, f"missing {key!r}")
        return table[key]

    def int(self, value: Any, where: tuple, lo: int | None = None, hi: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(where, f"must be an integer, not {_show(value)}")
        if lo is not None and value < lo:
            raise self.error(where, f"must be at least {lo}, not {value}")
        if hi is not None and value > hi:
            raise self.error(where, f"must be at most {hi}, not {value}")
        return value

    def number(self, value: Any, where: tuple) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(where, f"must be a number, not {_show(value)}")
        return value

    def bool(self, value: Any, where: tuple) -> bool:
        if not isinstance(value, bool):
            raise self.error(where, f"must be true or false, not {_show(value)}")
        return value

    def str(self, value: Any, where: tuple, choices: tuple[str, ...] | None = None) -> str:
        if not isinstance(value, str):
            raise self.error(where, f"must be a string, not {_show(value)}")
        if choices is not None and value not in choices:
            raise self.error(where, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def table(self, value: Any, where: tuple) -> dict:
        if not isinstance(value, dict):
            raise self.error(where, f"must be a table, not {_show(value)}")
        return value

    def list(self, value: Any, where: tuple) -> list:
        if not isinstance(value, list):
            raise self.error(where, f"must be an array, not {_show(value)}")
        return value

    def text(self, value: Any, where: tuple) -> Text:
        if not isinstance(value, dict):
            raise self.error(where, "must be a text in every language: "
                                    '{ en = "...", zh-CN = "..." }')
        self.keys(value, where, LANGUAGES)
        for lang in LANGUAGES:
            if lang not in value:
                raise self.error(where, f"missing language {lang!r}")
            v = value[lang]
            if not isinstance(v, str) or not v.strip():
                raise self.error((*where, lang), f"the {lang} text is empty")
        return Text(value)

    def file(self, value: Any, where: tuple) -> Path:
        """A path relative to the lesson directory, of a file that exists in it."""
        name = self.str(value, where)
        p = Path(name)
        if not name or p.is_absolute() or ".." in p.parts or "\\" in name:
            raise self.error(where, f"{name!r}: a path relative to the lesson directory, "
                                    "inside it")
        full = self.directory / p
        if self.check_files and not full.is_file():
            raise self.error(where, f"{name!r}: no such file in {self.directory.name}/")
        return full


def _show(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, dict):
        return "a table"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, int | float):
        return repr(v)
    return f"{type(v).__name__} {v}"  # (a TOML date or time)


_BARE = re.compile(r"[A-Za-z0-9_-]+\Z")


def _dotted(where: tuple) -> str:
    out = ""
    for p in where:
        if not isinstance(p, int) and not _BARE.match(p):
            p = repr(p)
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


# -- the manifest ------------------------------------------------------------------------------
def _read_text(path: Path, limit: int) -> str:
    try:
        if not path.is_file():
            raise LessonError("no such file" if not path.exists() else "not a regular file", path)
        with open(path, "rb") as f:
            raw = f.read(limit + 1)
    except OSError as e:
        raise LessonError(f"cannot read: {e.strerror}", path) from None
    if len(raw) > limit:
        raise LessonError(f"larger than {limit >> 20} MiB", path)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise LessonError(f"not UTF-8 text ({e.reason})", path, line, 0) from None


_TOML_POS = re.compile(r"\s*\(at line (\d+), column (\d+)\)$|\s*\(at end of document\)$")


def _parse_toml(path: Path, text: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        m = _TOML_POS.search(msg)
        line = col = 0
        if m and m.group(1):
            line, col = int(m.group(1)), int(m.group(2))
        elif m:
            line = text.count("\n") + 1
        msg = _TOML_POS.sub("", msg) if m else msg
        raise LessonError(f"TOML: {msg}", path, line, col) from None
    except RecursionError:
        raise LessonError("TOML: nested too deeply", path, 0, 0) from None


def load_lesson(directory: Path | str) -> Lesson:
    """The lesson in `directory`, checked; LessonError for anything wrong with it."""
    d = Path(directory)
    manifest = d / MANIFEST
    text = _read_text(manifest, MANIFEST_LIMIT)
    doc = _parse_toml(manifest, text)
    return _build(doc, _Ctx(manifest, text, d))


def read_manifest(path: Path | str) -> Lesson:
    """A manifest alone (any file name), checked as load_lesson checks it but for the
    files it names and the prose: the fuzzer's reader (tests/fuzz/formats.py)."""
    p = Path(path)
    text = _read_text(p, MANIFEST_LIMIT)
    doc = _parse_toml(p, text)
    return _build(doc, _Ctx(p, text, p.parent, check_files=False), prose=False)


TOP_KEYS = ("format", "id", "title", "summary", "guest", "machine", "steps")


def _build(doc: dict, c: _Ctx, prose: bool = True) -> Lesson:
    c.keys(doc, (), TOP_KEYS)
    fmt = c.need(doc, "format", ())
    if isinstance(fmt, bool) or fmt != FORMAT:
        raise c.error(("format",), f"format {_show(fmt)} is not one this vmsim reads "
                                   f"(format = {FORMAT})")
    lid = c.str(c.need(doc, "id", ()), ("id",))
    if not ID_RE.match(lid):
        raise c.error(("id",), f"{lid!r}: an id is lower-case letters, digits and '-'")
    m = DIR_RE.match(c.directory.name)
    number = int(m.group(1)) if m else 0
    title = c.text(c.need(doc, "title", ()), ("title",))
    summary = c.text(c.need(doc, "summary", ()), ("summary",))
    machine = _machine(c, doc.get("machine", {}), ("machine",))
    guest = None
    if "guest" in doc:
        guest = c.file(doc["guest"], ("guest",))
    elif "snapshot" not in machine:
        raise c.error((), "missing 'guest' (or a [machine] snapshot to start from)")
    steps_raw = c.list(c.need(doc, "steps", ()), ("steps",))
    if not steps_raw:
        raise c.error(("steps",), "a lesson needs at least one step")
    steps: list[Step] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(steps_raw):
        st = _step(c, c.table(raw, ("steps", i)), ("steps", i), guest, machine)
        if st.id in seen:
            raise c.error(("steps", i, "id"), f"step id {st.id!r} is already step "
                                              f"{seen[st.id]}'s")
        seen[st.id] = i
        st.index = i
        steps.append(st)
    lesson = Lesson(id=lid, number=number, title=title, summary=summary, directory=c.directory,
                    intro=Text.same(""), guest=guest, machine=machine, steps=steps,
                    max_instructions=machine.get("max_instructions", MAX_INSTRUCTIONS))
    _check_vmcs_backends(c, lesson)
    if prose:
        _prose(lesson)
    return lesson


def _machine(c: _Ctx, raw: Any, where: tuple, base: dict | None = None) -> dict:
    from vmsim.vmm.machine import IRQCHIP_MODES, MAX_SMP

    t = c.table(raw, where)
    c.keys(t, where, MACHINE_KEYS)
    out = dict(base or {})
    for k, v in t.items():
        w = (*where, k)
        if k == "backend":
            out[k] = c.str(v, w, ("sim", "kvm", "bare"))
        elif k == "paging":
            out[k] = c.str(v, w, ("ept", "shadow"))
        elif k == "irqchip":
            out[k] = c.str(v, w, IRQCHIP_MODES)
        elif k == "smp":
            out[k] = c.int(v, w, 1, MAX_SMP)
        elif k == "memory_mib":
            out[k] = c.int(v, w, 2, 3072)
        elif k in ("disk", "snapshot"):
            c.file(v, w)
            out[k] = v
        elif k in ("disk_readonly", "ioeventfd", "coalesced_mmio"):
            out[k] = c.bool(v, w)
        elif k == "serial_in":
            out[k] = c.str(v, w)
        elif k == "max_instructions":
            out[k] = c.int(v, w, 1, 1 << 40)
    return out


COMMON_STEP_KEYS = ("id", "kind", "title", "show", "hints", "guest", "machine")
STEP_KEYS = {
    "do": ("checks", "solution"),
    "predict": ("question", "answer", "run", "tolerance", "explain"),
    "modify": ("start", "solution", "run", "checks"),
    "choice": ("question", "options", "explain"),
    "practice": ("generator", "seed", "params", "question", "explain"),
}


def _step(c: _Ctx, t: dict, w: tuple, lesson_guest: Path | None, lesson_machine: dict) -> Step:
    sid = c.str(c.need(t, "id", w), (*w, "id"))
    if not ID_RE.match(sid):
        raise c.error((*w, "id"), f"{sid!r}: a step id is lower-case letters, digits and '-'")
    kind = c.str(c.need(t, "kind", w), (*w, "kind"), STEP_KINDS)
    c.keys(t, w, COMMON_STEP_KEYS + STEP_KEYS[kind])
    st = Step(id=sid, kind=kind, title=c.text(c.need(t, "title", w), (*w, "title")))
    for i, p in enumerate(c.list(t.get("show", []), (*w, "show"))):
        st.show.append(c.str(p, (*w, "show", i), PANELS))
    st.hints = [c.text(h, (*w, "hints", i))
                for i, h in enumerate(c.list(t.get("hints", []), (*w, "hints")))]
    st.guest = c.file(t["guest"], (*w, "guest")) if "guest" in t else lesson_guest
    st.machine = _machine(c, t.get("machine", {}), (*w, "machine"), lesson_machine)
    if st.guest is None and "snapshot" not in st.machine:
        raise c.error(w, "no guest to run: the lesson has none and the step names none")
    for key in ("question", "explain"):
        if key in t:
            setattr(st, key, c.text(t[key], (*w, key)))
    if kind in ("predict", "choice") and st.question is None:
        raise c.error(w, f"a {kind} step needs a 'question'")
    if kind in ("do", "modify"):
        checks = c.list(c.need(t, "checks", w), (*w, "checks"))
        if not checks:
            raise c.error((*w, "checks"), f"a {kind} step needs at least one check")
        st.checks = [_check(c, ch, (*w, "checks", i), kind) for i, ch in enumerate(checks)]
    if kind == "do":
        sol = c.list(c.need(t, "solution", w), (*w, "solution"))
        st.solution = [_action(c, a, (*w, "solution", i)) for i, a in enumerate(sol)]
    if kind in ("predict", "modify"):
        st.run = ([_action(c, a, (*w, "run", i))
                   for i, a in enumerate(c.list(t["run"], (*w, "run")))]
                  if "run" in t else [{"do": "run", "count": 1}])
    if kind == "predict":
        st.answer = _measure(c, c.need(t, "answer", w), (*w, "answer"))
        st.tolerance = c.int(t.get("tolerance", 0), (*w, "tolerance"), 0)
    if kind == "modify":
        st.solution = c.file(c.need(t, "solution", w), (*w, "solution"))
        st.start = c.file(t["start"], (*w, "start")) if "start" in t else st.guest
        if st.start is None:
            raise c.error(w, "a modify step starting from a snapshot needs a 'start' file")
    if kind == "choice":
        opts = c.list(c.need(t, "options", w), (*w, "options"))
        if len(opts) < 2:
            raise c.error((*w, "options"), "a choice step needs at least two options")
        for i, o in enumerate(opts):
            ow = (*w, "options", i)
            o = c.table(o, ow)
            c.keys(o, ow, ("text", "correct", "why"))
            st.options.append(Option(c.text(c.need(o, "text", ow), (*ow, "text")),
                                     c.bool(o.get("correct", False), (*ow, "correct")),
                                     c.text(o["why"], (*ow, "why")) if "why" in o else None))
        if not any(o.correct for o in st.options):
            raise c.error((*w, "options"), "no option is correct (correct = true)")
    if kind == "practice":
        st.generator = c.str(c.need(t, "generator", w), (*w, "generator"), GENERATORS)
        st.seed = c.int(t.get("seed", 0), (*w, "seed"), 0, (1 << 63) - 1)
        st.params = dict(c.table(t.get("params", {}), (*w, "params")))
        try:
            from vmsim.lessons import practice
        except ImportError:
            practice = None  # (checked when a problem is drawn: "generator unavailable")
        if practice is not None and hasattr(practice, "validate"):
            try:
                practice.validate(st.generator, st.params)
            except ValueError as e:
                raise c.error((*w, "params"), str(e)) from None
    return st


def _where(c: _Ctx, t: Any, w: tuple, kind: str | None) -> dict:
    """Field conditions. Field names are not checked against the catalogue: events carry
    more fields than it declares (kvm_userspace_exit's port, ...); a misspelt one matches
    nothing, which `vmsim lesson verify` finds."""
    where = c.table(t, w)
    for k, v in where.items():
        vals = v if isinstance(v, list) else [v]
        if isinstance(v, list) and not v:
            raise c.error((*w, k), "an empty list matches nothing")
        for j, x in enumerate(vals):
            if not isinstance(x, str | int | bool):
                raise c.error((*w, k, j) if isinstance(v, list) else (*w, k),
                              f"a field value is a string, an integer or a boolean, not "
                              f"{_show(x)}")
    return where


def _event_kind(c: _Ctx, t: dict, w: tuple) -> str:
    from vmsim.events import CATALOGUE

    kind = c.str(c.need(t, "kind", w), (*w, "kind"))
    if kind not in CATALOGUE:
        near = [k for k in CATALOGUE if kind.lower() in k or k in kind.lower()][:4]
        raise c.error((*w, "kind"), f"unknown event kind {kind!r}" +
                      (f" (did you mean {', '.join(near)}?)" if near else
                       " (docs/trace-format.md lists them)"))
    return kind


def _register_name(c: _Ctx, v: Any, w: tuple) -> str:
    name = c.str(v, w).upper()
    if name not in REGISTERS:
        raise c.error(w, f"unknown register {v!r} (one of {', '.join(REGISTERS)})")
    return name


def _count_keys(c: _Ctx, t: dict, w: tuple, out: dict) -> None:
    for k in ("count", "min", "max"):
        if k in t:
            out[k] = c.int(t[k], (*w, k), 0)
    if "count" in t and ("min" in t or "max" in t):
        raise c.error((*w, "count"), "give count, or min and/or max, not both")


def _check(c: _Ctx, raw: Any, w: tuple, step_kind: str) -> dict:
    from vmsim.hw.vmcs import F

    t = c.table(raw, w)
    typ = c.str(c.need(t, "type", w), (*w, "type"))
    if typ not in CHECK_TYPES:
        raise c.error((*w, "type"), f"unknown type {typ!r} (one of {', '.join(CHECK_TYPES)})")
    allowed = {"type", "message", "cpu"}
    out: dict[str, Any] = {"type": typ}
    if "message" in t:
        out["message"] = c.text(t["message"], (*w, "message"))
    if "cpu" in t:
        out["cpu"] = c.int(t["cpu"], (*w, "cpu"), 0, 7)
    if typ in ("events", "at"):
        allowed |= {"kind", "where"} | ({"count", "min", "max"} if typ == "events" else set())
        c.keys(t, w, allowed)
        out["kind"] = _event_kind(c, t, w)
        out["where"] = dict(_where(c, t.get("where", {}), (*w, "where"), out["kind"]))
        if typ == "events":
            _count_keys(c, t, w, out)
    elif typ == "sequence":
        c.keys(t, w, allowed | {"events"})
        evs = c.list(c.need(t, "events", w), (*w, "events"))
        if not evs:
            raise c.error((*w, "events"), "an empty sequence")
        out["events"] = []
        for i, e in enumerate(evs):
            ew = (*w, "events", i)
            e = c.table(e, ew)
            c.keys(e, ew, ("kind", "where"))
            k = _event_kind(c, e, ew)
            out["events"].append({"kind": k, "where": dict(_where(c, e.get("where", {}),
                                                                  (*ew, "where"), k))})
    elif typ == "register":
        c.keys(t, w, allowed | {"name", "equals", "mask"})
        out["name"] = _register_name(c, c.need(t, "name", w), (*w, "name"))
        out["equals"] = c.int(c.need(t, "equals", w), (*w, "equals"), 0, 0xFFFFFFFF)
        if "mask" in t:
            out["mask"] = c.int(t["mask"], (*w, "mask"), 0, 0xFFFFFFFF)
    elif typ == "memory":
        c.keys(t, w, allowed | {"address", "space", "equals", "value", "size"})
        out["address"] = c.int(c.need(t, "address", w), (*w, "address"), 0, 0xFFFFFFFF)
        out["space"] = c.str(t.get("space", "linear"), (*w, "space"), ("linear", "physical"))
        if ("equals" in t) == ("value" in t):
            raise c.error(w, "a memory check gives 'equals' (hex bytes) or 'value', one of them")
        if "equals" in t:
            hx = c.str(t["equals"], (*w, "equals"))
            try:
                out["equals"] = bytes.fromhex(hx)
            except ValueError:
                raise c.error((*w, "equals"), f"{hx!r} is not hex bytes (\"48 65 6c\")") from None
            if not out["equals"]:
                raise c.error((*w, "equals"), "no bytes")
        else:
            out["size"] = c.int(t.get("size", 4), (*w, "size"))
            if out["size"] not in (1, 2, 4):
                raise c.error((*w, "size"), "size is 1, 2 or 4")
            out["value"] = c.int(t["value"], (*w, "value"), 0, (1 << (8 * out["size"])) - 1)
        if "size" in t and "equals" in t:
            raise c.error((*w, "size"), "size goes with 'value', not 'equals'")
    elif typ == "vmcs":
        c.keys(t, w, allowed | {"field", "equals", "mask"})
        name = c.str(c.need(t, "field", w), (*w, "field"))
        if name not in F.__members__:
            near = [n for n in F.__members__ if name.upper() in n][:4]
            raise c.error((*w, "field"), f"unknown VMCS field {name!r}" +
                          (f" (did you mean {', '.join(near)}?)" if near else ""))
        out["field"] = name
        out["equals"] = c.int(c.need(t, "equals", w), (*w, "equals"), 0)
        if "mask" in t:
            out["mask"] = c.int(t["mask"], (*w, "mask"), 0)
    elif typ == "serial":
        c.keys(t, w, allowed | {"equals", "contains", "lines"})
        given = [k for k in ("equals", "contains", "lines") if k in t]
        if len(given) != 1:
            raise c.error(w, "a serial check gives one of equals, contains, lines")
        k = given[0]
        out[k] = c.int(t[k], (*w, k), 0) if k == "lines" else c.str(t[k], (*w, k))
    elif typ == "outcome":
        c.keys(t, w, allowed | {"finished", "exit_status", "halted"})
        if not any(k in t for k in ("finished", "exit_status", "halted")):
            raise c.error(w, "an outcome check gives finished, exit_status and/or halted")
        for k in ("finished", "halted"):
            if k in t:
                out[k] = c.bool(t[k], (*w, k))
        if "exit_status" in t:
            out["exit_status"] = c.int(t["exit_status"], (*w, "exit_status"), 0, 255)
    elif typ == "instructions":
        c.keys(t, w, allowed | {"min", "max"})
        if "min" not in t and "max" not in t:
            raise c.error(w, "an instructions check gives min and/or max")
        for k in ("min", "max"):
            if k in t:
                out[k] = c.int(t[k], (*w, k), 0)
    elif typ == "translate":
        c.keys(t, w, allowed | {"linear", "physical"})
        out["linear"] = c.int(c.need(t, "linear", w), (*w, "linear"), 0, 0xFFFFFFFF)
        out["physical"] = c.int(c.need(t, "physical", w), (*w, "physical"), -1, 0xFFFFFFFF)
    elif typ == "compare":
        c.keys(t, w, allowed | {"measure", "a", "b", "relation", "factor"})
        out["measure"] = _measure(c, c.need(t, "measure", w), (*w, "measure"))
        for k in ("a", "b"):
            out[k] = _machine(c, c.need(t, k, w), (*w, k))
            if "snapshot" in out[k] or "max_instructions" in out[k]:
                raise c.error((*w, k), "compare varies machine settings, not the snapshot "
                                       "or the limit")
        out["relation"] = c.str(c.need(t, "relation", w), (*w, "relation"), RELATIONS)
        if "factor" in t:
            out["factor"] = c.number(t["factor"], (*w, "factor"))
            if out["relation"] == "equal":
                raise c.error((*w, "factor"), "factor goes with greater or less")
    return out


def _measure(c: _Ctx, raw: Any, w: tuple) -> dict:
    t = c.table(raw, w)
    typ = c.str(c.need(t, "type", w), (*w, "type"))
    if typ not in MEASURE_TYPES:
        raise c.error((*w, "type"), f"unknown measure {typ!r} (one of "
                                    f"{', '.join(MEASURE_TYPES)})")
    out: dict[str, Any] = {"type": typ}
    if typ == "events":
        c.keys(t, w, ("type", "kind", "where"))
        out["kind"] = _event_kind(c, t, w)
        out["where"] = dict(_where(c, t.get("where", {}), (*w, "where"), out["kind"]))
    elif typ == "register":
        c.keys(t, w, ("type", "name", "cpu"))
        out["name"] = _register_name(c, c.need(t, "name", w), (*w, "name"))
        out["cpu"] = c.int(t.get("cpu", 0), (*w, "cpu"), 0, 7)
    else:
        c.keys(t, w, ("type",))
    return out


def _action(c: _Ctx, raw: Any, w: tuple) -> dict:
    t = c.table(raw, w)
    do = c.str(c.need(t, "do", w), (*w, "do"))
    if do not in ACTIONS:
        raise c.error((*w, "do"), f"unknown action {do!r} (one of {', '.join(ACTIONS)})")
    out: dict[str, Any] = {"do": do}
    if do == "run_until":
        c.keys(t, w, ("do", "kind", "where", "address", "count"))
        if ("kind" in t) == ("address" in t):
            raise c.error(w, "run_until gives an event 'kind' (with 'where') or an 'address'")
        if "kind" in t:
            out["kind"] = _event_kind(c, t, w)
            out["where"] = dict(_where(c, t.get("where", {}), (*w, "where"), out["kind"]))
        else:
            out["address"] = c.int(t["address"], (*w, "address"), 0, 0xFFFFFFFF)
            if "where" in t:
                raise c.error((*w, "where"), "'where' goes with an event 'kind'")
    elif do in ("save_snapshot", "resume_snapshot", "run"):
        c.keys(t, w, ("do",))
    else:
        c.keys(t, w, ("do", "count"))
    out["count"] = c.int(t.get("count", 1), (*w, "count"), 1, 1_000_000)
    return out


def _check_vmcs_backends(c: _Ctx, lesson: Lesson) -> None:
    """Checks of VMCS fields need the simulated CPU."""
    for st in lesson.steps:
        for i, ch in enumerate(st.checks):
            if ch["type"] == "vmcs" and st.machine.get("backend", "sim") != "sim":
                raise c.error(("steps", st.index, "checks", i, "type"),
                              "VMCS checks need the simulated backend (backend = \"sim\")")


# -- the prose ---------------------------------------------------------------------------------
def _prose(lesson: Lesson) -> None:
    ids = {s.id for s in lesson.steps}
    intro: dict[str, str] = {}
    per_step: dict[str, dict[str, str]] = {s.id: {} for s in lesson.steps}
    for lang in LANGUAGES:
        path = lesson.directory / f"{lang}.md"
        text = _read_text(path, PROSE_LIMIT)
        current: str | None = None
        sections: dict[str | None, list[str]] = {None: []}
        where: dict[str, int] = {}
        for n, line in enumerate(text.splitlines(), 1):
            m = MARKER_RE.match(line.strip())
            if m:
                sid = m.group(1)
                if sid not in ids:
                    raise LessonError(f"unknown step {sid!r} (steps: {', '.join(sorted(ids))})",
                                      path, n, line.find("step:") + 7)
                if sid in sections:
                    raise LessonError(f"a second section for step {sid!r} (the first is "
                                      f"at line {where[sid]})", path, n, 1)
                current = sid
                sections[sid] = []
                where[sid] = n
                continue
            sections[current].append(line)
        for st in lesson.steps:
            if st.id not in sections:
                raise LessonError(f"no section for step {st.id!r} (a line "
                                  f"<!-- step: {st.id} -->)", path, 0, 0)
            per_step[st.id][lang] = "\n".join(sections[st.id]).strip("\n")
        intro[lang] = "\n".join(sections[None]).strip("\n")
    lesson.intro = Text(intro)
    for st in lesson.steps:
        st.prose = Text(per_step[st.id])


# -- finding lessons ----------------------------------------------------------------------------
def lesson_roots() -> list[Path]:
    """Where lessons are: $VMSIM_LESSONS (directories, separated as PATH), the checkout's
    lessons/, the installed PREFIX/share/vmsim/lessons."""
    out = []
    env = os.environ.get("VMSIM_LESSONS")
    if env:
        out += [Path(p) for p in env.split(os.pathsep) if p]
    out.append(Path(__file__).resolve().parents[2] / "lessons")
    out.append(Path(sys.prefix) / "share" / "vmsim" / "lessons")
    return out


def lesson_dirs(roots: list[Path] | None = None) -> list[Path]:
    """Every lesson directory (NN-slug holding lesson.toml) in the roots; one per name,
    the first root's."""
    seen: dict[str, Path] = {}
    for root in roots if roots is not None else lesson_roots():
        try:
            entries = sorted(root.iterdir())
        except OSError:
            continue
        for d in entries:
            if DIR_RE.match(d.name) and (d / MANIFEST).is_file() and d.name not in seen:
                seen[d.name] = d
    return [seen[k] for k in sorted(seen)]


def all_lessons(roots: list[Path] | None = None) -> list[Lesson]:
    """Every lesson, by number; LessonError on the first bad one."""
    out: list[Lesson] = []
    ids: set[str] = set()
    for d in lesson_dirs(roots):
        lesson = load_lesson(d)
        if lesson.id in ids:
            continue
        ids.add(lesson.id)
        out.append(lesson)
    return sorted(out, key=lambda x: (x.number, x.id))


def find_lesson(key: str, roots: list[Path] | None = None) -> Lesson:
    """A lesson by id, number ("4", "04") or directory name (or a directory's path);
    KeyError if there is none, LessonError if it is malformed."""
    p = Path(key)
    if (p / MANIFEST).is_file() and (os.sep in key or key.startswith(".")):
        return load_lesson(p)
    dirs = lesson_dirs(roots)
    for root in roots if roots is not None else lesson_roots():  # the first root's first
        for d in lesson_dirs([root]):
            m = DIR_RE.match(d.name)
            if d.name == key or (key.isdigit() and int(m.group(1)) == int(key)):
                return load_lesson(d)
    for d in dirs:  # by id: read the manifests' ids
        try:
            text = _read_text(d / MANIFEST, MANIFEST_LIMIT)
            if tomllib.loads(text).get("id") == key:
                return load_lesson(d)
        except (LessonError, tomllib.TOMLDecodeError):
            continue
    names = ", ".join(d.name for d in dirs) or "none installed"
    raise KeyError(f"no lesson {key!r} (lessons: {names})")
