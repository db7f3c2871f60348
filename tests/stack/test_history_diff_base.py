"""The copy of RAM that the history compares each new checkpoint with (History._ram_of,
anonymous memory where only pages that are not all zero are written), and the pages the
comparison reports (History._changed_pages): against plain byte strings built from the
checkpoints' page lists, for any pages and any order of bases."""

from __future__ import annotations

from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from vmsim.history import PAGE, ZERO_PAGE, Checkpoint, History

PAGES = 600  # more than one 1 MiB chunk of the comparison, and a partial one
_page = st.one_of(st.just(ZERO_PAGE), st.binary(min_size=1, max_size=8).map(
    lambda b: (b * PAGE)[:PAGE]), st.integers(0, PAGE - 1).map(
    lambda i: bytes(i) + b"\x01" + bytes(PAGE - i - 1)))


def _checkpoint(pages: list[bytes]) -> Checkpoint:
    return Checkpoint(0, 0, None, tuple(pages), {})


@st.composite
def _histories(draw) -> list[list[bytes]]:
    """Page lists of a few checkpoints, each a few pages away from the one before."""
    pages = [ZERO_PAGE] * PAGES
    for i in draw(st.lists(st.integers(0, PAGES - 1), max_size=20)):
        pages[i] = draw(_page)
    out = [pages]
    for _ in range(draw(st.integers(1, 4))):
        pages = list(pages)
        for i in draw(st.lists(st.integers(0, PAGES - 1), max_size=10)):
            pages[i] = draw(_page)
        out.append(pages)
    return out


@settings(max_examples=40, deadline=None)
@given(_histories(), st.data())
def test_the_copy_is_the_checkpoints_ram_and_the_diff_finds_every_changed_page(
        history: list[list[bytes]], data) -> None:
    cks = [_checkpoint(p) for p in history]
    h = History.__new__(History)  # (only the diff's own two fields)
    h._prev = h._prev_ck = None
    # Bases in any order: the newest as recording goes, an older one after a replay.
    for _ in range(4):
        base = data.draw(st.sampled_from(cks))
        copy = h._ram_of(base)
        assert bytes(copy) == b"".join(base.pages)
        ram = bytearray(b"".join(data.draw(st.sampled_from(history))))
        machine = SimpleNamespace(ram=ram)
        expected = [i for i in range(PAGES)
                    if ram[i * PAGE:(i + 1) * PAGE] != base.pages[i]]
        assert h._changed_pages(machine, base) == expected
