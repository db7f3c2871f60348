"""The diagram's layout and its event rules, read from `diagram.json` (no Qt here).

The layout is data: boxes keyed by the ids the rules map events to. A rule matches an
event by kind, optionally its source and some field values; the first match names the box
the event lights and the path (box ids) its token travels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LAYOUT_FILE = Path(__file__).with_name("diagram.json")


@dataclass(frozen=True)
class Box:
    id: str
    layer: str
    rect: tuple[float, float, float, float]
    title: str
    detail: str
    panel: str


@dataclass(frozen=True)
class Rule:
    kind: str
    box: str
    path: tuple[str, ...] = ()
    source: str | None = None
    where: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    def matches(self, kind: str, source: str, fields: Any) -> bool:
        if kind != self.kind or (self.source is not None and source != self.source):
            return False
        return all(fields.get(k) == v for k, v in self.where.items())


@dataclass(frozen=True)
class Layout:
    size: tuple[float, float]
    layers: list[dict[str, Any]]
    colors: dict[str, dict[str, Any]]
    boxes: dict[str, Box]
    rules: list[Rule]

    def route(self, kind: str, source: str = "", fields: Any = None) -> Rule | None:
        """The rule for an event (None: the event has no place in the diagram)."""
        fields = fields or {}
        for r in self.rules:
            if r.matches(kind, source, fields):
                return r
        return None


def load_layout(path: str | Path = LAYOUT_FILE) -> Layout:
    d = json.loads(Path(path).read_text(encoding="utf-8"))
    boxes = {b["id"]: Box(b["id"], b["layer"], tuple(b["rect"]), b["title"], b.get("detail", ""),
                          b.get("panel", "")) for b in d["boxes"]}
    rules = [Rule(r["kind"], r["box"], tuple(r.get("path", ())), r.get("source"),
                  dict(r.get("where", {})), r.get("label", "")) for r in d["rules"]]
    for r in rules:
        for b in (r.box, *r.path):
            if b not in boxes:
                raise ValueError(f"{path}: rule for {r.kind!r} names unknown box {b!r}")
    return Layout(tuple(d["size"]), d["layers"], d["colors"], boxes, rules)
