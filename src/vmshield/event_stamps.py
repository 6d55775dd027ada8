"""Event ids and timestamps: every event gets both, and the packet path makes thousands of
events a second, so this module is compiled with the network engine (vmshield/native.py).
`vmshield.events` is where they are used from."""

from __future__ import annotations

import datetime as _dt
import itertools
import math
import os
from typing import Final

# The date and time to the second of the last timestamp formatted: events come in bursts within
# the same second (a packet's alert, http and flow events), and strftime costs microseconds.
# One (second, text) pair, replaced whole: threads formatting at once never see a second paired
# with another second's text.
_last_second: Final[list[tuple[int, str]]] = [(-(2**63), "")]


_modf: Final = math.modf  # a module attribute would be looked up on every call


def format_timestamp(epoch: float) -> str:
    """`epoch` as Suricata writes it (UTC): exactly datetime.fromtimestamp(epoch, UTC) with
    strftime("%Y-%m-%dT%H:%M:%S.%f+0000"), microseconds rounded half to even as datetime does."""
    frac, whole = _modf(epoch)
    us = round(frac * 1e6)
    sec = int(whole)
    if us >= 1_000_000:
        sec += 1
        us -= 1_000_000
    elif us < 0:
        sec -= 1
        us += 1_000_000
    cached_sec, day = _last_second[0]
    if cached_sec != sec:
        day = _dt.datetime.fromtimestamp(sec, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _last_second[0] = (sec, day)
    # Concatenation, not a format spec: str.format cost more than the rest of this function.
    return day + "." + str(1_000_000 + us)[1:] + "+0000"


class _EventIds:
    """Event ids: 32 hex digits, a random 64-bit prefix per process and a counter. Unique like a
    random UUID without a system call and a UUID object per event (microseconds each, and an
    engine emits thousands of events a second); a forked child draws its own prefix."""

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count(int.from_bytes(os.urandom(4), "big") << 16)

    def next(self) -> str:
        # 16 hex digits, zero-padded: the digits of 2**64 + n after "0x1".
        return self.prefix + hex((next(self.counter) & 0xFFFFFFFFFFFFFFFF) | (1 << 64))[3:]


_ids: Final = _EventIds()


def new_event_id() -> str:
    return _ids.next()
