"""The snapshot file format (issue 12): a zip of JSON sections and raw binary sections
under a manifest, safe to open from someone else.

A snapshot is what QEMU's `savevm` writes, in a form a student can unzip and read:

    manifest.json   {"format": "vmsim-snapshot", "format_version": 1,
                     "vmsim_version": "0.1.0", "created": "2026-11-29T01:00:00Z",
                     "meta": {...flat: str/int/bool/null...},
                     "sections": [{"name": "cpu0", "type": "x86-cpu", "encoding": "json",
                                   "version": 1, "size": 812, "sha256": "..."}, ...]}
    cpu0.json       one JSON section per CPU, device, thread... (its own type and version,
                    as QEMU's VMStateDescription: a name, a version_id, typed fields)
    ram.bin         raw binary sections (guest RAM)

Members are deflated by the stdlib's zipfile (zlib): no dependency, every unzip opens it,
and guest RAM (mostly zero pages) shrinks by orders of magnitude.

What the code fills in later is a table of `SectionType`s (SECTION_TYPES: a section type
per stateful part, each with a declared schema of field types and, for each older
version, its schema and a migration to the next). The format itself knows nothing about
CPUs or devices.

`read_snapshot` validates everything before it returns: the magic and format version (a
newer one is refused, older section versions are migrated), the member list (names,
duplicates, members the manifest does not name, sections it names that are missing),
sizes against the manifest and against caps (so a zip bomb cannot exhaust memory: the
declared and the actual uncompressed sizes are both checked while reading), the SHA-256
of every section, and every JSON section against its schema. Nothing is constructed from
the file but dicts, lists, ints, strings, bools, None and bytes: no pickle, no eval. Any
refusal is one `SnapshotError` whose str() is one line, "FILE: what is wrong".

`write_snapshot` checks the sections against the same schemas (a snapshot it writes is
one it reads), writes to a temporary file beside the target and renames it over the
target, so a failure leaves no file or the old one intact.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import stat
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from vmsim import __version__
from vmsim.files import InputError, OutputError, open_input_file, same_file

FORMAT_NAME = "vmsim-snapshot"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SUFFIX = ".vmsnap"

# Caps on what a file may make the reader allocate. Guest RAM goes up to 3072 MiB
# (vmsim.vmm.machine.Machine); everything else is small plain data.
MAX_RAM = 3072 << 20
MAX_JSON_SECTION = 16 << 20  # one JSON section (a CPU is a few KiB, guest source 16 MiB)
MAX_MANIFEST = 1 << 20
MAX_SECTIONS = 1024  # vCPUs, devices, threads: far below
MAX_MEMBERS = MAX_SECTIONS + 1
MAX_TOTAL = MAX_RAM + (256 << 20)  # all sections together, uncompressed
MAX_FILE = MAX_TOTAL + (64 << 20)  # the file itself (deflate never grows data much)
MAX_META = 64  # entries in the manifest's meta
MAX_NAME = 64

_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")  # a section name, its member's stem
_TYPE = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
_MEMBER = re.compile(r"[a-z][a-z0-9_-]{0,63}\.(json|bin)")
_HEX = re.compile(r"(?:[0-9a-f]{2})*")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_PRINTABLE = re.compile(r"[\x20-\x7e]{1,100}")
_READ_CHUNK = 1 << 20


class SnapshotError(Exception):
    """A snapshot that cannot be read or written; str() is one line, "FILE: what is wrong"."""

    def __init__(self, path: str, what: str):
        self.path = path
        self.what = _one_line(what)
        super().__init__(f"{path}: {self.what}")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# ---------------------------------------------------------------------------------------
# Schemas: the declared shape of a JSON section.
#
# A schema is made of `int`, `str`, `bool`, `bytes` (hex in the file), a one-element list
# `[T]` (a list of T), a dict `{"field": T, ...}` (an object with exactly these fields),
# `MapOf(T)` (an object with any safe keys, values T) and `Nullable(T)`.
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MapOf:
    value: Any


@dataclass(frozen=True)
class Nullable:
    value: Any


@dataclass(frozen=True)
class Plain:
    """Any plain data (vmsim.state): objects with safe keys, lists, ints, strings, bools,
    null, and bytes (in the file {"__bytes__": "hex"}). For the simulator's own state,
    whose shape is each model's fields: the model's load_state checks it again, and a
    loader turns any mismatch into a refusal."""


PLAIN = Plain()
MAX_PLAIN_DEPTH = 48  # below the strict JSON reader's nesting bound

Schema = Any
_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_BYTES_TAG = "__bytes__"


def _plain(value: Any, where: str, decode: bool, depth: int = 0) -> Any:
    at = f"field {where}: " if where else ""
    if depth > MAX_PLAIN_DEPTH:
        raise ValueError(f"{at}nested more than {MAX_PLAIN_DEPTH} deep")
    t = type(value)
    if value is None or t is bool or t is int or t is str:
        return value
    if not decode and isinstance(value, int) and t is not bool:
        return int(value)  # an IntEnum (a VMCS field encoding): its number
    if t is list:
        return [_plain(v, f"{where}[{i}]", decode, depth + 1) for i, v in enumerate(value)]
    if not decode and isinstance(value, bytes | bytearray | memoryview):
        return {_BYTES_TAG: bytes(value).hex()}
    if t is dict:
        if decode and len(value) == 1 and _BYTES_TAG in value:
            h = value[_BYTES_TAG]
            if type(h) is not str or not _HEX.fullmatch(h):
                raise ValueError(f"{at}expected bytes as lowercase hex")
            return bytes.fromhex(h)
        out = {}
        for k, v in value.items():
            if type(k) is not str or not _KEY.fullmatch(k) or k == _BYTES_TAG:
                raise ValueError(f"{at}bad key {str(k)[:40]!r}")
            out[k] = _plain(v, f"{where}.{k}" if where else k, decode, depth + 1)
        return out
    raise ValueError(f"{at}expected plain data, got {_typename(value)}")


def _typename(v: object) -> str:
    if v is None:
        return "null"
    return {bool: "bool", int: "int", str: "str", list: "list", dict: "object",
            float: "float"}.get(type(v), type(v).__name__)


def _convert(schema: Schema, value: Any, where: str, decode: bool) -> Any:
    """`value` checked against `schema`; bytes fields are turned from hex (decode) or to
    hex (encode). Raises ValueError naming the field."""
    at = f"field {where}: " if where else ""
    if isinstance(schema, Plain):
        return _plain(value, where, decode)
    if isinstance(schema, Nullable):
        return None if value is None else _convert(schema.value, value, where, decode)
    if schema is bool or schema is int or schema is str:
        if type(value) is not schema:  # bool is an int in Python, not here
            raise ValueError(f"{at}expected {schema.__name__}, got {_typename(value)}")
        return value
    if schema is bytes:
        if decode:
            if type(value) is not str or not _HEX.fullmatch(value):
                raise ValueError(f"{at}expected bytes as lowercase hex, got {_typename(value)}")
            return bytes.fromhex(value)
        if not isinstance(value, bytes | bytearray | memoryview):
            raise ValueError(f"{at}expected bytes, got {_typename(value)}")
        return bytes(value).hex()
    if isinstance(schema, list):
        if type(value) is not list:
            raise ValueError(f"{at}expected list, got {_typename(value)}")
        return [_convert(schema[0], v, f"{where}[{i}]", decode) for i, v in enumerate(value)]
    if isinstance(schema, MapOf):
        if type(value) is not dict:
            raise ValueError(f"{at}expected object, got {_typename(value)}")
        out = {}
        for k, v in value.items():
            if type(k) is not str or not _KEY.fullmatch(k):
                raise ValueError(f"{at}bad key {str(k)[:40]!r}")
            out[k] = _convert(schema.value, v, f"{where}.{k}" if where else k, decode)
        return out
    if isinstance(schema, dict):
        if type(value) is not dict:
            raise ValueError(f"{at}expected object, got {_typename(value)}")
        missing = [k for k in schema if k not in value]
        if missing:
            raise ValueError(f"{at}missing field {missing[0]!r}")
        extra = [k for k in value if k not in schema]
        if extra:
            raise ValueError(f"{at}unknown field {str(extra[0])[:40]!r}")
        return {k: _convert(s, value[k], f"{where}.{k}" if where else k, decode)
                for k, s in schema.items()}
    raise TypeError(f"not a snapshot schema: {schema!r}")  # a programming error


# ---------------------------------------------------------------------------------------
# Section types (VMStateDescription): name, version, schema, and how older versions load.
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OlderVersion:
    """How version N of a section type loads: its schema (checked before anything else
    touches the data) and a migration to version N + 1 (given data that passed it, as the
    file holds it: bytes fields still in hex)."""

    schema: Schema | None  # None for a binary section
    migrate: Callable[[Any], Any]


@dataclass(frozen=True)
class SectionType:
    """One kind of section, as QEMU's VMStateDescription: `name` (several sections may
    share one: cpu0, cpu1), the `version` this vmsim writes, the field `schema` of a JSON
    section (None: a binary one), a size cap, and the versions it still reads."""

    name: str
    version: int
    schema: Schema | None
    max_size: int = MAX_JSON_SECTION
    older: Mapping[int, OlderVersion] = field(default_factory=dict)

    @property
    def encoding(self) -> str:
        return "binary" if self.schema is None else "json"


# Guest RAM: its bytes from guest-physical 0, as KVM_SET_USER_MEMORY_REGION maps them.
RAM = SectionType("ram", 1, None, max_size=MAX_RAM)

# The section types this vmsim reads and writes; the parts that save state add theirs.
SECTION_TYPES: dict[str, SectionType] = {RAM.name: RAM}


@dataclass(frozen=True)
class SectionData:
    """One section's content: its type's name and its data (for a JSON section plain
    data matching the type's schema, bytes fields as bytes; for a binary one, bytes)."""

    type: str
    data: Any


@dataclass(frozen=True)
class Snapshot:
    """A snapshot read and fully validated. Sections are at their types' current
    versions; `section_versions` says which version each had in the file."""

    path: str
    format_version: int
    vmsim_version: str
    created: str
    meta: dict[str, str | int | bool | None]
    sections: dict[str, SectionData]
    section_versions: dict[str, int]


# ---------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed member times: the same state, the same bytes


def _check_meta(meta: object) -> str | None:
    if type(meta) is not dict:
        return f"meta: expected object, got {_typename(meta)}"
    if len(meta) > MAX_META:
        return f"meta: {len(meta)} entries, at most {MAX_META}"
    for k, v in meta.items():
        if type(k) is not str or not _KEY.fullmatch(k):
            return f"meta: bad key {str(k)[:40]!r}"
        if v is not None and type(v) not in (str, int, bool):
            return f"meta {k}: expected str, int, bool or null, got {_typename(v)}"
    return None


def _encode_section(name: str, sec: SectionData, types: Mapping[str, SectionType]) -> bytes:
    st = types.get(sec.type)
    if st is None:
        raise ValueError(f"section {name}: unknown type {sec.type!r}")
    if st.schema is None:
        if not isinstance(sec.data, bytes | bytearray | memoryview):
            raise ValueError(f"section {name}: expected bytes, got {_typename(sec.data)}")
        data = bytes(sec.data)
    else:
        plain = _convert(st.schema, sec.data, "", decode=False)
        data = json.dumps(plain, sort_keys=True, separators=(",", ":")).encode()
    if len(data) > st.max_size:
        raise ValueError(f"section {name}: {len(data)} bytes, more than the limit for "
                         f"{st.name!r} ({st.max_size} bytes)")
    return data


def write_snapshot(path: str | os.PathLike[str], sections: Mapping[str, SectionData],
                   meta: Mapping[str, str | int | bool | None], *,
                   types: Mapping[str, SectionType] = SECTION_TYPES,
                   inputs: Iterable[tuple[str, str | None]] = (),
                   created: str | None = None, compress: bool = True) -> None:
    """Write a snapshot of `sections` to `path`, atomically.

    Every section is checked against its type's schema first (SnapshotError naming the
    section and field). `inputs` are (what, path) pairs the snapshot must not overwrite
    (the guest, a disk image), refused as vmsim.files.refuse_overwrite does
    ("FILE: will not overwrite the guest file"). The file is
    written beside `path` under a temporary name, synced, then renamed over `path`: a
    failure (OutputError for an OSError) leaves no file, or the old one, in place.
    `created` (ISO 8601 UTC) defaults to now; `compress=False` stores members as they are.
    """
    name = os.fspath(path)
    for what, other in inputs:
        if other and same_file(name, other):
            raise SnapshotError(name, f"will not overwrite the {what}")
    try:
        mode = os.stat(name).st_mode
    except FileNotFoundError:
        pass
    except OSError as e:
        raise OutputError(name, e) from None
    else:
        if not stat.S_ISREG(mode):
            raise SnapshotError(name, f"exists and is not a regular file ({_kind(mode)})")
    if len(sections) > MAX_SECTIONS:
        raise SnapshotError(name, f"{len(sections)} sections, at most {MAX_SECTIONS}")
    bad = _check_meta(dict(meta))
    if bad:
        raise SnapshotError(name, bad)
    encoded: list[tuple[str, SectionData, bytes]] = []
    for sname, sec in sections.items():
        if type(sname) is not str or not _NAME.fullmatch(sname):
            raise SnapshotError(name, f"bad section name {str(sname)[:40]!r} "
                                "(lowercase letters, digits, _ and -, at most 64)")
        try:
            encoded.append((sname, sec, _encode_section(sname, sec, types)))
        except ValueError as e:
            msg = str(e)
            raise SnapshotError(name, msg if msg.startswith("section ")
                                else f"section {sname}: {msg}") from None
    if created is None:
        created = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "vmsim_version": __version__,
        "created": created,
        "meta": dict(meta),
        "sections": [{"name": sname, "type": sec.type, "encoding": types[sec.type].encoding,
                      "version": types[sec.type].version, "size": len(data),
                      "sha256": hashlib.sha256(data).hexdigest()}
                     for sname, sec, data in encoded],
    }
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    directory = os.path.dirname(os.path.abspath(name))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(name)}.", suffix=".tmp",
                                   dir=directory)
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # as open() would have made it, not mkstemp's 0600
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w") as zf:
                _add(zf, MANIFEST, json.dumps(manifest, indent=1).encode(), method, 6)
                for sname, sec, data in encoded:
                    st = types[sec.type]
                    # RAM is large and mostly zeros: level 1 is fast and nearly as small.
                    _add(zf, f"{sname}.{'bin' if st.schema is None else 'json'}", data,
                         method, 1 if st.schema is None else 6)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, name)
        tmp = None
    except OSError as e:
        raise OutputError(name, e) from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _add(zf: zipfile.ZipFile, member: str, data: bytes, method: int, level: int) -> None:
    info = zipfile.ZipInfo(member, date_time=_ZIP_EPOCH)
    info.compress_type = method
    info.external_attr = 0o644 << 16
    zf.writestr(info, data, compresslevel=level if method == zipfile.ZIP_DEFLATED else None)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    return "not a regular file"


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------

_EOCD = b"PK\x05\x06"
_EOCD_SIZE = 22


class _Refused(Exception):
    """One reason to refuse the file; read_snapshot adds the file's name."""


def _member_count(f: BinaryIO, size: int) -> int:
    """The member count of the zip's end of central directory record, read before
    zipfile parses the directory (whose size a hostile file chooses)."""
    if size == 0:
        raise _Refused("not a vmsim snapshot (empty file)")
    f.seek(0)
    is_zip = f.read(4) == b"PK\x03\x04"
    tail_len = min(size, _EOCD_SIZE + 0xFFFF)  # the record and the longest comment
    f.seek(size - tail_len)
    tail = f.read(tail_len)
    pos = tail.rfind(_EOCD)
    while pos >= 0 and pos + _EOCD_SIZE > len(tail):
        pos = tail.rfind(_EOCD, 0, pos)
    if pos < 0:
        if is_zip:
            raise _Refused("truncated or corrupt (no end of the zip directory)")
        raise _Refused("not a vmsim snapshot (not a zip archive)")
    entries = struct.unpack_from("<H", tail, pos + 10)[0]
    return entries


def _strict_json(data: bytes, what: str) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise ValueError(f"duplicate key {k[:40]!r}")
            out[k] = v
        return out

    def constant(c: str) -> Any:
        raise ValueError(f"{c} is not allowed")

    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=pairs,
                          parse_constant=constant)
    except UnicodeDecodeError:
        raise _Refused(f"{what}: not UTF-8") from None
    except RecursionError:
        raise _Refused(f"{what}: not valid JSON (nested too deeply)") from None
    except ValueError as e:  # JSONDecodeError, duplicate keys, an int of 4300+ digits
        raise _Refused(f"{what}: not valid JSON ({_one_line(e)[:120]})") from None


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, declared: int, what: str) -> bytes:
    """The member's bytes, at most `declared` of them: more is a refusal found while
    decompressing (never after), as is less."""
    chunks = []
    got = 0
    try:
        with zf.open(info) as m:
            while True:
                chunk = m.read(min(_READ_CHUNK, declared + 1 - got))
                if not chunk:
                    break
                got += len(chunk)
                if got > declared:
                    raise _Refused(f"{what}: more data than its declared size ({declared} bytes)")
                chunks.append(chunk)
    except zipfile.BadZipFile as e:
        if "CRC" in str(e):
            raise _Refused(f"{what}: checksum mismatch") from None
        raise _Refused(f"{what}: corrupt ({_one_line(e)[:120]})") from None
    except zlib.error:
        raise _Refused(f"{what}: corrupt compressed data") from None
    except (EOFError, OSError, ValueError, struct.error, NotImplementedError, RuntimeError,
            OverflowError) as e:
        raise _Refused(f"{what}: corrupt ({type(e).__name__}: {_one_line(e)[:100]})") from None
    if got < declared:
        raise _Refused(f"{what}: shorter than its declared size ({got} of {declared} bytes)")
    return b"".join(chunks)


def _check_manifest(m: Any) -> None:
    if type(m) is not dict:
        raise _Refused(f"not a vmsim snapshot (manifest.json is {_typename(m)}, not an object)")
    if m.get("format") != FORMAT_NAME:
        raise _Refused("not a vmsim snapshot (manifest.json has no format "
                       f"{FORMAT_NAME!r})")
    v = m.get("format_version")
    if type(v) is not int:
        raise _Refused(f"manifest.json: format_version: expected int, got {_typename(v)}")
    if v > FORMAT_VERSION:
        raise _Refused(f"format version {v} is newer than this vmsim reads ({FORMAT_VERSION})")
    if v < 1:
        raise _Refused(f"format version {v} does not exist")
    try:
        _convert({"format": str, "format_version": int, "vmsim_version": str,
                  "created": str, "meta": MapOf(str),
                  "sections": [{"name": str, "type": str, "encoding": str, "version": int,
                                "size": int, "sha256": str}]},
                 {**m, "meta": {}} if "meta" in m else m, "", decode=True)  # meta: below
    except ValueError as e:
        raise _Refused(f"manifest.json: {e}") from None
    bad = _check_meta(m["meta"])
    if bad:
        raise _Refused(f"manifest.json: {bad}")
    for key in ("vmsim_version", "created"):  # shown to users: printable ASCII, one line
        if not _PRINTABLE.fullmatch(m[key]):
            raise _Refused(f"manifest.json: {key}: not 1 to 100 printable ASCII characters")


def _plan_section(entry: dict[str, Any], types: Mapping[str, SectionType]) -> SectionType:
    name = entry["name"]
    what = f"section {name}"
    st = types.get(entry["type"])
    if st is None:
        shown = entry["type"][:40] if _TYPE.fullmatch(entry["type"][:64]) else "?"
        raise _Refused(f"{what}: unknown type {shown!r} (this vmsim reads "
                       f"{', '.join(sorted(types))})")
    if entry["encoding"] != st.encoding:
        raise _Refused(f"{what}: encoding {entry['encoding'][:20]!r}, but {st.name!r} is "
                       f"{st.encoding}")
    v = entry["version"]
    if v > st.version:
        raise _Refused(f"{what}: version {v} of {st.name!r} is newer than this vmsim "
                       f"reads ({st.version})")
    if v < st.version and v not in st.older:
        raise _Refused(f"{what}: version {v} of {st.name!r} is too old for this vmsim "
                       f"(it reads {', '.join(str(x) for x in sorted(st.older))}"
                       f"{', ' if st.older else ''}{st.version})")
    size = entry["size"]
    if not 0 <= size <= st.max_size:
        raise _Refused(f"{what}: size {size} bytes, more than the limit for {st.name!r} "
                       f"({st.max_size} bytes)" if size > 0 else f"{what}: size {size}")
    if not _SHA256.fullmatch(entry["sha256"]):
        raise _Refused(f"{what}: sha256 is not 64 lowercase hex digits")
    return st


def _load_section(data: bytes, entry: dict[str, Any], st: SectionType) -> Any:
    """Data of a section whose bytes passed their checksum: parsed, checked against the
    schema of its version, migrated version by version, checked against each."""
    what = f"section {entry['name']}"
    version = entry["version"]
    schema = st.older[version].schema if version < st.version else st.schema
    value: Any = data
    if schema is not None:
        value = _strict_json(data, what)
    while True:
        checked = value
        if schema is not None:
            try:
                checked = _convert(schema, value, "", decode=True)
            except ValueError as e:
                note = f" (version {version})" if version != st.version else ""
                raise _Refused(f"{what}{note}: {e}") from None
        if version == st.version:
            return checked
        try:
            # (on the data as the file holds it, bytes still hex: the next version's
            # schema checks and decodes what the migration made)
            value = st.older[version].migrate(value)
        except (ValueError, KeyError, TypeError, IndexError) as e:
            raise _Refused(f"{what}: migrating from version {version} failed "
                           f"({type(e).__name__}: {_one_line(e)[:100]})") from None
        version += 1
        if version < st.version and version not in st.older:
            raise _Refused(f"{what}: no migration from version {version} of {st.name!r}")
        schema = st.older[version].schema if version < st.version else st.schema


def read_snapshot(path: str | os.PathLike[str], *,
                  types: Mapping[str, SectionType] = SECTION_TYPES) -> Snapshot:
    """The snapshot at `path`, fully validated (see the module's docstring), or
    SnapshotError with a one-line "FILE: what is wrong"; never a part of one."""
    name = os.fspath(path)
    try:
        f = open_input_file(name)
    except InputError as e:
        raise SnapshotError(name, str(e).removeprefix(f"{name}: ")) from None
    try:
        with f:
            return _read(f, name, types)
    except _Refused as e:
        raise SnapshotError(name, str(e)) from None
    except OSError as e:  # reading the file itself failed (EIO)
        raise SnapshotError(name, f"cannot read: {e.strerror or e}") from None


def _read(f: BinaryIO, name: str, types: Mapping[str, SectionType]) -> Snapshot:
    size = os.fstat(f.fileno()).st_size
    if size > MAX_FILE:
        raise _Refused(f"{size} bytes, more than a snapshot can be ({MAX_FILE} bytes)")
    count = _member_count(f, size)
    if count > MAX_MEMBERS:
        raise _Refused(f"{count} members, more than a snapshot has (at most {MAX_MEMBERS})")
    f.seek(0)
    try:
        zf = zipfile.ZipFile(f)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, struct.error,
            NotImplementedError, UnicodeDecodeError) as e:
        raise _Refused(f"not a readable zip archive ({_one_line(e)[:120]})") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise _Refused(f"{len(infos)} members, more than a snapshot has "
                           f"(at most {MAX_MEMBERS})")
        members: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            if info.filename in members:
                raise _Refused(f"duplicate member {info.filename[:80]!r}")
            members[info.filename] = info
        if MANIFEST not in members:
            raise _Refused(f"not a vmsim snapshot (no {MANIFEST})")
        for info in infos:
            if info.filename != MANIFEST and not _MEMBER.fullmatch(info.filename):
                raise _Refused(f"unsafe member name {info.filename[:80]!r}")
            if info.flag_bits & 0x1:
                raise _Refused(f"member {info.filename} is encrypted")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise _Refused(f"member {info.filename}: compression method "
                               f"{info.compress_type} (vmsim writes stored or deflated)")
        mi = members[MANIFEST]
        if mi.file_size > MAX_MANIFEST:
            raise _Refused(f"{MANIFEST}: {mi.file_size} bytes, more than {MAX_MANIFEST}")
        manifest = _strict_json(_read_member(zf, mi, mi.file_size, MANIFEST), MANIFEST)
        _check_manifest(manifest)

        entries: list[dict[str, Any]] = manifest["sections"]
        if len(entries) > MAX_SECTIONS:
            raise _Refused(f"{MANIFEST}: {len(entries)} sections, at most {MAX_SECTIONS}")
        plans: list[tuple[dict[str, Any], SectionType, zipfile.ZipInfo]] = []
        named: set[str] = {MANIFEST}
        total = 0
        for entry in entries:
            sname = entry["name"]
            if not _NAME.fullmatch(sname):
                raise _Refused(f"{MANIFEST}: bad section name {sname[:40]!r}")
            st = _plan_section(entry, types)
            member = f"{sname}.{'bin' if st.schema is None else 'json'}"
            if member in named:
                raise _Refused(f"{MANIFEST}: section {sname} is named twice")
            named.add(member)
            info = members.get(member)
            if info is None:
                raise _Refused(f"section {sname}: missing (named in the manifest, no "
                               f"member {member})")
            if info.file_size != entry["size"]:
                raise _Refused(f"section {sname}: size mismatch (manifest {entry['size']} "
                               f"bytes, archive {info.file_size} bytes)")
            total += entry["size"]
            plans.append((entry, st, info))
        extra = [n for n in members if n not in named]
        if extra:
            raise _Refused(f"member {extra[0]} is not in the manifest")
        if total > MAX_TOTAL:
            raise _Refused(f"sections of {total} bytes in all, more than {MAX_TOTAL}")

        sections: dict[str, SectionData] = {}
        versions: dict[str, int] = {}
        for entry, st, info in plans:
            what = f"section {entry['name']}"
            data = _read_member(zf, info, entry["size"], what)
            if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                raise _Refused(f"{what}: checksum mismatch")
            sections[entry["name"]] = SectionData(st.name, _load_section(data, entry, st))
            versions[entry["name"]] = entry["version"]
    return Snapshot(name, manifest["format_version"], manifest["vmsim_version"],
                    manifest["created"], dict(manifest["meta"]), sections, versions)
