"""Machine state as plain data (issue 12): what snapshots and steps backwards stand on.

Every model says what it keeps between two rebuildable points (docs/ARCHITECTURE.md,
"Simulated threads and snapshots") with `state() -> dict` and puts it back with
`load_state(d)`. The dicts hold only ints, strings, bools, None, bytes, lists and dicts
with string keys, so a file format can write them without pickle. Python containers
that plain data lacks are tagged: a tuple is {"__tuple__": [...]}, a set {"__set__": [...]},
a deque {"__deque__": [...]}, a dict with other keys {"__dict__": [[key, value], ...]}, and
one of the few dataclasses listed in DATACLASSES {"__dc__": name, "fields": {...}}.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import Any

_TAGS = ("__tuple__", "__set__", "__deque__", "__dict__", "__dc__")


class NotPlain(TypeError):
    """A value that has no plain-data form (a callable, a model object)."""


_DC: dict[str, type] = {}


def register(cls: type) -> type:
    """Let plain data name this dataclass (its module registers it: this module is at the
    bottom of the layers and imports none of them)."""
    _DC[cls.__name__] = cls
    return cls


def dataclass_table() -> dict[str, type]:
    """The dataclasses plain data may name: a fixed list, never an import by name."""
    return _DC


def to_plain(x: Any) -> Any:
    if x is None or isinstance(x, (bool, int, str, float)):
        return x
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x)
    if isinstance(x, list):
        return [to_plain(v) for v in x]
    if isinstance(x, tuple):
        return {"__tuple__": [to_plain(v) for v in x]}
    if isinstance(x, (set, frozenset)):
        return {"__set__": sorted((to_plain(v) for v in x), key=repr)}
    if isinstance(x, deque):
        return {"__deque__": [to_plain(v) for v in x]}
    if isinstance(x, dict):
        if all(isinstance(k, str) and k not in _TAGS for k in x):
            return {k: to_plain(v) for k, v in x.items()}
        return {"__dict__": [[to_plain(k), to_plain(v)] for k, v in x.items()]}
    name = type(x).__name__
    if dataclasses.is_dataclass(x) and dataclass_table().get(name) is type(x):
        return {"__dc__": name, "fields": {f.name: to_plain(getattr(x, f.name))
                                           for f in dataclasses.fields(x)}}
    raise NotPlain(f"{type(x).__name__} has no plain-data form")


def from_plain(x: Any) -> Any:
    if isinstance(x, list):
        return [from_plain(v) for v in x]
    if not isinstance(x, dict):
        return x
    if len(x) == 1:
        (tag, v), = x.items()
        if tag == "__tuple__":
            return tuple(from_plain(e) for e in v)
        if tag == "__set__":
            return {_hashable(from_plain(e)) for e in v}
        if tag == "__deque__":
            return deque(from_plain(e) for e in v)
        if tag == "__dict__":
            return {_hashable(from_plain(k)): from_plain(e) for k, e in v}
    if set(x) == {"__dc__", "fields"}:
        cls = dataclass_table().get(x["__dc__"])
        if cls is None:
            raise ValueError(f"unknown dataclass {x['__dc__']!r} in saved state")
        return cls(**{k: from_plain(v) for k, v in x["fields"].items()})
    return {k: from_plain(v) for k, v in x.items()}


def _hashable(x: Any) -> Any:
    return tuple(_hashable(v) for v in x) if isinstance(x, list) else x


def is_plain(x: Any) -> bool:
    try:
        to_plain(x)
    except NotPlain:
        return False
    return True


_SLOTS: dict[type, tuple[str, ...]] = {}
_UNSET = object()


def _slot_names(cls: type) -> tuple[str, ...]:
    """The attribute slots of a class without instance dicts, base classes' first."""
    names = _SLOTS.get(cls)
    if names is None:
        found: list[str] = []
        for c in reversed(cls.__mro__):
            slots = c.__dict__.get("__slots__", ())
            found += [slots] if isinstance(slots, str) else [n for n in slots
                                                             if not n.startswith("__")]
        names = _SLOTS[cls] = tuple(found)
    return names


def fields_state(obj: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every attribute of `obj` that has a plain form, except `skip`: for the models whose
    fields are all plain data (the devices' registers). Callables and references to other
    models are structure, built the same way by the constructor, not state.

    The models on the exit path declare __slots__ (in the order their constructor sets
    them, the order of vars()): reading an instance's __dict__ makes CPython 3.11 give it a
    real dict for life, and every attribute access on it slower (3% of an exit to
    userspace where the history saves them: docs/performance.md)."""
    cls = type(obj)
    if cls.__dictoffset__ == 0:  # (no instance dict: slots only)
        items: Any = [(n, getattr(obj, n, _UNSET)) for n in _slot_names(cls)]
    else:
        items = vars(obj).items()
    out = {}
    for name, value in items:
        if name in skip or value is _UNSET:
            continue
        try:
            out[name] = to_plain(value)
        except NotPlain:
            continue
    return out


def load_fields(obj: Any, d: dict[str, Any]) -> None:
    """Put back what fields_state returned. Containers are refilled in place, so that
    closures and other models holding them see the new contents."""
    for name, plain in d.items():
        value = from_plain(plain)
        old = getattr(obj, name, None)
        if isinstance(old, (list, bytearray)) and isinstance(value, (list, bytes)) \
                and type(value) is not tuple:
            old[:] = value
        elif isinstance(old, (dict, set)) and type(old) is type(value):
            old.clear()
            old.update(value)
        elif isinstance(old, deque) and isinstance(value, deque):
            old.clear()
            old.extend(value)
        else:
            setattr(obj, name, value)
