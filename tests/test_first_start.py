"""The first minutes (issue 13): `vmsim` alone opens the GUI on the first lesson or on
hello.asm; before Qt starts, a missing Qt platform library or display is one line naming
what to install, status 69, never Qt's abort. Faked libraries: nothing is uninstalled."""

from __future__ import annotations

from pathlib import Path

import pytest

import ui.app
from ui import platform_check
from ui.platform_check import GUI_PACKAGES, parse_ldd, platform_problem
from vmsim.cli import EXIT_BAD_INPUT, EXIT_UNAVAILABLE, main

ROOT = Path(__file__).resolve().parents[1]
HELLO = ROOT / "sample_guests" / "hello.asm"

LDD = """\tlinux-vdso.so.1 (0x00007ffd)
\tlibQt6XcbQpa.so.6 => /v/PySide6/Qt/lib/libQt6XcbQpa.so.6 (0x00007f5)
\tlibxcb-cursor.so.0 => /lib/x86_64-linux-gnu/libxcb-cursor.so.0 (0x00007f4)
\tlibxcb-icccm.so.4 => not found
\tlibxcb-keysyms.so.1 => not found
\tlibxcb-icccm.so.4 => not found
"""


def test_no_arguments_is_the_gui(monkeypatch) -> None:
    seen = []
    monkeypatch.setattr(ui.app, "main", lambda args: seen.append(args) or 0)
    assert main([]) == 0
    assert seen and seen[0].command == "gui" and seen[0].guest is None


def test_help_and_a_wrong_command_still_work(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "With no arguments, vmsim opens the GUI" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["frobnicate"])
    assert e.value.code == EXIT_BAD_INPUT
    assert "invalid choice" in capsys.readouterr().err


def test_vmsim_alone_opens_the_lesson_last_at_else_the_first(tmp_path, monkeypatch) -> None:
    """default_lesson (issue 14): no lessons, hello.asm; else the lesson Progress says the
    student was last at, else the first by number; a lesson that cannot be read is passed
    over. The engine's fixture lesson, copied twice (ids "first" and "everything")."""
    import shutil

    from vmsim.lessons.progress import Progress

    monkeypatch.setenv("VMSIM_DATA_DIR", str(tmp_path / "data"))
    lessons = tmp_path / "lessons"
    assert ui.app.default_lesson([lessons]) is None  # no lessons/ yet
    if ui.app.first_lesson_guest() is None:
        assert ui.app.default_guest() == HELLO
    fixture = ROOT / "tests" / "data" / "lessons" / "01-everything"
    shutil.copytree(fixture, lessons / "02-everything")
    shutil.copytree(fixture, lessons / "01-first")
    toml = lessons / "01-first" / "lesson.toml"
    toml.write_text(toml.read_text(encoding="utf-8").replace('id = "everything"', 'id = "first"'),
                    encoding="utf-8")
    (lessons / "00-broken").mkdir()
    (lessons / "00-broken" / "lesson.toml").write_text("format = [\n", encoding="utf-8")
    assert ui.app.default_lesson([lessons]).id == "first"  # lesson 1, the broken one passed over
    progress = Progress.load()
    progress.set_current("everything", "who-handles")
    progress.save()
    assert ui.app.default_lesson([lessons]).id == "everything"  # where the student was
    assert ui.app.first_lesson_guest(lessons) == lessons / "02-everything" / "guest.asm"
    progress.data["last_lesson"] = "gone-since"
    progress.save()
    assert ui.app.default_lesson([lessons]).id == "first"
    monkeypatch.setenv("VMSIM_LESSONS", str(lessons))
    assert ui.app.default_guest() == lessons / "01-first" / "guest.asm"


def test_parse_ldd() -> None:
    assert parse_ldd(LDD) == ["libxcb-icccm.so.4", "libxcb-keysyms.so.1"]


@pytest.fixture
def x11(monkeypatch):
    """An X11 session (DISPLAY set, no platform named) where two libraries are missing."""
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("DISPLAY", ":99")
    monkeypatch.setattr(platform_check, "xcb_plugin", lambda: Path("/x/libqxcb.so"))
    monkeypatch.setattr(platform_check, "missing_libraries",
                        lambda plugin: ["libxcb-icccm.so.4", "libxcb-keysyms.so.1"])


def test_missing_xcb_libraries_are_one_line_naming_the_packages(x11, capsys) -> None:
    assert main(["gui", str(HELLO)]) == EXIT_UNAVAILABLE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("vmsim gui: Qt's X11 (xcb) platform plugin cannot load: "
                          "libxcb-icccm.so.4, libxcb-keysyms.so.1 are missing; "
                          "sudo apt-get install libxcb-icccm4 libxcb-keysyms1 ")
    assert "--screenshot" in err


def test_no_display_is_one_line(x11, monkeypatch, capsys) -> None:
    monkeypatch.delenv("DISPLAY")
    assert main(["gui"]) == EXIT_UNAVAILABLE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "DISPLAY is not set" in err and "--screenshot" in err


@pytest.mark.parametrize("env", [{"QT_QPA_PLATFORM": "offscreen", "DISPLAY": ":0"},
                                 {"QT_QPA_PLATFORM": "wayland"}, {"WAYLAND_DISPLAY": "wayland-0"},
                                 {"QT_QPA_PLATFORM": "xcb", "DISPLAY": ":0"}])
def test_only_xcb_is_checked(env, monkeypatch) -> None:
    monkeypatch.setattr(platform_check, "missing_libraries", lambda plugin: [])
    assert platform_problem(env) is None
    if env.get("QT_QPA_PLATFORM") != "xcb":  # another platform: the libraries are not looked at
        assert platform_problem(env, missing=lambda p: pytest.fail("looked")) is None


def test_an_unknown_library_is_named(x11) -> None:
    msg = platform_problem(missing=lambda plugin: ["libxcb-icccm.so.4", "libweird.so.9"])
    assert "sudo apt-get install libxcb-icccm4; and whatever provides libweird.so.9" in msg


def test_the_real_plugin_check_runs() -> None:
    """On this machine, ldd on PySide6's real xcb plugin: whatever it finds missing has a
    Debian package in the table (the table covers what the plugin needs)."""
    plugin = platform_check.xcb_plugin()
    if plugin is None:
        pytest.skip("no PySide6 xcb plugin here")
    for soname in platform_check.missing_libraries(plugin):
        assert soname in platform_check.DEBIAN_PACKAGES, soname


def test_readme_installs_them_before_the_quick_start() -> None:
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1]
    assert quick.index(f"sudo apt-get install {' '.join(GUI_PACKAGES)}") < quick.index("pip install")
    for pkg in ("libxcb-cursor0", "libxcb-icccm4", "libxcb-keysyms1"):
        assert pkg in GUI_PACKAGES
