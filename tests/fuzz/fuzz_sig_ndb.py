"""Fuzz .ndb lines and the hex-signature compiler: parse or SigError; a compiled signature's
anchor must occur (case-insensitively) in every buffer its full pattern matches."""

from __future__ import annotations

import re

from vmshield.engines.file.signatures.clamav import SigError, SkipSig, parse_ndb


def TestOneInput(data: bytes) -> None:
    split = data.find(b"\n")
    line, sample = (data, b"") if split < 0 else (data[:split], data[split + 1 :])
    try:
        sig = parse_ndb(line.decode("latin-1"))
    except (SigError, SkipSig):
        return
    if sig.hex.regex.count(b"*?") + sig.hex.regex.count(b",}?") > 3:
        return  # the reference `re` itself backtracks for ages on chained gaps (the matcher does not)
    rx = re.compile(sig.hex.regex, re.DOTALL)
    m = rx.search(sample)
    if m and sig.hex.anchors:
        low = sample.lower()
        assert any(a.lower() in low for a in sig.hex.anchors), (sig, sample)
