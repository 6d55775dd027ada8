"""Differential fuzz of the two verifiers: for body signatures with variable gaps the matcher
uses Hyperscan; on small inputs Python's `re` (the reference semantics) must agree."""

from __future__ import annotations

import re
import time

from vmshield.engines.file.database import Database
from vmshield.engines.file.matcher import _hs_count
from vmshield.engines.file.signatures.clamav import Offset
from vmshield.engines.file.signatures.hexsig import HexSigError, compile_hex

_GAPS = ["*", "{0-3}", "{2-}", "{-2}", "??", "[1-2]"]


def TestOneInput(data: bytes) -> None:
    if len(data) < 6:
        return
    # Pattern from the first bytes: fixed pairs joined by gaps; sample = the rest (small).
    n = 2 + data[0] % 3
    parts = [data[1 + 2 * i : 3 + 2 * i].hex() for i in range(n)]
    gaps = [_GAPS[data[1 + i] % len(_GAPS)] for i in range(n - 1)]
    sig = parts[0] + "".join(g + p for g, p in zip(gaps, parts[1:], strict=False))
    sample = data[1 + 2 * n :][:300]
    try:
        hx = compile_hex(sig)
    except HexSigError:
        return
    rx = re.compile(hx.regex, re.DOTALL)
    db = Database.from_texts({"x.ndb": f"X:0:*:{sig}\n"})
    hsdb, som = db.matcher._hs_verifier(hx.regex)
    if hsdb is None or not som:
        return
    filler = sample[:3]
    planted = sample[3:9] + b"".join(bytes.fromhex(p) + filler for p in parts) * 2
    for smp in (sample, planted):
        _compare(rx, hsdb, smp)


def _compare(rx: re.Pattern[bytes], hsdb: object, sample: bytes) -> None:
    size = len(sample)
    for lo, hi, limit in ((0, size, 1), (0, size, 3), (2, 5, 1)):
        expected = 0
        pos = lo
        while expected < limit and pos <= size:
            m = rx.search(sample, pos)
            if m is None or m.start() > hi:
                break
            expected += 1
            pos = m.start() + 1
        # A generous deadline: the comparison, not the time bound, is under test here.
        got = _hs_count(hsdb, sample, lo, hi, size, limit, time.monotonic() + 60)
        assert got == expected, (rx.pattern, sample, lo, hi, limit, got, expected)
    assert Offset("any").window(size) == (0, size)
