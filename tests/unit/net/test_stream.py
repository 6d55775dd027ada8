"""TCP reassembly: in order, out of order, retransmission, overlap first-wins, depth, bounds."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from vmshield.engines.net.packet import ACK, PSH, SYN
from vmshield.engines.net.stream import (
    EV_MEMCAP,
    EV_OVERLAP_DIFF,
    EV_RETRANS,
    StreamDir,
    StreamMemory,
)

PA = PSH | ACK


def _dir(depth: int = 1 << 20, cap: int = 1 << 24) -> StreamDir:
    s = StreamDir(depth, StreamMemory(cap))
    s.add(999, SYN, b"", [])  # ISN 999: data starts at 1000
    return s


def test_in_order() -> None:
    s = _dir()
    ev: list[str] = []
    assert s.add(1000, PA, b"hello ", ev) == b"hello "
    assert s.add(1006, PA, b"world", ev) == b"world"
    assert ev == []


def test_out_of_order_is_delivered_when_the_gap_fills() -> None:
    s = _dir()
    ev: list[str] = []
    assert s.add(1005, PA, b"56789", ev) == b""
    assert s.add(1010, PA, b"abc", ev) == b""
    assert s.add(1000, PA, b"01234", ev) == b"0123456789abc"
    assert s.pending_bytes == 0


def test_retransmission_is_counted_not_redelivered() -> None:
    s = _dir()
    ev: list[str] = []
    s.add(1000, PA, b"abcdef", ev)
    assert s.add(1000, PA, b"abcdef", ev) == b""
    assert EV_RETRANS in ev and s.retransmissions == 1


def test_overlap_first_wins_and_different_data_is_reported() -> None:
    s = _dir()
    ev: list[str] = []
    s.add(1004, PA, b"EFGH", ev)  # out of order, held
    out = s.add(1000, PA, b"abcdXXXXij", ev)  # overlaps held bytes with different data
    assert out == b"abcdEFGHij"
    assert EV_OVERLAP_DIFF in ev
    # Overlap with already delivered data: the delivered bytes win.
    ev2: list[str] = []
    assert s.add(1008, PA, b"ZZklm", ev2) == b"klm"


def test_depth_limit() -> None:
    s = _dir(depth=10)
    ev: list[str] = []
    assert s.add(1000, PA, b"0123456", ev) == b"0123456"
    assert s.add(1007, PA, b"789abcdef", ev) == b"789"
    assert s.done
    assert s.add(1016, PA, b"more", ev) == b""


def test_sequence_wraparound() -> None:
    s = StreamDir(1 << 20, StreamMemory(1 << 20))
    s.add(0xFFFFFFFD, SYN, b"", [])
    ev: list[str] = []
    assert s.add(0xFFFFFFFE, PA, b"ab", ev) == b"ab"
    assert s.add(0, PA, b"cd", ev) == b"cd"


def test_midstream_pickup() -> None:
    s = StreamDir(1 << 20, StreamMemory(1 << 20))
    ev: list[str] = []
    assert s.add(5000, PA, b"data", ev) == b"data"
    assert s.add(5004, PA, b"more", ev) == b"more"


def test_memcap_bounds_out_of_order_data() -> None:
    mem = StreamMemory(100)
    s = StreamDir(1 << 20, mem)
    s.add(0, SYN, b"", [])
    ev: list[str] = []
    for i in range(10):
        s.add(1000 + i * 100, PA, b"x" * 50, ev)  # all beyond a gap at 1
    assert mem.used <= 100
    assert EV_MEMCAP in ev


@settings(max_examples=150, deadline=None)
@given(st.binary(min_size=1, max_size=400), st.integers(min_value=1, max_value=60), st.randoms())
def test_any_order_with_duplicates_reassembles_exactly(
    data: bytes, size: int, rnd: random.Random
) -> None:
    segs = [(1000 + o, data[o : o + size]) for o in range(0, len(data), size)]
    segs += rnd.sample(segs, k=min(3, len(segs)))  # retransmissions
    rnd.shuffle(segs)
    s = _dir()
    out = b"".join(s.add(seq, PA, d, []) for seq, d in segs)
    assert out == data
