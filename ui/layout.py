"""The diagram's layout and its event rules, read from `diagram.json` (no Qt here).

The layout is data: boxes keyed by the ids the rules map events to. A rule matches an
event by kind, optionally its source and some field values; the first match names the box
the event lights and the path (box ids) its token travels.

Two things vary with the machine, and `load_layout(smp=, irqchip=)` resolves them:
- boxes marked "per_vcpu" (the guest's vCPUs, QEMU's vCPU threads) are templates: one
  box per vCPU, their ids and titles with {n} replaced, laid out in the template's rect;
  rules name them with {n} (the event's vCPU, from its source "vcpuN") or {dest} (the
  vCPU an IPI goes to);
- boxes and rules marked "irqchip" exist only in that mode: the PIC and PIT are in kvm.ko
  with `--irqchip kernel`, QEMU device models with `--irqchip userspace`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from math import ceil
from pathlib import Path
from typing import Any

LAYOUT_FILE = Path(__file__).with_name("diagram.json")
MAX_VCPUS = 8  # as `vmsim run --smp`
IRQCHIP_MODES = ("kernel", "userspace")
_VCPU_SOURCE = re.compile(r"vcpu(\d+)$")


@dataclass(frozen=True)
class Box:
    id: str
    layer: str
    rect: tuple[float, float, float, float]
    title: str
    detail: str
    panel: str
    vcpu: int | None = None  # the vCPU a per-vCPU box belongs to


@dataclass(frozen=True)
class Rule:
    kind: str
    box: str
    path: tuple[str, ...] = ()
    source: str | None = None
    where: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    irqchip: str | None = None  # the rule holds in this irqchip mode only

    def matches(self, kind: str, source: str, fields: Any) -> bool:
        if kind != self.kind:
            return False
        if self.source is not None and source != self.source and not (
                self.source.endswith("*") and source.startswith(self.source[:-1])):
            return False  # ("virtio-mmio*": any source that begins so)
        return all(fields.get(k) == v for k, v in self.where.items())


def vcpu_of(source: str, fields: Any) -> int:
    """The vCPU an event is about: its source thread ("vcpu1"), else a vcpu_id or
    cpu_index field (events kvm.ko or QEMU's main loop emit about a vCPU), else 0."""
    m = _VCPU_SOURCE.match(source or "")
    if m:
        return int(m.group(1))
    for k in ("vcpu_id", "cpu_index"):
        v = fields.get(k)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return 0


def ipi_destination(n: int, fields: Any) -> int | None:
    """The vCPU a kvm_apic_ipi goes to, when it is one: the ICR's destination shorthand
    (bits 19:18; SDM Vol. 3A 11.6.1) 01 is self, 00 the destination field (vmsim's APIC
    IDs are the vCPU indexes); "all" shorthands have no single target."""
    shorthand = (fields.get("icr_low", 0) >> 18) & 3
    if shorthand == 1:
        return n
    if shorthand == 0:
        return fields.get("dest_id")
    return None


@dataclass(frozen=True)
class Layout:
    size: tuple[float, float]
    layers: list[dict[str, Any]]
    colors: dict[str, dict[str, Any]]
    boxes: dict[str, Box]
    rules: list[Rule]
    smp: int = 1
    irqchip: str = "kernel"

    def route(self, kind: str, source: str = "", fields: Any = None) -> Rule | None:
        """The rule for an event with its vCPU placeholders resolved (None: the event has
        no place in the diagram). Path boxes that do not exist (an IPI to nobody) are
        left out."""
        fields = fields or {}
        for r in self.rules:
            if r.matches(kind, source, fields):
                return self._resolve(r, source, fields)
        return None

    def _resolve(self, r: Rule, source: str, fields: Any) -> Rule:
        if "{" not in r.box and not any("{" in p for p in r.path):
            return r
        n = vcpu_of(source, fields)
        if not 0 <= n < self.smp:
            n = 0
        dest = ipi_destination(n, fields) if r.kind == "kvm_apic_ipi" else None
        env = {"n": n, "dest": dest if dest is not None else -1}
        box = r.box.format(**env)
        path = tuple(p for p in (q.format(**env) for q in r.path) if p in self.boxes)
        return replace(r, box=box if box in self.boxes else path[-1] if path else r.box,
                       path=path)

    def vcpu_boxes(self, prefix: str) -> list[str]:
        """The ids of one per-vCPU box's copies, by vCPU ("guest.vcpu" -> guest.vcpu0 ...)."""
        return [f"{prefix}{n}" for n in range(self.smp) if f"{prefix}{n}" in self.boxes]


def _grid(rect: tuple[float, float, float, float], count: int, spec: dict[str, Any]
          ) -> list[tuple[float, float, float, float]]:
    """`count` equal cells in `rect`, at most spec["cols"] a row, each at most
    spec["max_width"] wide, `gap` apart."""
    x, y, w, h = rect
    gap = spec.get("gap", 8)
    cols = max(1, min(count, spec.get("cols", count)))
    rows = ceil(count / cols)
    cw = min((w - (cols - 1) * gap) / cols, spec.get("max_width", w))
    ch = (h - (rows - 1) * gap) / rows
    return [(x + (i % cols) * (cw + gap), y + (i // cols) * (ch + gap), cw, ch)
            for i in range(count)]


def load_layout(path: str | Path = LAYOUT_FILE, smp: int = 1, irqchip: str = "kernel") -> Layout:
    if not 1 <= smp <= MAX_VCPUS:
        raise ValueError(f"smp {smp}: the diagram draws 1 to {MAX_VCPUS} vCPUs")
    if irqchip not in IRQCHIP_MODES:
        raise ValueError(f"irqchip {irqchip!r}: choose kernel or userspace")
    d = json.loads(Path(path).read_text(encoding="utf-8"))
    boxes: dict[str, Box] = {}
    for b in d["boxes"]:
        if b.get("irqchip", irqchip) != irqchip:
            continue
        per_vcpu = b.get("per_vcpu")
        if per_vcpu is None:
            boxes[b["id"]] = Box(b["id"], b["layer"], tuple(b["rect"]), b["title"],
                                 b.get("detail", ""), b.get("panel", ""))
            continue
        for n, rect in enumerate(_grid(tuple(b["rect"]), smp, per_vcpu)):
            bid = b["id"].format(n=n)
            # A narrow box (many vCPUs) takes the short title, if the template has one.
            title = b["title"] if rect[2] >= per_vcpu.get("short_below", 0) else per_vcpu["short_title"]
            boxes[bid] = Box(bid, b["layer"], rect, title.format(n=n),
                             b.get("detail", "").format(n=n), b.get("panel", ""), n)
    rules = [Rule(r["kind"], r["box"], tuple(r.get("path", ())), r.get("source"),
                  dict(r.get("where", {})), r.get("label", ""), r.get("irqchip"))
             for r in d["rules"] if r.get("irqchip", irqchip) == irqchip]
    for r in rules:  # every box a rule names exists (vCPU 0's for the templates)
        for b in (r.box, *r.path):
            if b.format(n=0, dest=0) not in boxes:
                raise ValueError(f"{path}: rule for {r.kind!r} names unknown box {b!r}")
    return Layout(tuple(d["size"]), d["layers"], d["colors"], boxes, rules, smp, irqchip)
