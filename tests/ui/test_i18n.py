"""English and Simplified Chinese (issue 13): the language from the locale, --lang or the
saved choice; View > Language switches the open window without touching the session; the
catalogue in git is complete and its compiled .qm current."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.ui.conftest import HELLO


@pytest.fixture
def english():
    """Every test leaves the application in English (translators are process-wide)."""
    from ui import i18n

    i18n.install("en")
    yield i18n
    i18n.install("en")


def _texts(win) -> dict[str, str]:
    """Every fixed word of the window a user reads: menus, actions, docks, toolbars,
    labels, headers, tabs, the diagram's layers and boxes."""
    from PySide6.QtGui import QAction
    from PySide6.QtWidgets import QLabel, QMenu, QTableWidget, QTabWidget, QToolBar, QTreeWidget

    out: dict[str, str] = {}
    for i, m in enumerate(win.findChildren(QMenu)):
        out[f"menu{i}"] = m.title()
    for i, a in enumerate(win.findChildren(QAction)):
        out[f"action{i}"] = a.text()
        out[f"action{i}.tip"] = a.toolTip()
    for name, d in win.docks.items():
        out[f"dock.{name}"] = d.windowTitle()
    for i, t in enumerate(win.findChildren(QToolBar)):
        out[f"toolbar{i}"] = t.windowTitle()
    for i, w in enumerate(win.findChildren(QLabel)):
        out[f"label{i}"] = w.text()
        out[f"label{i}.tip"] = w.toolTip()
    for i, t in enumerate(win.findChildren(QTableWidget)):
        for c in range(t.columnCount()):
            h = t.horizontalHeaderItem(c)
            out[f"table{i}.h{c}"] = h.text() if h else ""
    for i, t in enumerate(win.findChildren(QTreeWidget)):
        for c in range(t.columnCount()):
            out[f"tree{i}.h{c}"] = t.headerItem().text(c)
    for i, t in enumerate(win.findChildren(QTabWidget)):
        for c in range(t.count()):
            out[f"tabs{i}.{c}"] = t.tabText(c)
    for _band, label, lid in win.diagram.bands:
        out[f"layer.{lid}"] = label.text()
    for bid, item in win.diagram.boxes.items():
        out[f"box.{bid}"] = item.title.text()
        out[f"box.{bid}.tip"] = item.toolTip()
        out[f"box.{bid}.detail"] = item.detail.text()
    out["title"] = win.windowTitle()
    out["status"] = win.status.text()
    return out


def _state(win) -> dict:
    b = win.bridge
    s = b.session
    return {"eip": s.registers()["EIP"], "instructions": s.instructions, "time": s.virtual_time,
            "events": b.last_seq, "history": len(b.history), "exits": b.stats.as_dict()["vm_exits_total"],
            "registers": win.registers.value_text("EIP"), "lines": win.events.table.rowCount(),
            "box": win.diagram.active_box}


def test_switching_language_retranslates_the_window_and_keeps_the_session(english, window) -> None:
    from PySide6.QtWidgets import QApplication

    from ui.i18n import current_language

    win = window
    for _ in range(2):
        win.a_step_exit.trigger()
    win.a_step_event.trigger()
    win.raise_panel("", "vmcs")  # (a panel behind a tab is refreshed when shown)
    QApplication.processEvents()
    before, english_texts = _state(win), _texts(win)
    assert win.language_actions["en"].isChecked()

    win.language_actions["zh_CN"].trigger()  # View > Language > 简体中文
    assert current_language() == "zh_CN" and win.language_actions["zh_CN"].isChecked()
    menus = [a.text() for a in win.menuBar().actions()]
    assert menus[:4] == ["文件(&F)", "运行(&R)", "断点(&B)", "视图(&V)"]
    assert win.docks["registers"].windowTitle() == "寄存器"
    assert win.docks["stats"].windowTitle() == "退出统计"
    assert win.docks["vcpus"].windowTitle() == "vCPU 与线程"
    assert re.sub(r"\(&\w\)$", "", win.docks["pagetables"].toggleViewAction().text()) == "页表"
    assert win.a_step_event.text() == "单步事件" and win.a_step_exit.text() == "到虚拟机退出"
    assert win.a_step_event.toolTip().startswith("单步事件")
    assert win.a_back_insn.text() == "◀ 指令"
    assert win.registers.table.horizontalHeaderItem(0).text() == "寄存器名"
    assert win.stats.table.horizontalHeaderItem(0).text() == "虚拟机退出"
    assert win.vmcs.tree.headerItem().text(0) == "字段"
    areas = [win.vmcs.tree.topLevelItem(i).text(0) for i in range(win.vmcs.tree.topLevelItemCount())]
    assert sorted(areas) == sorted(["客户机状态", "宿主机状态", "控制", "退出信息"])  # docs/gui.zh-CN.md's
    assert win.devices.tabs.tabText(0) == "串口 + VGA"
    assert win.diagram.boxes["kvm.run_loop"].title.text() == "运行循环"
    assert win.diagram.boxes["qemu.vcpu_thread0"].title.text() == "vCPU0 线程"
    assert dict((lid, label.text()) for _b, label, lid in win.diagram.bands)["hw"] == "硬件"
    assert "虚拟机退出" in win.stats.summary.text()
    assert "已暂停" in win.status.text()
    event_bp = next(iter(win.event_bp_actions.values()))
    assert event_bp.text().startswith("事件断点")
    assert win.a_present.iconText() == "演示" and "Ctrl+Shift+P" in win.a_present.toolTip()
    assert not re.search("[A-Za-z]{4}", win.a_present.toolTip().replace("Ctrl+Shift+P", ""))
    chinese = _texts(win)
    changed = [k for k in english_texts if chinese.get(k) != english_texts[k]]
    assert len(changed) > 100, "most of the window's words change"
    assert _state(win) == before, "a switch leaves the session where it was"

    win.language_actions["en"].trigger()
    assert current_language() == "en"
    assert win.a_present.iconText() == "Presentation"  # the toolbar's button (its own word)
    assert win.vmcs.areas["guest state"].text(0) == "Guest state"
    after = _texts(win)
    assert {k: v for k, v in after.items() if v != english_texts[k]} == {}
    assert _state(win) == before
    # The session goes on as before the switches.
    win.a_step_event.trigger()
    assert win.bridge.last_seq > before["events"]


def test_a_window_made_in_chinese_starts_in_chinese(english, make_window) -> None:
    from ui import text as T

    english.install("zh_CN")
    assert T.INTERRUPTS_TITLE == "中断"  # ui.text's words follow the language
    win = make_window(HELLO)
    assert win.docks["interrupts"].windowTitle() == "中断"
    assert win.docks["source"].windowTitle() == "客户机源代码"
    assert win.a_run.text() == "运行" and win.language_actions["zh_CN"].isChecked()
    win.a_step_exit.trigger()
    assert win.diagram.caption.text().startswith("虚拟机退出")  # the rule's label, translated
    assert win.a_present.iconText() == "演示"
    win.set_language("en")
    assert win.a_present.iconText() == "Presentation"
    english.install("en")
    assert T.INTERRUPTS_TITLE == "Interrupts"


def test_the_choice_is_saved_in_the_settings(english, make_window, tmp_path) -> None:
    from PySide6.QtCore import QSettings

    settings = QSettings(str(tmp_path / "vmsim.ini"), QSettings.Format.IniFormat)
    win = make_window(HELLO)
    win.settings = settings
    assert win.set_language("zh_CN")
    assert settings.value("language") == "zh_CN"
    assert english.choose_language(None, settings) == "zh_CN"
    assert english.choose_language("en", settings) == "en"  # --lang wins
    win.set_language("en")
    assert settings.value("language") == "en"


@pytest.mark.parametrize(("locale", "lang"), [("zh_CN", "zh_CN"), ("zh_TW", "zh_CN"), ("zh_SG", "zh_CN"),
                                              ("en_US", "en"), ("de_DE", "en"), ("C", "en")])
def test_the_system_locale_picks_the_language(locale, lang) -> None:
    from PySide6.QtCore import QLocale

    from ui.i18n import choose_language, system_language

    assert system_language(QLocale(locale)) == lang
    assert choose_language(None, None, QLocale(locale)) == lang


def test_the_compiled_catalogue_is_current(tmp_path) -> None:
    """The .qm in git is what pyside6-lrelease makes of the .ts in git (rebuild it with
    `python -m ui.i18n release`)."""
    from ui.i18n import qm_file, release

    fresh = tmp_path / "fresh.qm"
    release(qm=fresh)
    assert fresh.read_bytes() == qm_file("zh_CN").read_bytes(), "run: python -m ui.i18n release"


def test_every_string_of_the_gui_has_a_chinese_translation(tmp_path) -> None:
    """Re-extracting tr() from ui/*.py and the words of diagram.json into a copy of the
    .ts leaves nothing unfinished (after new strings: `python -m ui.i18n update`,
    translate, `python -m ui.i18n release`)."""
    from ui.i18n import ts_file, unfinished, update

    ts = tmp_path / "vmsim_zh_CN.ts"
    shutil.copy(ts_file("zh_CN"), ts)
    update(ts)
    assert unfinished(ts) == []


def test_the_catalogue_ships_with_the_package() -> None:
    import tomllib

    root = Path(__file__).resolve().parents[2]
    data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["ui"]
    for name in ("vmsim_zh_CN.qm", "vmsim_zh_CN.ts"):
        assert any(Path("ui/i18n", name).match(f"ui/{glob}") for glob in data), name


def test_no_two_english_strings_share_a_translation() -> None:
    """A switch back to English finds a shown text's source by its translation: each
    translation must name one source."""
    from collections import defaultdict

    from ui.i18n import _ts_messages

    sources = defaultdict(list)
    for src, zh in _ts_messages("zh_CN").items():
        sources[zh].append(src)
    assert {zh: s for zh, s in sources.items() if len(s) > 1} == {}


def test_chinese_text_wraps_between_characters_and_keeps_punctuation_off_line_starts() -> None:
    from ui.i18n import wrap_text

    def width(s: str) -> int:  # a CJK character is two columns wide
        return sum(2 if ord(c) > 0x2E80 else 1 for c in s)

    text = "持有者 无人；等待者：无；争用 30 次"  # noqa: RUF001 - Chinese punctuation
    lines = wrap_text(text, 12, width)
    assert "".join(lines).replace(" ", "") == text.replace(" ", "")
    assert all(width(line) <= 12 for line in lines)
    assert not any(line[0] in "\uff1b\uff1a\uff0c" for line in lines)
    assert wrap_text("owner nobody; waiting: none", 14, len) == ["owner nobody;", "waiting: none"]
