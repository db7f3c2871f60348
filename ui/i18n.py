"""The GUI's words through Qt's translation system (issue 13): English and Simplified Chinese.

Every string a user reads goes through `tr("...")` so `pyside6-lupdate` finds it (it
extracts calls to a function named `tr`, under the empty context) and a QTranslator
installed on the application turns it into the chosen language. Formatted text:
translate the template, then format it: `tr("{n} exits").format(n=3)`. Register names,
mnemonics, exit reasons (IO_INSTRUCTION), event kinds (kvm_exit) and KVM API names
(KVM_RUN) stay as they are: they are the names a student looks up.

The files, in ui/i18n/:
- vmsim_zh_CN.ts: the translation source (Qt Linguist's XML), in git. After strings change,
  `python -m ui.i18n update` re-extracts every tr() of ui/*.py and the titles and
  labels of ui/diagram.json into it (pyside6-lupdate), keeping the translations made;
  new strings come in as unfinished: translate them (pyside6-linguist, or the file by
  hand), then `python -m ui.i18n release`.
- vmsim_zh_CN.qm: the compiled catalogue QTranslator loads (pyside6-lrelease), ALSO in
  git. Chosen over building it at first use because an installed package may sit in a
  directory nobody can write to, and a fresh `pip install -e .` or a wheel then works
  without the Qt tools being run; tests/ui/test_i18n.py rebuilds it into a temporary
  file and fails if the committed one differs, so it cannot go stale unnoticed. Both
  files are package data (pyproject.toml), for a non-editable install too.

The language: `vmsim gui --lang en|zh_CN`, else the one saved in QSettings
("language", written by View > Language), else the system locale's (zh_* gives
Simplified Chinese, anything else English). `switch_language` changes it while the
window is open: it installs or removes the translator, then re-sets every text of the
open windows (actions, menus, dock and toolbar titles, labels, headers, tabs, tooltips;
see `retranslate_widgets`) and asks each window for the rest (`retranslate()`: the
diagram's boxes, the title, the panels' contents). Nothing of the session changes.
"""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QLibraryInfo, QLocale, QTranslator

LANGUAGES = {"en": "English", "zh_CN": "简体中文"}  # each in its own language (the menu)
DEFAULT = "en"
SETTINGS_KEY = "language"
I18N_DIR = Path(__file__).with_name("i18n")
UI_DIR = Path(__file__).parent
DIAGRAM_FILE = UI_DIR / "diagram.json"


def tr(text: str) -> str:
    """`text` in the application's current language (itself when untranslated)."""
    return QCoreApplication.translate("", text)


def ts_file(lang: str) -> Path:
    return I18N_DIR / f"vmsim_{lang}.ts"


def qm_file(lang: str) -> Path:
    return I18N_DIR / f"vmsim_{lang}.qm"


# -- which language -------------------------------------------------------------------------
def normalize(lang: str | None) -> str | None:
    """"zh_CN", "zh-CN", "zh", "zh_Hans_CN" ... -> "zh_CN"; "en", "en_US", "C" -> "en";
    None or "" -> None (not chosen)."""
    if not lang:
        return None
    lang = str(lang).replace("-", "_")
    return "zh_CN" if lang.lower().startswith("zh") else "en"


def system_language(locale: QLocale | None = None) -> str:
    """The language of a locale (the system's by default): Chinese ones get Simplified
    Chinese, every other English."""
    loc = locale if locale is not None else QLocale.system()
    return "zh_CN" if loc.language() == QLocale.Language.Chinese else "en"


def choose_language(option: str | None = None, settings=None, locale: QLocale | None = None) -> str:
    """--lang, else the saved choice (QSettings "language"), else the system locale's."""
    saved = settings.value(SETTINGS_KEY, "") if settings is not None else ""
    return normalize(option) or normalize(saved if isinstance(saved, str) else "") or system_language(locale)


# -- the translators ------------------------------------------------------------------------------------
_installed: list[QTranslator] = []
_current = DEFAULT
_generation = 0  # changes at each switch: ui.text's cached words are rebuilt then


def current_language() -> str:
    return _current


def generation() -> int:
    return _generation


def install(lang: str) -> bool:
    """Make `lang` the application's language: remove the translators installed before,
    load and install vmsim's catalogue and Qt's own (qtbase: the buttons of standard
    dialogs). English needs none. Returns False when the catalogue cannot be loaded (the
    language stays English)."""
    global _current, _generation
    app = QCoreApplication.instance()
    lang = normalize(lang) or DEFAULT
    for t in _installed:
        if app is not None:
            app.removeTranslator(t)
    _installed.clear()
    ok = True
    if lang != DEFAULT and app is None:  # no application to install a translator on
        ok = False
    elif lang != DEFAULT:
        ours = QTranslator()
        ok = ours.load(str(qm_file(lang)))
        if ok:
            _installed.append(ours)
            qt = QTranslator()
            if qt.load(f"qtbase_{lang}", QLibraryInfo.path(QLibraryInfo.LibraryPath.TranslationsPath)):
                _installed.append(qt)
        for t in _installed:
            if app is not None:
                app.installTranslator(t)
    _current = lang if ok else DEFAULT
    _generation += 1
    return ok


# -- switching while the window is open ----------------------------------------------------------------------
def _ts_messages(lang: str) -> dict[str, str]:
    """source -> finished translation, from the .ts (the .qm holds the same)."""
    path = ts_file(lang)
    if lang == DEFAULT or not path.exists():
        return {}
    out: dict[str, str] = {}
    for m in ET.parse(path).getroot().iter("message"):
        src, tra = m.findtext("source"), m.find("translation")
        if src and tra is not None and tra.text and tra.get("type") not in ("unfinished", "obsolete",
                                                                             "vanished"):
            out[src] = tra.text
    return out


# "Open… (Ctrl+O)"; "VM exit: IO_INSTRUCTION" (also with the full-width forms Chinese uses)
_SUFFIX = re.compile("^(.*\\S) ([(\uff08][^()\uff08\uff09]*[)\uff09])$", re.S)
_PREFIX = re.compile("^([^:\uff1a\n]{1,60})([:\uff1a] ?)(.+)$", re.S)


class _Sources:
    """Finds the English source of a text shown in the language being left, and gives
    it back in the language switched to: an exact source or translation, or one with a
    suffix in parentheses (a shortcut) or after a "label:" prefix."""

    def __init__(self, lang: str):
        self.sources = {s for code in LANGUAGES for s in _ts_messages(code)}
        self.back = {t: s for s, t in _ts_messages(lang).items()}

    def source(self, text: str) -> str | None:
        if text in self.back:
            return self.back[text]
        return text if text in self.sources else None

    def rebuild(self, text: str) -> Callable[[], str] | None:
        """A function giving `text` in the new language (call it after the switch)."""
        if not text or not text.strip():
            return None
        src = self.source(text)
        if src is not None:
            return lambda: tr(src)
        m = _SUFFIX.match(text)
        if m:
            head = self.rebuild(m.group(1))
            if head is not None:
                tail = m.group(2)
                return lambda: f"{head()} {tail}"
        m = _PREFIX.match(text)
        if m:
            head = self.rebuild(m.group(1))
            rest = self.rebuild(m.group(3))
            if head is not None or rest is not None:
                h, sep, r = m.group(1), m.group(2), m.group(3)
                return lambda: f"{head() if head else h}{sep}{rest() if rest else r}"
        return None


TABLE_CELLS_MAX = 4000  # tables larger than this (the event log) hold data, not words
# What each text slot (object, property) was last set to by a switch, and how to make it
# again: a text shown unchanged since is rebuilt from that, not looked up backwards (two
# English words may share a translation).
_shown: dict[tuple[int, str], tuple[str, Callable[[], str]]] = {}
Pending = tuple[Callable[[str], None], Callable[[], str], tuple[int, str]]


def _collect(root, src: _Sources) -> list[Pending]:
    """(setter, new text, slot) for every translatable text under `root`."""
    from PySide6.QtGui import QAction
    from PySide6.QtWidgets import (
        QAbstractButton,
        QComboBox,
        QDockWidget,
        QGraphicsSimpleTextItem,
        QGraphicsView,
        QGroupBox,
        QLabel,
        QLineEdit,
        QMenu,
        QTableWidget,
        QTabWidget,
        QToolBar,
        QTreeWidget,
        QWidget,
    )

    out: list[Pending] = []

    def add(getter_value: str, setter, obj=None, prop: str = "") -> None:
        key = (id(obj if obj is not None else getattr(setter, "__self__", setter)),
               prop or getattr(setter, "__name__", ""))
        last = _shown.get(key)
        new = last[1] if last is not None and last[0] == getter_value else src.rebuild(getter_value)
        if new is not None:
            out.append((setter, new, key))

    widgets = [root, *root.findChildren(QWidget)]
    for w in widgets:
        add(w.toolTip(), w.setToolTip)
        add(w.statusTip(), w.setStatusTip)
        if isinstance(w, (QDockWidget, QToolBar)):
            add(w.windowTitle(), w.setWindowTitle)
        if isinstance(w, QMenu):
            add(w.title(), w.setTitle)
        elif isinstance(w, QLabel):
            add(w.text(), w.setText)
        elif isinstance(w, QAbstractButton):
            add(w.text(), w.setText)
        elif isinstance(w, QGroupBox):
            add(w.title(), w.setTitle)
        elif isinstance(w, QLineEdit):
            add(w.placeholderText(), w.setPlaceholderText)
        elif isinstance(w, QComboBox):
            for i in range(w.count()):
                add(w.itemText(i), lambda t, w=w, i=i: w.setItemText(i, t), w, f"item{i}")
        elif isinstance(w, QTabWidget):
            for i in range(w.count()):
                add(w.tabText(i), lambda t, w=w, i=i: w.setTabText(i, t), w, f"tab{i}")
                add(w.tabToolTip(i), lambda t, w=w, i=i: w.setTabToolTip(i, t), w, f"tabtip{i}")
        elif isinstance(w, QTableWidget):
            for i in range(w.columnCount()):
                h = w.horizontalHeaderItem(i)
                if h is not None:
                    add(h.text(), h.setText)
                    add(h.toolTip(), h.setToolTip)
            if w.rowCount() * max(w.columnCount(), 1) <= TABLE_CELLS_MAX:
                for r in range(w.rowCount()):
                    h = w.verticalHeaderItem(r)
                    if h is not None:
                        add(h.text(), h.setText)
                    for c in range(w.columnCount()):
                        it = w.item(r, c)
                        if it is not None:
                            add(it.text(), it.setText)
                            add(it.toolTip(), it.setToolTip)
        elif isinstance(w, QTreeWidget):
            h = w.headerItem()
            for c in range(w.columnCount()):
                add(h.text(c), lambda t, h=h, c=c: h.setText(c, t), w, f"header{c}")
    for view in root.findChildren(QGraphicsView):  # the diagram's layer titles and caption
        scene = view.scene()
        for item in scene.items() if scene is not None else ():
            if isinstance(item, QGraphicsSimpleTextItem):
                add(item.text(), item.setText)
    for a in root.findChildren(QAction):
        add(a.text(), a.setText)
        if a.toolTip() != a.text().replace("&&", "\0").replace("&", "").replace("\0", "&"):
            add(a.toolTip(), a.setToolTip)  # else Qt's, made from the text: it follows it
        add(a.statusTip(), a.setStatusTip)
    return out


def retranslate_widgets(roots: Iterable, old_lang: str, apply: Callable[[], None]) -> None:
    """Find the texts under `roots` (shown in `old_lang`), call `apply` (which installs
    the new translator), then set each text anew in the new language."""
    src = _Sources(old_lang)
    pending = [p for r in roots for p in _collect(r, src)]
    apply()
    for setter, new, key in pending:
        text = new()
        setter(text)
        _shown[key] = (text, new)


def switch_language(lang: str, windows: Iterable = (), settings=None) -> bool:
    """Change the language at run time: every open window's texts follow; the choice is
    saved in `settings` (QSettings) for the next start."""
    lang = normalize(lang) or DEFAULT
    windows = list(windows)
    old = _current
    ok = True

    def apply() -> None:
        nonlocal ok
        ok = install(lang)

    retranslate_widgets(windows, old, apply)
    for w in windows:
        hook = getattr(w, "retranslate", None)
        if hook is not None:
            hook()
    if settings is not None and ok:
        settings.setValue(SETTINGS_KEY, lang)
    return ok


# -- laying out translated text -----------------------------------------------------------------------
_TOKEN = re.compile(r"[\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef\u3000-\u303f]|[^\s\u2e80-\u9fff\uf900-\ufaff"
                    r"\uff00-\uffef\u3000-\u303f]+|\s+")


# Full-width closing punctuation: comma, full stop, semicolon, colon, enumeration comma,
# right parenthesis and corner brackets, exclamation and question marks; the ellipsis.
_CLOSING = frozenset("\uff0c\u3002\uff1b\uff1a\u3001\uff09\u300d\u300f\uff01\uff1f\u2026")


def wrap_text(text: str, max_width: float, width_of: Callable[[str], float]) -> list[str]:
    """`text` in lines no wider than `max_width` (as `width_of` measures, e.g.
    QFontMetricsF.horizontalAdvance), broken at spaces, and between any two CJK characters
    (Chinese has no spaces; a line may also break before full-width punctuation). A word
    wider than a line gets a line of its own. Closing punctuation (_CLOSING) never starts
    a line: the character before it moves down with it."""
    lines: list[str] = []
    cur: list[str] = []
    for tok in _TOKEN.findall(text):
        if tok.isspace():
            if cur and cur[-1] != " ":
                cur.append(" ")
            continue
        if cur and width_of("".join(cur) + tok) > max_width:
            carry: list[str] = []
            if tok in _CLOSING and len(cur) > 1 and not cur[-1].isspace():
                carry = [cur.pop()]
            lines.append("".join(cur).rstrip())
            cur = [*carry, tok]
        else:
            cur.append(tok)
    if "".join(cur).strip():
        lines.append("".join(cur).rstrip())
    return lines


# -- the catalogue's files ---------------------------------------------------------------------------
def _tool(name: str) -> str:
    exe = Path(sys.executable).with_name(name)
    return str(exe) if exe.exists() else name


def sources() -> list[Path]:
    return sorted(p for p in UI_DIR.glob("*.py"))


def diagram_strings() -> list[str]:
    """The diagram's words: layer and box titles, the boxes' fixed details, the rules'
    labels (the caption's first words)."""
    import json

    d = json.loads(DIAGRAM_FILE.read_text(encoding="utf-8"))
    out: list[str] = [layer["title"] for layer in d["layers"]]
    for b in d["boxes"]:
        out += [b["title"], b.get("detail", ""), (b.get("per_vcpu") or {}).get("short_title", "")]
    out += [r.get("label", "") for r in d["rules"]]
    seen: set[str] = set()
    return [s for s in out if s and not (s in seen or seen.add(s))]


def update(ts: Path | None = None, lang: str = "zh_CN") -> str:
    """Re-extract the strings into the .ts (pyside6-lupdate, obsolete ones dropped):
    tr() calls in ui/*.py and diagram.json's words (through a generated file of tr()
    calls, as lupdate reads no JSON). Returns lupdate's summary."""
    import tempfile

    ts = ts or ts_file(lang)
    with tempfile.TemporaryDirectory() as tmp:
        stub = Path(tmp) / "diagram_json.py"
        stub.write_text("".join(f"tr({s!r})\n" for s in diagram_strings()), encoding="utf-8")
        r = subprocess.run([_tool("pyside6-lupdate"), "-no-obsolete", "-locations", "none",
                            "-target-language", lang, *map(str, sources()), str(stub), "-ts", str(ts)],
                           capture_output=True, text=True, check=True)
    return r.stdout + r.stderr


def release(ts: Path | None = None, qm: Path | None = None, lang: str = "zh_CN") -> str:
    """Compile the .ts into the .qm QTranslator loads (pyside6-lrelease)."""
    r = subprocess.run([_tool("pyside6-lrelease"), "-silent", str(ts or ts_file(lang)), "-qm",
                        str(qm or qm_file(lang))], capture_output=True, text=True, check=True)
    return r.stdout + r.stderr


def unfinished(ts: Path | None = None) -> list[str]:
    """The sources of a .ts without a finished translation."""
    root = ET.parse(ts or ts_file("zh_CN")).getroot()
    return [m.findtext("source") or "" for m in root.iter("message")
            if (m.find("translation") is None or m.find("translation").get("type") == "unfinished"
                or not (m.find("translation").text or "").strip())]


def main(argv: list[str] | None = None) -> int:
    """python -m ui.i18n update | release | check"""
    args = sys.argv[1:] if argv is None else argv
    cmd = args[0] if args else "check"
    if cmd == "update":
        print(update().strip())
        left = unfinished()
        print(f"{len(left)} unfinished: translate them in {ts_file('zh_CN')}, "
              "then: python -m ui.i18n release")
    elif cmd == "release":
        release()
        print(f"wrote {qm_file('zh_CN')}")
    elif cmd == "check":
        left = unfinished()
        for s in left:
            print(f"unfinished: {s!r}")
        return 1 if left else 0
    else:
        print(main.__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
