"""The architecture diagram: a QGraphicsScene built from `diagram.json`.

Scene items mirror state: `show_event` lights the box an event belongs to and sends a
token along its path (VM exit up from the guest into KVM, KVM_EXIT_* up to QEMU, KVM_RUN
down, VM entry into the guest); `refresh` redraws the live details (EIP, VMX mode, who
holds the BQL, EPT or shadow) from the session. Clicking a box asks for its panel.
"""

from __future__ import annotations

from itertools import pairwise

from PySide6.QtCore import QPointF, QRectF, Qt, QVariantAnimation, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import (
    QGraphicsEllipseItem,
    QGraphicsItem,
    QGraphicsPathItem,
    QGraphicsRectItem,
    QGraphicsScene,
    QGraphicsSimpleTextItem,
    QGraphicsView,
)

from ui.layout import Box, Layout, load_layout


class BoxItem(QGraphicsRectItem):
    def __init__(self, box: Box, view: DiagramView):
        super().__init__(QRectF(*box.rect))
        self.box = box
        self.view = view
        self.active = False
        self.setAcceptHoverEvents(True)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.title = QGraphicsSimpleTextItem(box.title, self)
        self.detail = QGraphicsSimpleTextItem(box.detail, self)
        f = QFont()
        f.setBold(True)
        f.setPointSizeF(10.5)
        self.title.setFont(f)
        g = QFont()
        g.setPointSizeF(8.5)
        self.detail.setFont(g)
        self.setToolTip(f"{box.title} ({box.id}): click for its panel")
        self.set_detail(box.detail)

    def set_detail(self, text: str) -> None:
        x, y, w, _h = self.box.rect
        self.title.setPos(x + 8, y + 6)
        # Wrap the detail to the box's width, crudely, by characters.
        width = max(8, int((w - 16) / 6.2))
        words, lines, cur = text.split(" "), [], ""
        for word in words:
            if cur and len(cur) + 1 + len(word) > width:
                lines.append(cur)
                cur = word
            else:
                cur = f"{cur} {word}".strip()
        if cur:
            lines.append(cur)
        self.detail.setText("\n".join(lines[:4]))
        self.detail.setPos(x + 8, y + 28)

    def mousePressEvent(self, event) -> None:
        self.view.boxClicked.emit(self.box.id, self.box.panel)
        super().mousePressEvent(event)


class DiagramView(QGraphicsView):
    boxClicked = Signal(str, str)  # box id, panel name

    def __init__(self, layout: Layout | None = None, parent=None):
        super().__init__(parent)
        self.layout_data = layout or load_layout()
        self.theme = "light"
        self.scene_ = QGraphicsScene(self)
        self.setScene(self.scene_)
        self.setRenderHint(QPainter.RenderHint.Antialiasing)
        self.setMinimumSize(480, 320)
        self.boxes: dict[str, BoxItem] = {}
        self.bands: list[tuple[QGraphicsRectItem, QGraphicsSimpleTextItem, str]] = []
        self.active_box: str | None = None
        self.last_path: tuple[str, ...] = ()
        self.caption = QGraphicsSimpleTextItem("")
        self._build()
        self.token = QGraphicsEllipseItem(-9, -9, 18, 18)
        self.token.setZValue(10)
        self.token.setVisible(False)
        self.scene_.addItem(self.token)
        self.path_item = QGraphicsPathItem()
        self.path_item.setZValue(5)
        self.scene_.addItem(self.path_item)
        self.anim = QVariantAnimation(self)
        self.anim.setStartValue(0.0)
        self.anim.setEndValue(1.0)
        self.anim.setDuration(450)
        self.anim.valueChanged.connect(self._move_token)
        self.anim.finished.connect(lambda: self.token.setVisible(False))
        self._points: list[QPointF] = []
        self.animate = True
        self.apply_theme("light")

    def _build(self) -> None:
        L = self.layout_data
        for layer in L.layers:
            band = QGraphicsRectItem(QRectF(*layer["rect"]))
            band.setZValue(-10)
            self.scene_.addItem(band)
            label = QGraphicsSimpleTextItem(layer["title"])
            f = QFont()
            f.setBold(True)
            f.setPointSizeF(11)
            label.setFont(f)
            x, y, _w, _h = layer["rect"]
            label.setPos(x + 10, y + 6)
            self.scene_.addItem(label)
            self.bands.append((band, label, layer["id"]))
        for box in L.boxes.values():
            item = BoxItem(box, self)
            self.scene_.addItem(item)
            self.boxes[box.id] = item
        w, h = L.size
        self.caption.setPos(w - 420, 6)
        self.caption.setZValue(11)
        self.scene_.addItem(self.caption)
        self.scene_.setSceneRect(QRectF(-6, -6, w + 12, h + 12))

    def colors(self) -> dict:
        return self.layout_data.colors[self.theme]

    def layer_color(self, layer: str) -> QColor:
        return QColor(self.colors()[layer])

    def apply_theme(self, theme: str) -> None:
        self.theme = theme
        c = self.colors()
        text = QColor(c["text"])
        for band, label, lid in self.bands:
            col = QColor(c[lid])
            fill = QColor(col)
            fill.setAlpha(c["band_alpha"])
            band.setBrush(QBrush(fill))
            band.setPen(QPen(col, 1.5))
            label.setBrush(QBrush(col))
        for item in self.boxes.values():
            item.title.setBrush(QBrush(text))
            item.detail.setBrush(QBrush(text))
        self.caption.setBrush(QBrush(text))
        self.token.setBrush(QBrush(QColor(c["active"])))
        self.token.setPen(QPen(text, 1.5))
        self.setBackgroundBrush(QBrush(QColor("#fafafa" if theme == "light" else "#14181b")))
        self._paint_boxes()

    def _paint_boxes(self) -> None:
        c = self.colors()
        for bid, item in self.boxes.items():
            col = self.layer_color(item.box.layer)
            if bid == self.active_box:
                fill = QColor(c["active"])
                item.setPen(QPen(col.darker(130), 4))
                item.title.setBrush(QBrush(QColor("#1a1a1a")))
                item.detail.setBrush(QBrush(QColor("#1a1a1a")))
            else:
                fill = QColor(c["box_fill"])
                item.setPen(QPen(col, 2))
                item.title.setBrush(QBrush(QColor(c["text"])))
                item.detail.setBrush(QBrush(QColor(c["text"])))
            item.setBrush(QBrush(fill))

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self.fitInView(self.scene_.sceneRect(), Qt.AspectRatioMode.KeepAspectRatio)

    # -- what the session did ----------------------------------------------------------------
    def highlight(self, box_id: str | None, path: tuple[str, ...] = (), caption: str = "") -> None:
        self.active_box = box_id
        self.last_path = path
        self.caption.setText(caption)
        self._paint_boxes()
        self._draw_path(path)

    def show_event(self, kind: str, source: str = "", fields=None, caption: str = "") -> str | None:
        """Light the box of an event and animate its path; returns the box id."""
        rule = self.layout_data.route(kind, source, fields or {})
        if rule is None:
            return None
        label = rule.label or kind
        self.highlight(rule.box, rule.path, f"{label}: {caption}" if caption else label)
        return rule.box

    def _draw_path(self, path: tuple[str, ...]) -> None:
        pts = self._route([self.boxes[b].sceneBoundingRect() for b in path if b in self.boxes])
        self._points = pts
        p = QPainterPath()
        if len(pts) >= 2:
            p.moveTo(pts[0])
            for q in pts[1:]:
                p.lineTo(q)
        c = self.colors()
        pen_color = QColor(c["active"]).darker(115)
        self.path_item.setPen(QPen(pen_color, 4, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap,
                                   Qt.PenJoinStyle.RoundJoin))
        if len(pts) >= 2:  # an arrowhead at the end
            a, b = pts[-2], pts[-1]
            d = b - a
            n = max((d.x() ** 2 + d.y() ** 2) ** 0.5, 1e-6)
            ux, uy = d.x() / n, d.y() / n
            p.moveTo(b)
            p.lineTo(QPointF(b.x() - 14 * ux + 8 * uy, b.y() - 14 * uy - 8 * ux))
            p.moveTo(b)
            p.lineTo(QPointF(b.x() - 14 * ux - 8 * uy, b.y() - 14 * uy + 8 * ux))
        self.path_item.setPath(p)
        if len(pts) >= 2 and self.animate:
            self.token.setVisible(True)
            self.anim.stop()
            self.anim.start()
        else:
            self.token.setVisible(False)

    @staticmethod
    def _route(rects: list[QRectF]) -> list[QPointF]:
        """Orthogonal route through the boxes: leave a box by its top or bottom edge, run
        along the gap between the layers, enter the next box by its facing edge (boxes in
        one layer: side to side)."""
        if len(rects) < 2:
            return [r.center() for r in rects]
        pts: list[QPointF] = []
        for a, b in pairwise(rects):
            if b.bottom() <= a.top():  # upwards
                start, end = QPointF(a.center().x(), a.top()), QPointF(b.center().x(), b.bottom())
            elif b.top() >= a.bottom():  # downwards
                start, end = QPointF(a.center().x(), a.bottom()), QPointF(b.center().x(), b.top())
            else:  # same layer
                left = b.center().x() < a.center().x()
                y = min(a.bottom(), b.bottom()) - 16
                pts += [QPointF(a.left() if left else a.right(), y),
                        QPointF(b.right() if left else b.left(), y)]
                continue
            mid = (start.y() + end.y()) / 2
            pts += [start, QPointF(start.x(), mid), QPointF(end.x(), mid), end]
        return pts

    def _move_token(self, t: float) -> None:
        pts = self._points
        if len(pts) < 2:
            return
        seg = min(int(t * (len(pts) - 1)), len(pts) - 2)
        local = t * (len(pts) - 1) - seg
        a, b = pts[seg], pts[seg + 1]
        self.token.setPos(a + (b - a) * local)

    def set_details(self, details: dict[str, str]) -> None:
        for bid, text in details.items():
            item = self.boxes.get(bid)
            if item is not None:
                item.set_detail(text)

    def item_at_box(self, box_id: str) -> QGraphicsItem:
        return self.boxes[box_id]
