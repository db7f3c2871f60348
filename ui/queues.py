"""The Device queues panel: every virtio-mmio transport with a device, as
`Session.virtio_queues()` has it, repainted at the GUI's bounded rate like the other
panels. Above: the transport, the device status bits by name, the features negotiated,
the queue. Tabs: the descriptor table (address, length, flags, next), the available ring
(its idx, the driver's, beside the device's last_avail_idx), the used ring (idx; id, len),
the recent requests' progress (queued, popped, in flight, completed, interrupt raised) and
the disk sectors requests touched."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ui import text as T
from ui.i18n import tr
from ui.panels import _item, compact, mono
from vmsim.vmm import virtio
from vmsim.vmm.devices import virtio_blk

RING_MOD = 1 << 16  # avail->idx and used->idx are free-running 16-bit counters


def _feature_names() -> dict[int, str]:
    """Feature bit -> name, from the constants the device model uses (the spec's names)."""
    names: dict[int, str] = {}
    for mod, prefixes in ((virtio, ("VIRTIO_F_", "VIRTIO_RING_F_")), (virtio_blk, ("VIRTIO_BLK_F_",))):
        for name, bit in vars(mod).items():
            if name.startswith(prefixes) and isinstance(bit, int):
                names.setdefault(bit, name)
    return names


FEATURE_NAMES = _feature_names()
DESC_FLAGS = ((virtio.VRING_DESC_F_NEXT, "NEXT"), (virtio.VRING_DESC_F_WRITE, "WRITE"),
              (virtio.VRING_DESC_F_INDIRECT, "INDIRECT"))


def feature_names(bits: int) -> list[str]:
    return [FEATURE_NAMES.get(b, tr("bit {n}").format(n=b)) for b in range(64) if bits >> b & 1]


def desc_flags(flags: int) -> str:
    """A descriptor's flags: the value, then the bits by name."""
    names = [n for bit, n in DESC_FLAGS if flags & bit]
    return f"{flags:#x} {' '.join(names)}".strip()


def avail_state(slot: int, n: int, idx: int, last_avail: int) -> str:
    """What a slot of the available ring holds: the head of a chain the device has not
    popped yet (between last_avail_idx and idx), one it popped, or nothing written yet."""
    if n <= 0:
        return ""
    pos = (idx - 1 - ((idx - 1 - slot) % n)) % RING_MOD  # the slot's latest position
    if (idx - pos) % RING_MOD > n or (idx < n and slot >= idx):
        return T.RING_OLD
    waiting = (idx - last_avail) % RING_MOD
    return T.RING_WAITING if (pos - last_avail) % RING_MOD < waiting else T.RING_POPPED


def used_state(slot: int, n: int, idx: int) -> str:
    """The used ring's slot the device wrote last is marked."""
    return T.RING_NEW if n > 0 and idx and (idx - 1) % n == slot else T.RING_OLD


class DeviceQueuesPanel(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.transport_box = QComboBox()
        self.transport_box.setToolTip(tr("the virtio-mmio transports with a device"))
        self.queue_box = QComboBox()
        self.queue_box.setToolTip(tr("the device's virtqueue shown"))
        self.transport_box.activated.connect(lambda _i: self._show(force=True))
        self.queue_box.activated.connect(lambda _i: self._show(force=True))
        self.summary = QLabel(T.QUEUES_NONE)
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.desc = self._table(T.DESC_HEADERS, stretch=3)
        self.avail_label = QLabel("")
        self.avail = self._table(T.AVAIL_HEADERS)
        self.used_label = QLabel("")
        self.used = self._table(T.USED_HEADERS)
        self.requests = self._table(T.REQ_HEADERS)
        for col, width in enumerate((50, 70, 70, 60, 110, 70)):  # room for the progress
            self.requests.horizontalHeader().resizeSection(col, width)
        self.disk_label = QLabel("")
        self.disk_label.setWordWrap(True)
        self.disk = self._table(T.DISK_HEADERS)
        self.tabs = QTabWidget()
        for title, widgets in ((T.TAB_DESCRIPTORS, [self.desc]),
                               (T.TAB_AVAIL, [self.avail_label, self.avail]),
                               (T.TAB_USED, [self.used_label, self.used]),
                               (T.TAB_REQUESTS, [self.requests]),
                               (T.TAB_DISK, [self.disk_label, self.disk])):
            page = QWidget()
            lay = QVBoxLayout(page)
            lay.setContentsMargins(2, 2, 2, 2)
            for w in widgets:
                lay.addWidget(w)
            self.tabs.addTab(page, title)
        top = QHBoxLayout()
        top.addWidget(self.transport_box, 1)
        top.addWidget(self.queue_box)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addLayout(top)
        lay.addWidget(self.summary)
        lay.addWidget(self.tabs, 1)
        self.views: list[dict] = []  # the transports with a device, as the session said
        self.view: dict | None = None  # the one shown
        self.queue: dict | None = None  # its queue shown
        self._key: object = None

    @staticmethod
    def _table(headers: list[str], stretch: int = -1) -> QTableWidget:
        """A read-only table; column `stretch` (default: the last) takes the room left."""
        t = QTableWidget(0, len(headers))
        t.setHorizontalHeaderLabels(headers)
        compact(t)
        t.setFont(mono())
        h = t.horizontalHeader()
        h.setDefaultSectionSize(max(90, t.fontMetrics().horizontalAdvance("0x00000000") + 16))
        h.setSectionResizeMode(stretch % len(headers), QHeaderView.ResizeMode.Stretch)
        return t

    # -- from the session -----------------------------------------------------------------------
    def refresh(self, bridge) -> None:
        views = [v for v in bridge.session.virtio_queues() if v.get("device_id")]
        key = repr(views)
        if key == self._key:
            return
        self._key = key
        self.views = views
        names = [self._transport_name(v) for v in views]
        if names != [self.transport_box.itemText(i) for i in range(self.transport_box.count())]:
            keep = self.transport_box.currentIndex()
            self.transport_box.clear()
            self.transport_box.addItems(names)
            if names:
                self.transport_box.setCurrentIndex(keep if 0 <= keep < len(names) else len(names) - 1)
        self._show()

    def reset(self) -> None:
        self._key = None

    @staticmethod
    def _transport_name(v: dict) -> str:
        return f"{v['transport']}: " + T.DEVICE_NAMES.get(v['device_id'],
                                                          tr("device {n}").format(n=v['device_id']))

    def _show(self, force: bool = False) -> None:
        i = self.transport_box.currentIndex()
        v = self.views[i] if 0 <= i < len(self.views) else None
        self.view = v
        if v is None:
            self.summary.setText(T.QUEUES_NONE)
            self.queue = None
            self.queue_box.clear()
            for t in (self.desc, self.avail, self.used, self.requests, self.disk):
                t.setRowCount(0)
            for label in (self.avail_label, self.used_label, self.disk_label):
                label.setText("")
            return
        queues = v.get("queues", [])
        qnames = [tr("queue {n}").format(n=q['index']) for q in queues]
        if qnames != [self.queue_box.itemText(k) for k in range(self.queue_box.count())]:
            self.queue_box.clear()
            self.queue_box.addItems(qnames)
        k = self.queue_box.currentIndex()
        self.queue = q = queues[k] if 0 <= k < len(queues) else None
        lines = [T.TRANSPORT.format(transport=v["transport"], base=v["base"], irq=v["irq"],
                                    level=v["irq_level"],
                                    device=T.DEVICE_NAMES.get(v["device_id"], str(v["device_id"]))),
                 T.STATUS_LINE.format(status=v["status"], names=" ".join(v["status_names"]) or "0"),
                 T.FEATURES_LINE.format(device=v["device_features"], driver=v["driver_features"],
                                        names=" ".join(feature_names(v["device_features"]
                                                                     & v["driver_features"])) or T.NONE)]
        if v.get("broken"):
            lines.append(T.BROKEN_LINE.format(why=v["broken"]))
        if q is not None:
            lines.append(T.QUEUE_LINE.format(index=q["index"], size=q["size"],
                                             ready=T.READY if q["ready"] else T.NOT_READY,
                                             desc=q["desc_addr"], avail=q["avail_addr"],
                                             used=q["used_addr"], inuse=q["inuse"]))
        self.summary.setText("\n".join(lines))
        self._fill_queue(q)
        self._fill_requests(v.get("requests", []))
        self._fill_disk(v)

    def _fill_queue(self, q: dict | None) -> None:
        descs = q["descriptors"] if q else []
        _rows(self.desc, [[str(i), f"{d['addr']:#x}", str(d["len"]), desc_flags(d["flags"]),
                           str(d["next"])] for i, d in enumerate(descs)])
        avail = q["avail"] if q else None
        used = q["used"] if q else None
        n = q["size"] if q else 0
        if avail is None:
            self.avail_label.setText(T.NO_RING)
            _rows(self.avail, [])
        else:
            self.avail_label.setText(T.AVAIL_LINE.format(idx=avail["idx"], last=q["last_avail_idx"],
                                                         flags=avail["flags"]))
            _rows(self.avail, [[str(s), str(h), avail_state(s, n, avail["idx"], q["last_avail_idx"])]
                               for s, h in enumerate(avail["ring"])])
        if used is None:
            self.used_label.setText(T.NO_RING)
            _rows(self.used, [])
        else:
            self.used_label.setText(T.USED_LINE.format(idx=used["idx"], flags=used["flags"]))
            _rows(self.used, [[str(s), str(e["id"]), str(e["len"]), used_state(s, n, used["idx"])]
                              for s, e in enumerate(used["ring"])])

    def _fill_requests(self, reqs: list[dict]) -> None:
        _rows(self.requests, [[str(r["head"]), str(r["type"]),
                               "" if r["sector"] is None else str(r["sector"]), str(r["nsectors"]),
                               " ".join(map(str, r["descs"])), r["status"] or "",
                               " > ".join(r["progress"])] for r in reqs])
        if reqs:
            self.requests.scrollToBottom()

    def _fill_disk(self, v: dict) -> None:
        if "disk" not in v:
            self.disk_label.setText("")
            _rows(self.disk, [])
            return
        touched = v["sectors_touched"]
        self.disk_label.setText(T.DISK_LINE.format(
            name=v["disk"], ro=T.READONLY if v["readonly"] else "", capacity=v["capacity"],
            read=v.get("sectors_read", "?"), written=v.get("sectors_written", "?"),
            touched=len(touched)))
        _rows(self.disk, [[str(s), T.ACCESS_NAMES.get(how, how)] for s, how in touched.items()])

    # -- for tests and tooltips ---------------------------------------------------------------
    @staticmethod
    def cells(table: QTableWidget) -> list[list[str]]:
        return [[table.item(r, c).text() if table.item(r, c) else "" for c in range(table.columnCount())]
                for r in range(table.rowCount())]


def _rows(table: QTableWidget, rows: list[list[str]]) -> None:
    """Fill a table, touching only the cells that changed (a 1024-entry ring repaints often)."""
    table.setUpdatesEnabled(False)
    try:
        if table.rowCount() != len(rows):
            table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, text in enumerate(row):
                it = table.item(r, c)
                if it is None:
                    table.setItem(r, c, _item(text))
                elif it.text() != text:
                    it.setText(text)
    finally:
        table.setUpdatesEnabled(True)
