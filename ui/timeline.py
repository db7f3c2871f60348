"""The timeline of the run (issue 12): the span of virtual time reached so far
(`Session.timeline()`), VM exits and exits to userspace as ticks in two rows, the current
point marked. Click or drag to choose a point; on release it asks to go there
(`seekRequested`, which the window hands to `Session.seek_time`).

It stays cheap while the guest runs: the window hands it the timeline at its own refresh
rate (never per event), and the ticks are kept as the pixel columns they fall in, found by
a binary search over the sorted exit times for each column that has one (columns x log
exits, whatever the number of exits).
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Sequence
from functools import partial
from itertools import compress, islice

from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFontMetrics, QImage, QPainter, QPen, QPolygonF
from PySide6.QtWidgets import QSizePolicy, QWidget

from ui import i18n
from ui import text as T
from ui.panels import LAYER_COLORS

ROW_H = 9  # one row of ticks
LEGEND_GAP = 14


class _Ticks:
    """One row's exit times, sorted, grown as the run goes on (a sequence the session
    gives again whole each time; only what is new is added)."""

    def __init__(self) -> None:
        self.times: list[int] = []
        self._given = 0  # how many of the session's list are in `times`
        self._last: int | None = None  # the last one taken (a new list, if it differs)
        self.version = 0  # counts the changes (the widget's cached columns follow it)

    def update(self, given: Sequence[int]) -> bool:
        """Take the session's times (a list, or the history's array); True if anything changed."""
        n = len(given)
        if n < self._given or (self._given and given[self._given - 1] != self._last):
            self.times = sorted(given)  # another history (went back and forward anew)
        elif n == self._given:
            return False
        else:
            new = given[self._given:]
            if (not self.times or new[0] >= self.times[-1]) \
                    and all(map(operator.le, new, islice(new, 1, None))):
                self.times.extend(new)
            else:  # several vCPUs: an exit may come earlier in virtual time than the last
                self.times = sorted(self.times + list(new))
        self._given = n
        self._last = given[-1] if given else None
        self.version += 1
        return True

    def columns(self, width: int, start: int, end: int) -> list[int]:
        """The pixel columns (0 .. width-1) of the span start..end holding a tick: column
        c holds the times t with c <= (t - start) * width / (end - start) < c + 1 (the
        end itself in the last column), in integers, so a tick is never off by one.

        Column c begins at the time start + ceil(c * span / width); a binary search for
        each column's beginning says how many times come before it, and a column holds a
        tick where the next one's count is larger (columns x log exits, in C calls)."""
        times = self.times
        span = end - start
        if not times or width <= 0 or span <= 0:
            return []
        firsts = [start - (-c * span // width) for c in range(width)]
        before = list(map(partial(bisect.bisect_left, times), firsts))
        before.append(bisect.bisect_right(times, end))
        return list(compress(range(width), map(operator.lt, before, islice(before, 1, None))))


class TimelineWidget(QWidget):
    seekRequested = Signal(int)  # the virtual time chosen (on release)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.data: dict | None = None  # the last Session.timeline()
        self.unavailable = ""  # why there is no timeline (kvm, bare)
        self.exits = _Ticks()
        self.user = _Ticks()
        self.drag: int | None = None  # the virtual time under the mouse while pressed
        self._cols: tuple | None = None  # (key, exit columns, userspace columns)
        self._track: tuple | None = None  # (key, track())
        self._images: tuple | None = None  # (key, exit ticks, userspace ticks) as images
        self.theme = "light"
        self.setMouseTracking(False)
        self.setToolTip(T.TIMELINE_TIP)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setMinimumWidth(300)

    def sizeHint(self) -> QSize:
        return QSize(800, self._height())

    def minimumSizeHint(self) -> QSize:
        return QSize(300, self._height())

    def _height(self) -> int:
        return max(2 * ROW_H + 10, QFontMetrics(self.font()).height() * 2 + 6)

    # -- data --------------------------------------------------------------------------------
    def set_timeline(self, data: dict | None, why: str = "") -> None:
        """The session's timeline (None: none, because `why`)."""
        changed = data != self.data if data is None or self.data is None else (
            data["end"] != self.data["end"] or data["now"] != self.data["now"])
        if data is not None:
            changed |= self.exits.update(data["exits"])
            changed |= self.user.update(data["userspace_exits"])
        self.data = data
        if why != self.unavailable:
            self.unavailable = why
            changed = True
        if changed:
            self.update()

    def reset(self) -> None:
        self.exits = _Ticks()
        self.user = _Ticks()
        self.data = None
        self._cols = None
        self.update()

    # -- geometry ----------------------------------------------------------------------------
    def _legend_width(self) -> int:
        fm = QFontMetrics(self.font())
        return max(fm.horizontalAdvance(T.TIMELINE_EXITS), fm.horizontalAdvance(T.TIMELINE_USER)) + 16

    def _span_width(self) -> int:
        fm = QFontMetrics(self.font())
        end = self.data["end"] if self.data else 0
        return fm.horizontalAdvance(T.TIMELINE_SPAN.format(now=end, end=end)) + 12

    def track(self) -> QRectF:
        """Where the ticks are drawn: between the legend and the numbers. (Kept until the
        size, the font, the language or the end changes: a repaint asks several times.)"""
        key = (self.width(), self.height(), self.font().key(), i18n.generation(),
               self.data["end"] if self.data else 0)
        if self._track is None or self._track[0] != key:
            left = self._legend_width() + LEGEND_GAP
            right = self.width() - self._span_width() - 6
            h = 2 * ROW_H + 4
            self._track = (key, QRectF(left, (self.height() - h) / 2, max(10.0, right - left), h))
        return QRectF(self._track[1])

    def time_at(self, x: float) -> int:
        """The virtual time at widget x (clamped to the span)."""
        if not self.data:
            return 0
        tr = self.track()
        f = min(1.0, max(0.0, (x - tr.left()) / tr.width()))
        return round(self.data["start"] + f * (self.data["end"] - self.data["start"]))

    def x_of(self, t: int) -> float:
        tr = self.track()
        d = self.data
        span = (d["end"] - d["start"]) if d else 0
        return tr.left() + (tr.width() * (t - d["start"]) / span if span > 0 else 0)

    def columns(self) -> tuple[list[int], list[int]]:
        """The pixel columns of the track with a VM exit, and with an exit to userspace."""
        tr = self.track()
        w = int(tr.width())
        d = self.data
        start, end = (d["start"], d["end"]) if d else (0, 0)
        key = (w, start, end, self.exits.version, self.user.version)
        if self._cols is None or self._cols[0] != key:
            self._cols = (key, self.exits.columns(w, start, end), self.user.columns(w, start, end))
        return self._cols[1], self._cols[2]

    def tick_images(self, colors: tuple[QColor, QColor]) -> tuple[QImage, QImage]:
        """Each row's ticks as an image one pixel high and a pixel per column, the colour
        where a column has a tick (stretched to the row when drawn: no Python per tick)."""
        ex, us = self.columns()
        key = (self._cols[0] if self._cols else None, tuple(c.rgba() for c in colors))
        if self._images is None or self._images[0] != key:
            w = max(1, int(self.track().width()))
            images = []
            for cols, color in zip((ex, us), colors, strict=True):
                px = color.rgba().to_bytes(4, "little")  # ARGB32 is 0xAARRGGBB, little-endian
                ticked = bytearray(w)  # 1 where a column has a tick
                for c in cols:
                    ticked[c] = 1
                buf = b"".join(map((bytes(4), px).__getitem__, ticked))
                images.append(QImage(buf, w, 1, 4 * w, QImage.Format.Format_ARGB32).copy())
            self._images = (key, images[0], images[1])
        return self._images[1], self._images[2]

    # -- painting ----------------------------------------------------------------------------
    def paintEvent(self, event) -> None:
        p = QPainter(self)
        dark = self.theme == "dark"
        text = QColor("#eceff1" if dark else "#1a1a1a")
        base = QColor("#22282c" if dark else "#f3f4f6")
        colors = LAYER_COLORS[self.theme]
        c_exit, c_user = QColor(colors["kvm"]), QColor(colors["vmm"])
        fm = p.fontMetrics()
        if self.data is None or self.unavailable:
            p.setPen(text)
            p.drawText(self.rect().adjusted(6, 0, -6, 0), Qt.AlignmentFlag.AlignVCenter,
                       T.TIMELINE_NONE.format(why=self.unavailable) if self.unavailable
                       else T.TIMELINE_EMPTY)
            return
        # The legend: one line per row, in the row's colour.
        lh = fm.height()
        mid = self.height() / 2
        for i, (label, color) in enumerate(((T.TIMELINE_EXITS, c_exit), (T.TIMELINE_USER, c_user))):
            y = mid - lh + i * lh
            p.fillRect(QRectF(2, y + lh / 2 - 4, 8, 8), color)
            p.setPen(text)
            p.drawText(QRectF(14, y, self._legend_width(), lh), Qt.AlignmentFlag.AlignVCenter, label)
        tr = self.track()
        p.fillRect(tr, base)
        img_exit, img_user = self.tick_images((c_exit, c_user))
        w = img_exit.width()
        p.drawImage(QRectF(tr.left(), tr.top() + 1, w, ROW_H), img_exit)
        p.drawImage(QRectF(tr.left(), tr.top() + ROW_H + 3, w, ROW_H), img_user)
        d = self.data
        # The present point, and the point being dragged to.
        for t, color in ((d["now"], text), (self.drag, QColor("#d32f2f"))):
            if t is None:
                continue
            x = self.x_of(t)
            p.setPen(QPen(color, 2))
            p.drawLine(QPointF(x, tr.top() - 2), QPointF(x, tr.bottom() + 2))
            p.setBrush(color)
            p.setPen(Qt.PenStyle.NoPen)
            p.drawPolygon(QPolygonF([QPointF(x - 5, tr.top() - 6), QPointF(x + 5, tr.top() - 6),
                                     QPointF(x, tr.top() - 1)]))
        p.setPen(text)
        now = self.drag if self.drag is not None else d["now"]
        p.drawText(QRectF(tr.right() + 6, 0, self.width() - tr.right() - 6, self.height()),
                   Qt.AlignmentFlag.AlignVCenter,
                   T.TIMELINE_SPAN.format(now=now, end=d["end"]))

    # -- the mouse ---------------------------------------------------------------------------
    def mousePressEvent(self, event) -> None:
        if self.data is None or self.unavailable or event.button() != Qt.MouseButton.LeftButton:
            return
        self.drag = self.time_at(event.position().x())
        self.update()

    def mouseMoveEvent(self, event) -> None:
        if self.drag is not None:
            self.drag = self.time_at(event.position().x())
            self.update()

    def mouseReleaseEvent(self, event) -> None:
        if self.drag is None:
            return
        t = self.time_at(event.position().x())
        self.drag = None
        self.update()
        self.seekRequested.emit(t)

