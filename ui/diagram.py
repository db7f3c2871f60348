"""The architecture diagram: a QGraphicsScene built from `diagram.json`.

Scene items mirror state: `show_event` lights the box an event belongs to and sends a
token along its path (VM exit up from the guest into KVM, KVM_EXIT_* up to QEMU, KVM_RUN
down, VM entry into the guest, an IRQ line from the PIT to the PIC, an injection from the
PIC or APIC into a vCPU); `set_details` redraws the live details (EIP, VMX mode, who
holds the BQL, EPT or shadow) and `set_lit` marks what runs now (a vCPU in the guest, the
main loop, a held BQL) from the session. `set_layout` redraws it for another machine (one
box per vCPU, the interrupt controllers in kvm.ko or in QEMU). Clicking a box asks for
its panel.

A virtio request is told as a story (`show_story`): the kick (QueueNotify) from the vCPU
to the device, through an exit to the vCPU thread or KVM's ioeventfd, the I/O to the disk,
the completion interrupt back to the vCPU; the animation plays its steps in turn.
`follow` keeps what the rules need about it (which vCPU kicked, how the kick came, which
IRQ lines are virtio's) from the events in their order.
"""

from __future__ import annotations

import operator
import re
from itertools import pairwise

from PySide6.QtCore import QPointF, QRect, QRectF, Qt, QVariantAnimation, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QFontMetricsF, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import (
    QGraphicsEllipseItem,
    QGraphicsItem,
    QGraphicsPathItem,
    QGraphicsRectItem,
    QGraphicsScene,
    QGraphicsSimpleTextItem,
    QGraphicsView,
    QLabel,
)

from ui.i18n import tr, wrap_text
from ui.layout import Box, Layout, load_layout

_VCPU = re.compile(r"vcpu(\d+)$")
_KIND = operator.attrgetter("kind")
VIRTIO_SOURCE = "virtio-mmio"  # the transports' event source prefix ("virtio-mmio.7")
# Events that tell where interrupts come from (observe).
IRQ_FROM_KINDS = frozenset({"kvm_set_irq", "kvm_pic_set_irq", "pic_interrupt", "qemu_set_irq",
                            "kvm_apic_accept_irq", "kvm_apic_ipi"})
EVENTFD_KINDS = frozenset({"ioeventfd_write", "irqfd_inject", "aio_poll"})
# The kinds whose follow() changes what the virtio rules keep (the others' only change
# is the last vCPU, which follow_all takes from the last event of a vCPU).
FOLLOWED_KINDS = frozenset({"ioeventfd_write", "virtio_mmio_write_offset", "virtio_queue_notify",
                            "virtio_mmio_setting_irq"})


def words(text: str, vcpu: int | None = None) -> str:
    """A title, detail or label of diagram.json in the current language. A per-vCPU box's
    title ("vCPU1 thread") is translated as its template ("vCPU{n} thread")."""
    if not text:
        return text
    if vcpu is not None and str(vcpu) in text:
        template = text.replace(str(vcpu), "{n}", 1)
        t = tr(template)
        if t != template:
            return t.format(n=vcpu)
    return tr(text)


# Legibility (issue 13): the scene is drawn to fit the view, so its text would shrink with
# it; each text's size in scene units is raised so that on screen it is never smaller than
# these pixel sizes (larger in presentation mode), and boxes show as many lines as fit.
TITLE_PX, DETAIL_PX, BAND_PX = 14.0, 11.5, 15.0  # at scale 1 (10.5, 8.5, 11 pt at 96 dpi)
FLOOR_PX = {False: (12.5, 11.0, 13.0), True: (17.0, 14.0, 17.0)}  # title, detail, layer
TITLE_SQUEEZE = 0.8  # a title too wide for its box may shrink this far below its floor
ANIM_MS = {False: 450, True: 1400}  # one hop of the token; slowed for a lecture hall
PRESENT_TEXT = 1.25  # presentation mode: the diagram's text this much larger (floors aside)
MAX_DETAIL_LINES = 6


def caption_line(label: str, caption: str) -> str:
    """The diagram's caption: the event's label, then its own summary, without saying the
    same words twice ("VM exit: VM exit IO_INSTRUCTION (30) ..." reads as a stutter on a
    projector): a summary that begins with the label, or with the label's head before its
    colon, is given once (in any case: "bql: BQL lock" too); a label "head (where)" whose
    head begins the summary adds only its "(where)"."""
    if not caption:
        return label
    low = caption.lower()
    if low.startswith(label.lower()):
        return caption
    head = label.split(": ", 1)[0]
    if head != label and low.startswith(head.lower() + " "):
        return f"{label}: {caption[len(head):].lstrip()}"
    head, paren, where = label.partition(" (")
    if paren and where.endswith(")") and low.startswith(head.lower() + " "):
        return f"{caption} ({where}"
    return f"{label}: {caption}"


class FittedText(QGraphicsSimpleTextItem):
    """A box's detail: `text()` is all of it (as set, also the box's tooltip), `shown()`
    the lines that fit the box at the current size, the last one elided."""

    def __init__(self, text: str, parent=None):
        super().__init__("", parent)
        self.full = text

    def text(self) -> str:  # the whole detail, not just what fits
        return self.full

    def shown(self) -> str:
        return super().text()


class BoxItem(QGraphicsRectItem):
    def __init__(self, box: Box, view: DiagramView):
        super().__init__(QRectF(*box.rect))
        self.box = box
        self.view = view
        self.active = False
        self.setAcceptHoverEvents(True)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.title = QGraphicsSimpleTextItem("", self)
        self.detail = FittedText(words(box.detail, box.vcpu), self)
        f = QFont()
        f.setBold(True)
        f.setPixelSize(round(TITLE_PX))
        self.title.setFont(f)
        g = QFont()
        g.setPixelSize(round(DETAIL_PX))
        self.detail.setFont(g)
        self.title_px = TITLE_PX
        self.set_detail(words(box.detail, box.vcpu))

    def fit(self, title_px: float, detail_px: float) -> None:
        """Text sizes in scene units (the view's floors at its scale): the title shrunk a
        little if it is too wide (TITLE_SQUEEZE), then cut to the box; the detail wrapped by
        its real width into the lines the box holds."""
        self.title_px = title_px
        g = self.detail.font()
        if abs(g.pixelSize() - detail_px) >= 0.5:
            g.setPixelSize(max(1, round(detail_px)))
            self.detail.setFont(g)
        self.set_detail(self.detail.full)

    def set_detail(self, text: str) -> None:
        x, y, w, h = self.box.rect
        pad = 6
        title = words(self.box.title, self.box.vcpu)
        f = self.title.font()
        f.setPixelSize(max(1, round(self.title_px)))
        wide = QFontMetricsF(f).horizontalAdvance(title)
        if wide > w - 2 * pad:
            f.setPixelSize(max(1, int(max(self.title_px * TITLE_SQUEEZE,
                                          self.title_px * (w - 2 * pad) / wide))))
        if f.pixelSize() != self.title.font().pixelSize():
            self.title.setFont(f)
        tf = QFontMetricsF(self.title.font())
        # Eight vCPUs make narrow boxes: the title is cut to the box, not drawn past it.
        self.title.setText(tf.elidedText(title, Qt.TextElideMode.ElideRight, w - 2 * pad))
        self.title.setPos(x + pad, y + 3)
        self.detail.full = text
        fm = QFontMetricsF(self.detail.font())
        top = 3 + tf.height() + 1
        room = max(0, min(MAX_DETAIL_LINES, int((h - top - 2) // fm.lineSpacing())))
        width = w - 2 * pad
        lines = wrap_text(text, width, fm.horizontalAdvance)  # Chinese breaks between characters
        if len(lines) > room:  # the last line that fits says there is more (the tooltip has it)
            lines = [*lines[:room - 1], (" " if " " in text else "").join(lines[room - 1:])] if room else []
        lines = [fm.elidedText(line, Qt.TextElideMode.ElideRight, width) for line in lines]
        self.detail.setText("\n".join(lines))
        self.detail.setPos(x + pad, y + top)
        tip = f"{title}: {text}" if text else title
        self.setToolTip(tr("{what}\n(click: its panel)").format(what=tip))

    def mousePressEvent(self, event) -> None:
        self.view.boxClicked.emit(self.box.id, self.box.panel)
        super().mousePressEvent(event)

    def retranslate(self) -> None:
        """Title, tooltip and fixed detail in the current language (the live details
        come back with the window's next refresh)."""
        self.set_detail(words(self.box.detail, self.box.vcpu))  # the title and tooltip too


def explained(kind: str, fields) -> tuple[str, str] | None:
    """The caption of an event whose trace line reads as a bug to a student: its label
    and its meaning in plain words (None: the trace line says it well)."""
    if kind == "smc":
        frame = fields.get("frame", 0)
        return (tr("code page written"),
                tr("a write changed instructions the CPU had decoded in page {frame:#x}: it decodes "
                   "them again. Normal, not a bug: code that writes code (a loader, a patch)."
                   ).format(frame=frame if isinstance(frame, int) else 0))
    return None


def _luminance(c: QColor) -> float:
    def lin(v: float) -> float:
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4

    r, g, b = (lin(x) for x in c.getRgbF()[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: QColor, b: QColor) -> float:
    """WCAG contrast ratio of two colours (1 to 21; 4.5 reads as body text)."""
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


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
        # The scene at the top, under the caption; room to spare goes below it.
        self.setAlignment(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)
        self.boxes: dict[str, BoxItem] = {}
        self.bands: list[tuple[QGraphicsRectItem, QGraphicsSimpleTextItem, str]] = []
        self.active_box: str | None = None
        self.last_path: tuple[str, ...] = ()
        self.lit: set[str] = set()  # boxes whose part runs now (set_lit)
        # Where the last interrupt came from ("pic" or "lapic"), for the rules' _from: a
        # kick or an injection names no controller itself.
        self.irq_from = "pic"
        self.pic_bases: tuple[int, ...] = ()  # the PICs' vector bases (ICW2), when known
        # virtio (follow): the vCPU that last left the guest, the IRQ lines virtio-mmio
        # transports drive, how the last kick came ("exit": QueueNotify was an MMIO exit
        # to the vCPU thread; "ioeventfd": kvm.ko signalled an eventfd, or the device
        # kicked itself, as dataplane start does), whether the machine has an iothread.
        self.last_vcpu = 0
        self.virtio_irqs: set[int] = set()
        self.kick_path = "exit"
        self._mmio_exit = False
        self.iothread = False
        self._story: list[tuple[str, str, dict, str]] = []
        self.presentation = False
        self._scale = 0.0  # the scale the texts were last fitted at
        # The caption (what the current event is) above the scene, in the window's font:
        # it stays readable however small the diagram is drawn.
        self.caption = QLabel("", self)
        self.caption.setWordWrap(True)
        self.caption.setTextFormat(Qt.TextFormat.PlainText)
        cf = QFont(self.font())
        cf.setBold(True)
        self.caption.setFont(cf)
        self._build()
        self.anim = QVariantAnimation(self)
        self.anim.setStartValue(0.0)
        self.anim.setEndValue(1.0)
        self.anim.setDuration(ANIM_MS[False])
        self.anim.valueChanged.connect(self._move_token)
        self.anim.finished.connect(self._anim_finished)
        self._points: list[QPointF] = []
        self.animate = True
        self.apply_theme("light")

    def _build(self) -> None:
        L = self.layout_data
        self.boxes = {}
        self.bands = []
        self._scale = 0.0
        for layer in L.layers:
            band = QGraphicsRectItem(QRectF(*layer["rect"]))
            band.setZValue(-10)
            self.scene_.addItem(band)
            label = QGraphicsSimpleTextItem(words(layer["title"]))
            f = QFont()
            f.setBold(True)
            f.setPixelSize(round(BAND_PX))
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
        self.scene_.setSceneRect(QRectF(-6, -6, w + 12, h + 12))
        # The current event's box, marked by more than its colour: a thick border and a
        # "now" tag on its top edge (issue 13: no information by colour alone).
        self.marker = QGraphicsRectItem()
        self.marker.setZValue(12)
        self.marker_text = QGraphicsSimpleTextItem(tr("▶ now"), self.marker)
        mf = QFont()
        mf.setBold(True)
        mf.setPixelSize(13)
        self.marker_text.setFont(mf)
        self.marker.setVisible(False)
        self.scene_.addItem(self.marker)
        self.token = QGraphicsEllipseItem(-9, -9, 18, 18)
        self.token.setZValue(10)
        self.token.setVisible(False)
        self.scene_.addItem(self.token)
        self.path_item = QGraphicsPathItem()
        self.path_item.setZValue(5)
        self.scene_.addItem(self.path_item)

    def set_layout(self, layout: Layout) -> None:
        """Draw another layout (a machine with other vCPUs or irqchip): every item anew."""
        if hasattr(self, "anim"):
            self.anim.stop()
        self.scene_.clear()
        self.layout_data = layout
        self.active_box = None
        self.last_path = ()
        self.lit = set()
        self._points = []
        self._story = []
        self._build()
        self.apply_theme(self.theme)
        self._fit()

    def colors(self) -> dict:
        return self.layout_data.colors[self.theme]

    def layer_color(self, layer: str) -> QColor:
        return QColor(self.colors()[layer])

    def background(self) -> QColor:
        return QColor("#fafafa" if self.theme == "light" else "#14181b")

    def band_fill(self, layer: str) -> QColor:
        """A layer band's colour as drawn: its colour at band_alpha over the background."""
        c = self.colors()
        a = c["band_alpha"] / 255
        col, bg = QColor(c[layer]), self.background()
        return QColor.fromRgbF(*(a * x + (1 - a) * y for x, y in
                                 zip(col.getRgbF()[:3], bg.getRgbF()[:3], strict=True)))

    def band_text(self, layer: str) -> QColor:
        """A layer's name: its colour, darkened (light theme) or lightened (dark) until it
        reads against its band (contrast 4.5:1, WCAG AA)."""
        col, fill = QColor(self.colors()[layer]), self.band_fill(layer)
        for _ in range(12):
            if contrast(col, fill) >= 4.5:
                break
            col = col.darker(115) if self.theme == "light" else col.lighter(115)
        return col

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
            label.setBrush(QBrush(self.band_text(lid)))
        for item in self.boxes.values():
            item.title.setBrush(QBrush(text))
            item.detail.setBrush(QBrush(text))
        self.token.setBrush(QBrush(QColor(c["active"])))
        self.token.setPen(QPen(text, 1.5))
        self.setBackgroundBrush(QBrush(self.background()))
        self.marker.setBrush(QBrush(QColor("#1a1a1a")))
        self.marker.setPen(QPen(QColor(c["active"]), 1.5))
        self.marker_text.setBrush(QBrush(QColor(c["active"])))
        self._paint_boxes()

    def _paint_boxes(self) -> None:
        c = self.colors()
        self.marker.setVisible(False)
        for bid, item in self.boxes.items():
            col = self.layer_color(item.box.layer)
            if bid == self.active_box:
                fill = QColor(c["active"])
                item.setPen(QPen(QColor("#1a1a1a") if self.theme == "light" else QColor("#ffffff"), 5))
                item.title.setBrush(QBrush(QColor("#1a1a1a")))
                item.detail.setBrush(QBrush(QColor("#1a1a1a")))
                self._place_marker(item)
            elif bid in self.lit:  # runs now: a softer light, a thick dashed border
                fill = QColor(c.get("lit", c["active"]))
                item.setPen(QPen(col, 3.5, Qt.PenStyle.DashLine))
                item.title.setBrush(QBrush(QColor(c["text"])))
                item.detail.setBrush(QBrush(QColor(c["text"])))
            else:
                fill = QColor(c["box_fill"])
                item.setPen(QPen(col, 2))
                item.title.setBrush(QBrush(QColor(c["text"])))
                item.detail.setBrush(QBrush(QColor(c["text"])))
            item.setBrush(QBrush(fill))

    def _place_marker(self, item: BoxItem) -> None:
        """The "now" tag on the bottom edge of the current event's box, at its right."""
        r = item.sceneBoundingRect()
        t = self.marker_text.boundingRect()
        pad = 3
        w, h = t.width() + 2 * pad, t.height() + 2 * pad
        x = max(r.left(), r.right() - w - 8)
        self.marker.setRect(QRectF(0, 0, w, h))
        self.marker.setPos(x, min(self.scene_.sceneRect().bottom() - h, r.bottom() - h / 2))
        self.marker_text.setPos(pad, pad)
        self.marker.setVisible(True)

    def set_presentation(self, on: bool) -> None:
        """Larger text floors, a slower token (each hop can be followed from afar)."""
        self.presentation = on
        self.anim.setDuration(ANIM_MS[on])
        self._scale = 0.0
        self._fit()

    def scale_factor(self) -> float:
        """Screen pixels per scene unit (the scene fitted to the view, aspect kept)."""
        return self.transform().m11()

    def text_pixels(self) -> dict[str, float]:
        """The on-screen pixel size of the boxes' titles and details and the layers'
        names as drawn now (the legibility test's measure)."""
        k = self.scale_factor()
        item = next(iter(self.boxes.values()))
        return {"title": item.title.font().pixelSize() * k, "detail": item.detail.font().pixelSize() * k,
                "layer": self.bands[0][1].font().pixelSize() * k if self.bands else 0.0}

    def _fit(self) -> None:
        """Fit the scene to the view (aspect kept), then size the texts so that none is
        drawn below its floor, and re-wrap the boxes' details to what fits."""
        fm = self.caption.fontMetrics()
        top = 2 * fm.lineSpacing() + 8  # two lines of caption above the scene
        if self.viewportMargins().top() != top:
            self.setViewportMargins(0, top, 0, 0)
        self.caption.setGeometry(6, 3, max(10, self.width() - 12), top - 4)
        self._show_caption()
        self.fitInView(self.scene_.sceneRect(), Qt.AspectRatioMode.KeepAspectRatio)
        k = self.scale_factor()
        if k <= 0 or abs(k - self._scale) < 0.01:
            return
        self._scale = k
        t_floor, d_floor, b_floor = FLOOR_PX[self.presentation]
        big = PRESENT_TEXT if self.presentation else 1.0
        title, detail = max(TITLE_PX * big, t_floor / k), max(DETAIL_PX * big, d_floor / k)
        for item in self.boxes.values():
            item.fit(title, detail)
        for _band, label, _lid in self.bands:
            f = label.font()
            f.setPixelSize(round(max(BAND_PX * big, b_floor / k)))
            label.setFont(f)
        mf = self.marker_text.font()
        mf.setPixelSize(round(max(13 * big, d_floor / k)))
        self.marker_text.setFont(mf)
        if self.active_box in self.boxes:
            self._place_marker(self.boxes[self.active_box])

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._fit()

    def changeEvent(self, event) -> None:
        super().changeEvent(event)
        from PySide6.QtCore import QEvent

        if event.type() == QEvent.Type.FontChange:  # presentation mode's larger font
            cf = QFont(self.font())
            cf.setBold(True)
            self.caption.setFont(cf)
            self._fit()

    def _show_caption(self) -> None:
        """The caption in the two lines it has, cut at a word with an ellipsis where it is
        longer (a stop reason that names an instruction and its cause); the tooltip has it
        whole."""
        text = getattr(self, "_caption", "")
        label = self.caption
        label.setToolTip(text)
        fm = label.fontMetrics()
        room = QRect(0, 0, max(10, label.width()), 1 << 20)
        flags = Qt.TextFlag.TextWordWrap

        def fits(t: str) -> bool:
            return fm.boundingRect(room, flags, t).height() <= label.height()

        if text and not fits(text):
            lo, hi = 0, len(text)
            while lo < hi:  # the longest start that fits with the ellipsis
                mid = (lo + hi + 1) // 2
                if fits(text[:mid].rstrip() + "\u2026"):
                    lo = mid
                else:
                    hi = mid - 1
            cut = text[:lo]
            if " " in cut.rstrip() and lo < len(text) and text[lo] != " ":
                cut = cut[:cut.rstrip().rfind(" ")]  # at a word's end
            text = cut.rstrip() + "\u2026"
        label.setText(text)

    # -- what the session did ----------------------------------------------------------------
    def highlight(self, box_id: str | None, path: tuple[str, ...] = (), caption: str = "") -> None:
        self.active_box = box_id
        self.last_path = path
        self._caption = caption
        self._show_caption()
        self._paint_boxes()
        self._draw_path(path)

    def set_lit(self, box_ids: set[str]) -> None:
        """Mark the boxes whose part runs now (apart from the one event's box)."""
        box_ids = {b for b in box_ids if b in self.boxes}
        if box_ids != self.lit:
            self.lit = box_ids
            self._paint_boxes()

    def observe(self, kind: str) -> None:
        """Follow where interrupts come from, event by event (all of a step's, in order)."""
        if kind in ("kvm_set_irq", "kvm_pic_set_irq", "pic_interrupt", "qemu_set_irq"):
            self.irq_from = "pic"
        elif kind in ("kvm_apic_accept_irq", "kvm_apic_ipi"):
            self.irq_from = "lapic"

    def follow_all(self, events: list, kinds: set[str] | None = None) -> None:
        """What observe() and follow() of each of `events` in order leave behind, without
        each one's context (a running guest's events, thousands a repaint): only the events
        that change it are followed, and a pass over the events is skipped where `kinds`
        (the set of their kinds) has none of those it looks for."""
        if kinds is None:
            kinds = set(map(_KIND, events))
        if not kinds.isdisjoint(IRQ_FROM_KINDS):
            for e in reversed(events):
                if e.kind in IRQ_FROM_KINDS:
                    self.observe(e.kind)
                    break
        if not kinds.isdisjoint(FOLLOWED_KINDS):
            for e in events:
                kind = e.kind
                if kind in FOLLOWED_KINDS and (kind == "ioeventfd_write"
                                               or e.source.startswith(VIRTIO_SOURCE)):
                    self.follow(kind, e.source, e.fields)
        for e in reversed(events):
            m = _VCPU.match(e.source or "")
            if m:
                self.last_vcpu = int(m.group(1))
                break

    def follow(self, kind: str, source: str, fields) -> dict:
        """Keep what the virtio rules need, event by event in order; returns the pseudo
        fields (_path, vcpu_id ...) the event is routed with."""
        m = _VCPU.match(source or "")
        if m:
            self.last_vcpu = int(m.group(1))
        if kind == "ioeventfd_write":  # completed in kvm.ko: no exit to QEMU
            self._mmio_exit = False
        elif source.startswith(VIRTIO_SOURCE):
            if kind == "virtio_mmio_write_offset" and fields.get("register") == "QUEUE_NOTIFY":
                self._mmio_exit = True  # the write reached QEMU's dispatch: an exit
            elif kind == "virtio_queue_notify":
                self.kick_path = "exit" if self._mmio_exit else "ioeventfd"
                self._mmio_exit = False
            elif kind == "virtio_mmio_setting_irq" and isinstance(fields.get("irq"), int):
                self.virtio_irqs.add(fields["irq"])
        return self._context(kind, fields)

    def _context(self, kind: str, fields) -> dict:
        ctx: dict = {}
        if kind.startswith(("virtio", "virtqueue")) or kind in EVENTFD_KINDS:
            ctx.update(vcpu_id=self.last_vcpu, _path=self.kick_path, _iothread=self.iothread)
        elif kind in ("kvm_set_irq", "qemu_set_irq"):
            line = fields.get("gsi", fields.get("irq"))
            if line in self.virtio_irqs:
                ctx["_by"] = "virtio"
        return ctx

    def route(self, kind: str, source: str = "", fields=None):
        """The layout's rule for an event, told where its interrupt came from (_from)."""
        fields = dict(fields or {})
        for k, v in self._context(kind, fields).items():
            fields.setdefault(k, v)
        frm = self.irq_from
        if kind == "kvm_inj_virq" and self.pic_bases and isinstance(fields.get("irq"), int):
            # A vector in a PIC's range came through the PIC (ExtINT), any other from the APIC.
            frm = "pic" if any(b <= fields["irq"] < b + 8 for b in self.pic_bases) else "lapic"
        fields.setdefault("_from", frm)
        return self.layout_data.route(kind, source, fields)

    def show_event(self, kind: str, source: str = "", fields=None, caption: str = "") -> str | None:
        """Light the box of an event and animate its path; returns the box id."""
        self.observe(kind)
        rule = self.route(kind, source, fields)
        if rule is None:
            return None
        self._story = []
        label = words(rule.label) if rule.label else kind
        told = explained(kind, fields or {})
        if told:  # an event whose own words would puzzle a student
            label, caption = told
        self.highlight(rule.box, rule.path, caption_line(label, caption))
        return rule.box

    def show_story(self, steps: list[tuple[str, str, dict, str]]) -> str | None:
        """Show events in turn (kind, source, fields with follow's context, caption): each
        step's path animates after the one before; without animation the last one shows.
        Returns the box of the last step that has a place in the diagram."""
        routed = [s for s in steps if self.route(s[0], s[1], s[2]) is not None]
        if not routed:
            return None
        box = None
        if not self.animate:
            for s in routed:
                box = self.show_event(*s)
            return box
        box = self.route(routed[-1][0], routed[-1][1], routed[-1][2]).box
        first, rest = routed[0], routed[1:]
        self.show_event(*first)
        self._story = rest
        return box

    def _anim_finished(self) -> None:
        self.token.setVisible(False)
        if self._story:
            step, rest = self._story[0], self._story[1:]
            self.show_event(*step)
            self._story = rest

    def _draw_path(self, path: tuple[str, ...]) -> None:
        pts = self._route([self.boxes[b].sceneBoundingRect() for b in path if b in self.boxes],
                          [item.sceneBoundingRect() for item in self.boxes.values()])
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
    def _route(rects: list[QRectF], obstacles: list[QRectF] = ()) -> list[QPointF]:
        """Orthogonal route through the boxes: leave a box by its top or bottom edge, run
        along the gap between the layers, enter the next box by its facing edge (boxes in
        one layer: side to side, or under the boxes between them when a box is in the way)."""
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
                x0, x1 = (a.left(), b.right()) if left else (a.right(), b.left())
                lo, hi = min(x0, x1), max(x0, x1)
                if any(o.top() < y < o.bottom() and o.left() < hi and o.right() > lo
                       for o in obstacles if o != a and o != b):
                    below = max(a.bottom(), b.bottom()) + 4  # the gap under the row
                    pts += [QPointF(a.center().x(), a.bottom()), QPointF(a.center().x(), below),
                            QPointF(b.center().x(), below), QPointF(b.center().x(), b.bottom())]
                else:
                    pts += [QPointF(x0, y), QPointF(x1, y)]
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
            # A box laid out with this text already keeps it (wrapping it again on every
            # repaint of a running guest was a third of the refresh); a size or language
            # change lays it out again itself (fit, retranslate).
            if item is not None and text != item.detail.full:
                item.set_detail(text)

    def item_at_box(self, box_id: str) -> QGraphicsItem:
        return self.boxes[box_id]

    def retranslate(self) -> None:
        """The layers' and boxes' words in the current language (ui.i18n.switch_language;
        the caption is re-set by the window's retranslation, the details by its refresh)."""
        titles = {layer["id"]: layer["title"] for layer in self.layout_data.layers}
        for _band, label, lid in self.bands:
            label.setText(words(titles.get(lid, label.text())))
        for item in self.boxes.values():
            item.retranslate()
