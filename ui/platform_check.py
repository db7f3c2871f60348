"""Before Qt starts: can its platform plugin load here?

Qt aborts the process (SIGABRT, a core dump) when its platform plugin cannot load, with
a message that names the plugin, not the library it lacks: on a stock Debian the xcb
plugin of PySide6's wheel needs libxcb-icccm4, libxcb-keysyms1 and libxcb-cursor0, which
a machine without a full desktop may not have. `platform_problem()` finds that first and
says it in one line: which Debian packages to install, or that there is no display.

Only the xcb platform is checked (X11: DISPLAY set, QT_QPA_PLATFORM unset or xcb): a
platform given by name (offscreen, wayland, vnc ...) and a Wayland session are Qt's to
load. The libraries are found as the dynamic loader finds them, with `ldd` on the plugin
(Debian's libc-bin, always installed); where there is no ldd nothing is checked.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

# What the xcb plugin and the Qt libraries under it load, by soname, and the Debian (and
# Ubuntu) package that has it. `ldd` lists them for this PySide6 with:
#   ldd .venv/lib/python3.11/site-packages/PySide6/Qt/plugins/platforms/libqxcb.so
DEBIAN_PACKAGES: dict[str, str] = {
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxcb.so.1": "libxcb1",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libX11.so.6": "libx11-6",
    "libXau.so.6": "libxau6",
    "libXdmcp.so.6": "libxdmcp6",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libGL.so.1": "libgl1",
    "libGLX.so.0": "libglx0",
    "libGLdispatch.so.0": "libglvnd0",
    "libEGL.so.1": "libegl1",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libdbus-1.so.3": "libdbus-1-3",
    "libglib-2.0.so.0": "libglib2.0-0",
    "libgthread-2.0.so.0": "libglib2.0-0",
    "libpng16.so.16": "libpng16-16",
    "libexpat.so.1": "libexpat1",
    "libz.so.1": "zlib1g",
    "libzstd.so.1": "libzstd1",
    "libbrotlidec.so.1": "libbrotli1",
    "libbrotlicommon.so.1": "libbrotli1",
    "libpcre2-8.so.0": "libpcre2-8-0",
}
# The README's install line: the X11 libraries a machine without a full desktop may lack
# (a desktop has the rest: libc, glib, fontconfig ...). Installing them is harmless where
# they are present.
GUI_PACKAGES = ("libxcb-cursor0", "libxcb-icccm4", "libxcb-keysyms1", "libxcb-image0",
                "libxcb-randr0", "libxcb-render-util0", "libxcb-shape0", "libxcb-xkb1",
                "libxkbcommon-x11-0", "libegl1", "libgl1", "libfontconfig1")

HEADLESS_HINT = ("or without a window: vmsim gui GUEST --screenshot FILE.png, or "
                 "QT_QPA_PLATFORM=offscreen")


def xcb_plugin() -> Path | None:
    """PySide6's xcb platform plugin (libqxcb.so), found without importing Qt; None when
    PySide6 or the plugin is not there."""
    spec = importlib.util.find_spec("PySide6")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root) / "Qt" / "plugins" / "platforms" / "libqxcb.so"
        if path.exists():
            return path
    return None


def parse_ldd(text: str) -> list[str]:
    """The sonames `ldd` reports as "not found", each once, in its order."""
    missing: list[str] = []
    for m in re.finditer(r"^\s*(\S+)\s+=>\s+not found\s*$", text, re.MULTILINE):
        if m.group(1) not in missing:
            missing.append(m.group(1))
    return missing


def missing_libraries(plugin: Path) -> list[str]:
    """The shared libraries the dynamic loader cannot find for `plugin` (its whole
    closure: the Qt libraries under it too); [] when ldd is not there to ask."""
    try:
        out = subprocess.run(["ldd", str(plugin)], capture_output=True, text=True, timeout=20,
                             check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_ldd(out.stdout)


def install_hint(sonames: list[str]) -> str:
    """What to install for the missing `sonames`: `sudo apt-get install PKG ...`, and the
    sonames no known package has, by name."""
    packages = list(dict.fromkeys(DEBIAN_PACKAGES[s] for s in sonames if s in DEBIAN_PACKAGES))
    unknown = [s for s in sonames if s not in DEBIAN_PACKAGES]
    hint = f"sudo apt-get install {' '.join(packages)}" if packages else ""
    if unknown:
        hint += ("; " if hint else "") + (
            f"and whatever provides {', '.join(unknown)}" if packages else
            f"install what provides {', '.join(unknown)} (apt-file search NAME), or reinstall "
            "PySide6 if it is one of Qt's own")
    return hint


def platform_problem(environ: Mapping[str, str] | None = None,
                     missing: Callable[[Path], list[str]] | None = None) -> str | None:
    """Why Qt's platform plugin will not start here, in one line (without the "vmsim gui:"
    prefix); None when it should, or when it is not ours to tell (another platform)."""
    env = os.environ if environ is None else environ
    platform = env.get("QT_QPA_PLATFORM", "").strip()
    first = platform.split(";")[0].split(":")[0].strip()
    if first and first != "xcb":
        return None  # offscreen, wayland, vnc ...: Qt's to load
    if not platform and env.get("WAYLAND_DISPLAY"):
        return None  # a Wayland session: Qt may pick its wayland plugin
    if not env.get("DISPLAY"):
        return (f"no display to open a window on (DISPLAY is not set): run it in a desktop "
                f"session or over ssh -X, {HEADLESS_HINT}")
    plugin = xcb_plugin()
    if plugin is None:
        return None  # no PySide6 (said where it is imported) or a build without xcb
    lost = (missing or missing_libraries)(plugin)
    if not lost:
        return None
    return (f"Qt's X11 (xcb) platform plugin cannot load: {', '.join(lost)} "
            f"{'is' if len(lost) == 1 else 'are'} missing; {install_hint(lost)} "
            f"({HEADLESS_HINT})")
