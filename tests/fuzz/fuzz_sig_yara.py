"""Fuzz the YARA loader and our YARA prefilter. The invariant that matters: whenever the
prefilter says a rule set can be gated, YARA never matches a buffer in which Hyperscan would
find none of the anchors (the prefilter may only skip work, never a detection)."""

from __future__ import annotations

from vmshield.engines.file.database import Database

PREFIX = b'rule r { strings: $a = "'


def TestOneInput(data: bytes) -> None:
    split = data.find(b"\n\n")
    src, sample = (data, b"") if split < 0 else (data[:split], data[split + 2 :])
    for text in (src, PREFIX + src):
        db = Database.from_texts({"f.yar": text})
        if db.yara_saved is None:
            continue
        hits = [h for h in db.matcher.match(sample)[1] if h.engine == "yara"]
        if hits and not db.yara_always:
            low = sample.lower()
            assert any(a.lower() in low for a in db.yara_anchors), (text, sample)
