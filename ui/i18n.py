"""The GUI's words through Qt's translation system (issue 13).

Every string a user reads goes through `tr("...")` so `pyside6-lupdate` finds it (it
extracts calls to a function named `tr`, under the empty context) and a QTranslator
installed on the application turns it into the chosen language. Formatted text:
translate the template, then format it: `tr("{n} exits").format(n=3)`.
"""

from __future__ import annotations

from PySide6.QtCore import QCoreApplication


def tr(text: str) -> str:
    """`text` in the application's current language (itself when untranslated)."""
    return QCoreApplication.translate("", text)
