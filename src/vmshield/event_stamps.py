"""Event ids and timestamps: every event gets both, and the packet path makes thousands of
events a second, so this module is compiled with the network engine (vmshield/native.py).
`vmshield.events` is where they are used from."""

from __future__ import annotations

import datetime as _dt
import itertools
import os
from typing import Final

# The date of the last timestamp formatted, as (first second of its day, "YYYY-MM-DDT"): events
# come in bursts within a day, strftime costs microseconds, and the time of day is arithmetic
# (POSIX time has no leap seconds: every day is 86 400 of them). One pair, replaced whole:
# threads formatting at once never see a day paired with another day's text.
_last_day: Final[list[tuple[int, str]]] = [(-(2**63), "")]
_TWO_DIGITS: Final = tuple(str(100 + i)[1:] for i in range(60))


def format_timestamp(epoch: float) -> str:
    """`epoch` as Suricata writes it (UTC): exactly datetime.fromtimestamp(epoch, UTC) with
    strftime("%Y-%m-%dT%H:%M:%S.%f+0000"), microseconds rounded half to even as datetime does."""
    sec = int(epoch)  # toward zero, as math.modf splits it (datetime does so)
    # round() half to even, written out: the builtin is a generic call from compiled code.
    # x - trunc(x) is exact in binary floating point, so both remainders are.
    scaled = (epoch - sec) * 1e6
    us = int(scaled)
    rest = scaled - us
    if rest > 0.5 or (rest == 0.5 and us % 2):
        us += 1
    elif rest < -0.5 or (rest == -0.5 and us % 2):
        us -= 1
    if us >= 1_000_000:
        sec += 1
        us -= 1_000_000
    elif us < 0:
        sec -= 1
        us += 1_000_000
    of_day = sec % 86400  # floor modulo: right before 1970 too
    day_start = sec - of_day
    cached_start, date = _last_day[0]
    if cached_start != day_start:
        date = _dt.datetime.fromtimestamp(day_start, _dt.UTC).strftime("%Y-%m-%dT")
        _last_day[0] = (day_start, date)
    hh = _TWO_DIGITS[of_day // 3600]
    mm = _TWO_DIGITS[of_day // 60 % 60]
    ss = _TWO_DIGITS[of_day % 60]
    micro = str(1_000_000 + us)[1:]
    # An f-string of plain strings is built in one allocation; a format spec (str.format) or a
    # chain of + (a new string each) cost more than the rest of this function.
    return f"{date}{hh}:{mm}:{ss}.{micro}+0000"


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
