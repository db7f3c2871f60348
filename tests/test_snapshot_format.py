"""The snapshot file format (vmsim/snapshot_format.py): round trips, atomic writes, and
every refusal with its exact one-line message."""

from __future__ import annotations

import errno
import io
import json
import os
import struct
import warnings
import zipfile
from pathlib import Path

import pytest

from tests import snapshot_samples as samples
from vmsim import __version__
from vmsim import snapshot_format as sf
from vmsim.files import OutputError
from vmsim.snapshot_format import SectionData, SnapshotError, read_snapshot, write_snapshot

META = {"guest": "hello.asm", "backend": "sim", "instructions": 12345, "irqchip": True,
        "note": None}


def _write(path: Path, **kw) -> Path:
    write_snapshot(path, samples.sections(), META, types=samples.TYPES,
                   created=samples.CREATED, **kw)
    return path


def _refusal(path: Path) -> str:
    with pytest.raises(SnapshotError) as e:
        read_snapshot(path, types=samples.TYPES)
    text = str(e.value)
    assert "\n" not in text
    return text


def _members(path: Path) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(path) as zf:
        return [(i.filename, zf.read(i)) for i in zf.infolist()]


def _zip(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile's "Duplicate name"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in members:
                zf.writestr(name, data)
    return path


def _with_manifest(src: Path, dst: Path, edit) -> Path:
    members = _members(src)
    manifest = json.loads(members[0][1])
    edit(manifest)
    return _zip(dst, [("manifest.json", json.dumps(manifest).encode()), *members[1:]])


def _section_entry(manifest: dict, name: str) -> dict:
    return next(e for e in manifest["sections"] if e["name"] == name)


# --- round trips ------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False], ids=["deflated", "stored"])
def test_round_trip_every_kind_of_section(tmp_path: Path, compress: bool) -> None:
    path = _write(tmp_path / "s.vmsnap", compress=compress)
    snap = read_snapshot(path, types=samples.TYPES)
    assert snap.sections == samples.sections()
    assert snap.meta == META
    assert (snap.format_version, snap.vmsim_version, snap.created) == (1, __version__,
                                                                        samples.CREATED)
    assert snap.section_versions == {"cpu0": 2, "cpu1": 2, "pic": 1, "ram": 1}
    assert type(snap.sections["pic"].data["blob"]) is bytes


def test_file_is_self_describing(tmp_path: Path) -> None:
    """unzip shows a manifest naming every section with its type, version, size and
    SHA-256; JSON sections are readable JSON, bytes fields in hex, RAM raw."""
    path = _write(tmp_path / "s.vmsnap")
    members = dict(_members(path))
    assert list(members) == ["manifest.json", "cpu0.json", "cpu1.json", "pic.json", "ram.bin"]
    manifest = json.loads(members["manifest.json"])
    assert manifest["format"] == "vmsim-snapshot" and manifest["format_version"] == 1
    ram = _section_entry(manifest, "ram")
    assert ram == {"name": "ram", "type": "ram", "encoding": "binary", "version": 1,
                   "size": 64 << 10, "sha256": __import__("hashlib").sha256(
                       members["ram.bin"]).hexdigest()}
    assert json.loads(members["pic.json"])["blob"] == bytes(range(256)).hex()
    assert members["ram.bin"][0x7C00] == 0xB8


def test_same_state_same_bytes_and_ram_compresses(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.vmsnap").read_bytes()
    assert _write(tmp_path / "b.vmsnap").read_bytes() == a
    assert len(a) < 8 << 10  # 64 KiB of mostly-zero RAM deflated


def test_writer_refuses_data_its_reader_would_refuse(tmp_path: Path) -> None:
    bad = samples.sections()
    bad["pic"] = SectionData("demo-device", {**bad["pic"].data, "fifo": [1, True]})
    path = tmp_path / "s.vmsnap"
    with pytest.raises(SnapshotError) as e:
        write_snapshot(path, bad, {}, types=samples.TYPES)
    assert str(e.value) == f"{path}: section pic: field fifo[1]: expected int, got bool"
    with pytest.raises(SnapshotError, match=r": section x: unknown type 'nope'$"):
        write_snapshot(path, {"x": SectionData("nope", {})}, {}, types=samples.TYPES)
    with pytest.raises(SnapshotError, match=r": bad section name '\.\./x'"):
        write_snapshot(path, {"../x": samples.sections()["ram"]}, {}, types=samples.TYPES)
    with pytest.raises(SnapshotError, match=r": meta: bad key 'a b'$"):
        write_snapshot(path, {}, {"a b": 1}, types=samples.TYPES)
    assert not path.exists()


# --- atomic write -----------------------------------------------------------------------


def _fail_on_third_member(monkeypatch: pytest.MonkeyPatch) -> None:
    real = sf._add
    calls = []

    def add(*args, **kw):
        calls.append(args[1])
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(*args, **kw)

    monkeypatch.setattr(sf, "_add", add)


def test_failure_mid_write_leaves_old_file_intact(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.vmsnap"
    path.write_bytes(b"the old snapshot")
    _fail_on_third_member(monkeypatch)
    with pytest.raises(OutputError) as e:
        _write(path)
    assert str(e.value) == f"{path}: cannot write: No space left on device"
    assert path.read_bytes() == b"the old snapshot"
    assert os.listdir(tmp_path) == ["s.vmsnap"]  # no temporary file left behind


def test_failure_mid_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fail_on_third_member(monkeypatch)
    with pytest.raises(OutputError):
        _write(tmp_path / "s.vmsnap")
    assert os.listdir(tmp_path) == []


def test_write_replaces_old_file_and_uses_umask_permissions(tmp_path: Path) -> None:
    path = tmp_path / "s.vmsnap"
    path.write_bytes(b"old")
    _write(path)
    assert read_snapshot(path, types=samples.TYPES).sections == samples.sections()
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_write_refuses_to_overwrite_an_input(tmp_path: Path) -> None:
    guest = tmp_path / "g.asm"
    guest.write_text("hlt\n")
    link = tmp_path / "link.vmsnap"
    link.symlink_to(guest)
    with pytest.raises(SnapshotError) as e:
        _write(link, inputs=[("guest file", str(guest))])
    assert str(e.value) == f"{link}: will not overwrite the guest file"
    assert guest.read_text() == "hlt\n"


def test_write_refuses_a_directory_or_fifo(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError) as e:
        _write(tmp_path)
    assert str(e.value) == f"{tmp_path}: exists and is not a regular file (a directory)"
    fifo = tmp_path / "p"
    os.mkfifo(fifo)
    with pytest.raises(SnapshotError, match=r"\(a FIFO \(named pipe\)\)$"):
        _write(fifo)


# --- refusals ---------------------------------------------------------------------------


@pytest.fixture
def good(tmp_path: Path) -> Path:
    return _write(tmp_path / "good.vmsnap", compress=False)


def test_truncated_file_at_several_lengths(good: Path, tmp_path: Path) -> None:
    data = good.read_bytes()
    expected = {0: "not a vmsim snapshot (empty file)",
                2: "not a vmsim snapshot (not a zip archive)"}
    for n in (0, 2, 4, 30, 100, len(data) // 2, len(data) - 22, len(data) - 1):
        path = tmp_path / f"t{n}.vmsnap"
        path.write_bytes(data[:n])
        what = expected.get(n, "truncated or corrupt (no end of the zip directory)")
        assert _refusal(path) == f"{path}: {what}", n


@pytest.mark.parametrize("compress", [False, True], ids=["stored", "deflated"])
def test_flipped_byte_in_each_member(tmp_path: Path, compress: bool) -> None:
    src = _write(tmp_path / "src.vmsnap", compress=compress)
    data = src.read_bytes()
    with zipfile.ZipFile(src) as zf:
        infos = zf.infolist()
    for info in infos:
        # The member's data starts after its local header (30 bytes, name, extra field).
        name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)
        start = info.header_offset + 30 + name_len + extra_len
        # The last byte of a deflate stream may hold unused padding bits: skip it there.
        last = () if compress else (info.compress_size - 1,)
        for where in (0, info.compress_size // 2, *last):
            bad = bytearray(data)
            bad[start + where] ^= 0x10
            path = tmp_path / f"{info.filename}-{where}.vmsnap"
            path.write_bytes(bad)
            what = "manifest.json" if info.filename == "manifest.json" else \
                f"section {info.filename.rsplit('.', 1)[0]}"
            if not compress:
                assert _refusal(path) == f"{path}: {what}: checksum mismatch"
                continue
            # Deflated, the inflater may notice first, or the CRC and SHA-256 after; or the
            # flip changes nothing (a match's distance within a run of zero bytes): then
            # the snapshot must load with exactly the data written, never other data.
            try:
                snap = read_snapshot(path, types=samples.TYPES)
            except SnapshotError as e:
                assert str(e) in {f"{path}: {what}: checksum mismatch",
                                  f"{path}: {what}: corrupt compressed data"}, str(e)
            else:
                assert snap.sections == samples.sections()


def test_sha256_mismatch_behind_a_good_zip_crc(good: Path, tmp_path: Path) -> None:
    def edit(m):
        _section_entry(m, "cpu1")["sha256"] = "0" * 64

    path = _with_manifest(good, tmp_path / "x.vmsnap", edit)
    assert _refusal(path) == f"{path}: section cpu1: checksum mismatch"


def test_newer_format_version(good: Path, tmp_path: Path) -> None:
    path = _with_manifest(good, tmp_path / "x.vmsnap", lambda m: m.update(format_version=3))
    assert _refusal(path) == f"{path}: format version 3 is newer than this vmsim reads (1)"


def test_newer_and_too_old_section_version(good: Path, tmp_path: Path) -> None:
    path = _with_manifest(good, tmp_path / "x.vmsnap",
                          lambda m: _section_entry(m, "cpu0").update(version=3))
    assert _refusal(path) == (f"{path}: section cpu0: version 3 of 'demo-cpu' is newer "
                              "than this vmsim reads (2)")
    path = _with_manifest(good, tmp_path / "y.vmsnap",
                          lambda m: _section_entry(m, "cpu0").update(version=0))
    assert _refusal(path) == (f"{path}: section cpu0: version 0 of 'demo-cpu' is too old "
                              "for this vmsim (it reads 1, 2)")


def test_unknown_section_type(good: Path, tmp_path: Path) -> None:
    path = _with_manifest(good, tmp_path / "x.vmsnap",
                          lambda m: _section_entry(m, "pic").update(type="i8259"))
    assert _refusal(path) == (f"{path}: section pic: unknown type 'i8259' (this vmsim "
                              "reads demo-cpu, demo-device, ram)")


def test_foreign_zip_and_non_zip(tmp_path: Path) -> None:
    path = _zip(tmp_path / "f.zip", [("hello.txt", b"hi")])
    assert _refusal(path) == f"{path}: not a vmsim snapshot (no manifest.json)"
    path = _zip(tmp_path / "g.zip", [("manifest.json", b'{"format": "other"}')])
    assert _refusal(path) == (f"{path}: not a vmsim snapshot (manifest.json has no format "
                              "'vmsim-snapshot')")
    path = tmp_path / "h.vmsnap"
    path.write_text("hello, world\n" * 10)
    assert _refusal(path) == f"{path}: not a vmsim snapshot (not a zip archive)"


def test_directory_fifo_and_missing_file(tmp_path: Path) -> None:
    assert _refusal(tmp_path) == f"{tmp_path}: a directory, not a regular file"
    fifo = tmp_path / "p.vmsnap"
    os.mkfifo(fifo)
    assert _refusal(fifo) == f"{fifo}: a FIFO (named pipe), not a regular file"
    assert _refusal(tmp_path / "no") == f"{tmp_path / 'no'}: No such file or directory"


def _patch_sizes(data: bytes, member: str, size: int) -> bytes:
    """`member`'s uncompressed size rewritten in its local header and directory entry."""
    out = bytearray(data)
    name = member.encode()
    for sig, name_at, size_at in ((b"PK\x03\x04", 30, 22), (b"PK\x01\x02", 46, 24)):
        pos = out.find(sig)
        while pos >= 0:
            if out[pos + name_at:pos + name_at + len(name)] == name:
                struct.pack_into("<I", out, pos + size_at, size)
            pos = out.find(sig, pos + 1)
    return bytes(out)


def test_zip_bomb(good: Path, tmp_path: Path) -> None:
    """20 MiB of JSON deflates to about 20 KiB; the reader never inflates more than the
    manifest declares, and refuses a declared size above the section type's cap."""
    bomb = b"[" + b" " * (20 << 20) + b"]"
    members = _members(good)
    manifest = json.loads(members[0][1])
    entry = _section_entry(manifest, "pic")
    entry["size"] = len(bomb)
    path = _zip(tmp_path / "a.vmsnap", [("manifest.json", json.dumps(manifest).encode()),
                                         *[(n, bomb if n == "pic.json" else d)
                                           for n, d in members[1:]]])
    assert path.stat().st_size < 64 << 10
    assert _refusal(path) == (f"{path}: section pic: size {len(bomb)} bytes, more than the "
                              "limit for 'demo-device' (16777216 bytes)")
    # The manifest and the zip directory both lie (100 bytes): 100 are inflated, then the
    # zip's CRC (over the whole bomb) fails.
    entry["size"] = 100
    path = _zip(tmp_path / "b.vmsnap", [("manifest.json", json.dumps(manifest).encode()),
                                         *[(n, bomb if n == "pic.json" else d)
                                           for n, d in members[1:]]])
    path.write_bytes(_patch_sizes(path.read_bytes(), "pic.json", 100))
    assert _refusal(path) == f"{path}: section pic: checksum mismatch"
    # Only the zip directory lies: its size disagrees with the manifest's.
    path = _zip(tmp_path / "c.vmsnap", [("manifest.json", json.dumps(manifest).encode()),
                                         *[(n, bomb if n == "pic.json" else d)
                                           for n, d in members[1:]]])
    assert _refusal(path) == (f"{path}: section pic: size mismatch (manifest 100 bytes, "
                              f"archive {len(bomb)} bytes)")


def test_too_many_members(tmp_path: Path) -> None:
    path = _zip(tmp_path / "m.vmsnap", [(f"s{i}.json", b"") for i in range(sf.MAX_MEMBERS + 1)])
    assert _refusal(path) == (f"{path}: {sf.MAX_MEMBERS + 1} members, more than a snapshot "
                              f"has (at most {sf.MAX_MEMBERS})")


@pytest.mark.parametrize("name", ["../evil.json", "/etc/passwd", "sub/cpu0.json",
                                  "CPU0.json", "cpu0.pkl", "a\nb.json"])
def test_path_traversal_and_odd_member_names(good: Path, tmp_path: Path, name: str) -> None:
    path = _zip(tmp_path / "x.vmsnap", [*_members(good), (name, b"{}")])
    assert _refusal(path) == f"{path}: unsafe member name {name!r}"


def test_duplicate_members(good: Path, tmp_path: Path) -> None:
    members = _members(good)
    path = _zip(tmp_path / "x.vmsnap", [*members, members[1]])
    assert _refusal(path) == f"{path}: duplicate member 'cpu0.json'"


def test_missing_section_and_extra_member(good: Path, tmp_path: Path) -> None:
    members = _members(good)
    path = _zip(tmp_path / "x.vmsnap", [m for m in members if m[0] != "cpu1.json"])
    assert _refusal(path) == (f"{path}: section cpu1: missing (named in the manifest, no "
                              "member cpu1.json)")
    path = _zip(tmp_path / "y.vmsnap", [*members, ("notes.json", b"{}")])
    assert _refusal(path) == f"{path}: member notes.json is not in the manifest"


def _with_pic(good: Path, dst: Path, pic: bytes) -> Path:
    """`good` with pic.json replaced by `pic`, the manifest's size and SHA-256 updated."""
    import hashlib

    members = _members(good)
    manifest = json.loads(members[0][1])
    _section_entry(manifest, "pic").update(size=len(pic), sha256=hashlib.sha256(pic).hexdigest())
    return _zip(dst, [("manifest.json", json.dumps(manifest).encode()),
                      *[(n, pic if n == "pic.json" else d) for n, d in members[1:]]])


@pytest.mark.parametrize(("edit", "what"), [
    (lambda d: d.update(irr="1"), "field irr: expected int, got str"),
    (lambda d: d.update(enabled=1), "field enabled: expected bool, got int"),
    (lambda d: d.update(irr=1.5), "field irr: expected int, got float"),
    (lambda d: d["fifo"].append(None), "field fifo[3]: expected int, got null"),
    (lambda d: d.update(blob="0g"), "field blob: expected bytes as lowercase hex, got str"),
    (lambda d: d["names"][0].append(7), "field names[0][2]: expected str, got int"),
    (lambda d: d["timers"]["rtc"].update(deadline="x"),
     "field timers.rtc.deadline: expected int, got str"),
    (lambda d: d["timers"].update({"a b": {"deadline": 1, "period": 1}}),
     "field timers: bad key 'a b'"),
    (lambda d: d.pop("label"), "missing field 'label'"),
    (lambda d: d.update(extra=1), "unknown field 'extra'"),
])
def test_json_section_against_its_schema(good: Path, tmp_path: Path, edit, what: str) -> None:
    pic = json.loads(dict(_members(good))["pic.json"])
    edit(pic)
    path = _with_pic(good, tmp_path / "x.vmsnap", json.dumps(pic).encode())
    assert _refusal(path) == f"{path}: section pic: {what}"


@pytest.mark.parametrize(("text", "what"), [
    (b'{"irr": 1, "irr": 2}', "not valid JSON (duplicate key 'irr')"),
    (b'{"irr": NaN}', "not valid JSON (NaN is not allowed)"),
    (b"[" * 100_000 + b"]" * 100_000, "not valid JSON (nested too deeply)"),
    (b"\xff{}", "not UTF-8"),
    (b'{"irr": 1', "not valid JSON (Expecting ',' delimiter: line 1 column 10 (char 9))"),
])
def test_json_section_that_is_not_strict_json(good: Path, tmp_path: Path, text: bytes,
                                              what: str) -> None:
    path = _with_pic(good, tmp_path / "x.vmsnap", text)
    assert _refusal(path) == f"{path}: section pic: {what}"


def test_huge_int_digits_refused(good: Path, tmp_path: Path) -> None:
    path = _with_pic(good, tmp_path / "x.vmsnap", b'{"irr": ' + b"9" * 5000 + b"}")
    assert _refusal(path).startswith(f"{path}: section pic: not valid JSON (Exceeds the limit")


def test_manifest_shape(good: Path, tmp_path: Path) -> None:
    path = _with_manifest(good, tmp_path / "a.vmsnap",
                          lambda m: _section_entry(m, "ram").update(size="65536"))
    assert _refusal(path) == f"{path}: manifest.json: field sections[3].size: expected int, got str"
    path = _with_manifest(good, tmp_path / "b.vmsnap", lambda m: m["meta"].update(x=[1]))
    assert _refusal(path) == (f"{path}: manifest.json: meta x: expected str, int, bool or "
                              "null, got list")
    path = _with_manifest(good, tmp_path / "c.vmsnap",
                          lambda m: _section_entry(m, "ram").update(name="../ram"))
    assert _refusal(path) == f"{path}: manifest.json: bad section name '../ram'"
    path = _with_manifest(good, tmp_path / "d.vmsnap",
                          lambda m: m["sections"].append(dict(m["sections"][0])))
    assert _refusal(path) == f"{path}: manifest.json: section cpu0 is named twice"


def test_never_half_loaded(good: Path, tmp_path: Path) -> None:
    """A bad last section refuses the whole file: no Snapshot with the first sections."""
    members = _members(good)
    ram = bytearray(members[-1][1])
    ram[5] ^= 1
    path = _zip(tmp_path / "x.vmsnap", [*members[:-1], ("ram.bin", bytes(ram))])
    assert _refusal(path) == f"{path}: section ram: checksum mismatch"


# --- older versions ---------------------------------------------------------------------


def test_checked_in_version_1_file_still_loads() -> None:
    """tests/data/snapshots/format1-demo-cpu1.vmsnap: format version 1, its demo-cpu
    section at version 1, written once (VMSIM_REGENERATE_SNAPSHOTS=1 writes it again)."""
    if os.environ.get("VMSIM_REGENERATE_SNAPSHOTS"):
        samples.V1_FILE.parent.mkdir(parents=True, exist_ok=True)
        write_snapshot(samples.V1_FILE, samples.v1_sections(), {"guest": "v1.asm"},
                       types=samples.V1_TYPES, created=samples.CREATED)
    snap = read_snapshot(samples.V1_FILE, types=samples.TYPES)
    assert snap.format_version == 1
    assert snap.section_versions == {"cpu0": 1, "ram": 1}
    assert snap.sections["cpu0"] == SectionData(
        "demo-cpu", {"regs": {"eax": 0x1234, "eip": 0x7C05}, "halted": False})
    assert snap.sections["ram"].data == b"\xf4" + bytes(4095)
    assert snap.meta == {"guest": "v1.asm"}


def test_older_section_checked_against_its_own_schema(tmp_path: Path) -> None:
    members = _members(samples.V1_FILE)
    import hashlib

    cpu = b'{"eax": "1", "eip": 0}'
    manifest = json.loads(members[0][1])
    _section_entry(manifest, "cpu0").update(size=len(cpu), sha256=hashlib.sha256(cpu).hexdigest())
    path = _zip(tmp_path / "x.vmsnap", [("manifest.json", json.dumps(manifest).encode()),
                                         ("cpu0.json", cpu), members[2]])
    assert _refusal(path) == f"{path}: section cpu0 (version 1): field eax: expected int, got str"


def test_read_snapshot_defaults_to_the_machine_s_types(good: Path) -> None:
    """The default table holds the machine's types (vmsim.snapshot adds them); a demo
    section is an unknown type, and the refusal lists the known ones."""
    import vmsim.snapshot  # noqa: F401 - the machine's section types

    with pytest.raises(SnapshotError, match=r": section cpu0: unknown type 'demo-cpu' "
                                            r"\(this vmsim reads .*\bram\b.*vmsim-session") as e:
        read_snapshot(good)
    assert "\n" not in str(e.value)


def test_error_is_one_line_for_a_hostile_name(good: Path, tmp_path: Path) -> None:
    path = _zip(tmp_path / "x.vmsnap", [*_members(good), ("x\r\n\u2028.json", b"")])
    assert "\n" not in _refusal(path)
    assert io.StringIO(_refusal(path)).read().count("\r") == 0


# --- structure-aware mutation: past the zip's CRCs, into the manifest and the schemas -----

_VALUES = (0, -1, 1 << 64, -(1 << 70), 1.5, True, False, None, "", "x", "../x", "a b",
           "0" * 64, "ram", "demo-cpu", "json", "binary", [], [1], [[]], {}, {"a": 1},
           "\u2028\n", "ff", "fg", 2, 3, 16 << 20, 3 << 30)


def _mutate_json(rng, value):
    """`value` with one node replaced, one key dropped or one key added, at random."""
    if isinstance(value, dict) and value and rng.random() < 0.7:
        key = rng.choice(list(value))
        choice = rng.random()
        if choice < 0.1:
            value = {k: v for k, v in value.items() if k != key}
        elif choice < 0.2:
            value = {**value, rng.choice(("extra", "x y", key + "_")): rng.choice(_VALUES)}
        else:
            value = {**value, key: _mutate_json(rng, value[key])}
        return value
    if isinstance(value, list) and value and rng.random() < 0.7:
        i = rng.randrange(len(value))
        return [*value[:i], _mutate_json(rng, value[i]), *value[i + 1:]]
    return rng.choice(_VALUES)


def test_mutated_manifest_and_sections_load_or_are_refused(tmp_path: Path) -> None:
    """Mutations a byte fuzzer cannot reach (the zip's CRC and the SHA-256 are made to
    match): each file loads with data its schemas allow, or is refused in one line."""
    import hashlib
    import random

    from tests.fuzz.mutate import mutate_bytes

    rng = random.Random(20261129)
    src = _write(tmp_path / "src.vmsnap")
    members = _members(src)
    loaded = refused = 0
    for i in range(int(os.environ.get("VMSIM_FUZZ", 0)) or 400):
        manifest = json.loads(members[0][1])
        sections = dict(members[1:])
        target = rng.choice(["manifest.json", *sections])
        if target == "manifest.json":
            manifest = _mutate_json(rng, manifest)
        else:
            if target.endswith(".json") and rng.random() < 0.7:
                data = json.dumps(_mutate_json(rng, json.loads(sections[target]))).encode()
            else:
                data = mutate_bytes(rng, [sections[target]])
            sections[target] = data
            _section_entry(manifest, target.rsplit(".", 1)[0]).update(
                size=len(data), sha256=hashlib.sha256(data).hexdigest())
        path = _zip(tmp_path / f"m{i}.vmsnap",
                    [("manifest.json", json.dumps(manifest).encode()), *sections.items()])
        try:
            snap = read_snapshot(path, types=samples.TYPES)
        except SnapshotError as e:
            assert "\n" not in str(e) and str(e).startswith(f"{path}: ")
            refused += 1
        else:
            for name, sec in snap.sections.items():  # what loaded, the writer accepts
                write_snapshot(tmp_path / "again.vmsnap", {name: sec}, snap.meta,
                               types=samples.TYPES)
            loaded += 1
    assert refused > i // 2 and loaded > 0, (refused, loaded)


def test_manifest_strings_shown_to_users_are_one_printable_line(good: Path, tmp_path: Path) -> None:
    path = _with_manifest(good, tmp_path / "x.vmsnap", lambda m: m.update(created="a\nb"))
    assert _refusal(path) == (f"{path}: manifest.json: created: not 1 to 100 printable "
                              "ASCII characters")
