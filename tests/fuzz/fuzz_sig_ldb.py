"""Fuzz .ldb lines: parse or SigError, then evaluate against a sample without crashing."""

from __future__ import annotations

from vmshield.engines.file.database import Database


def TestOneInput(data: bytes) -> None:
    split = data.find(b"\n")
    line, sample = (data, b"xx") if split < 0 else (data[:split], data[split + 1 :])
    db = Database.from_texts({"f.ldb": line})
    nlines = len([ln for ln in line.decode("latin-1").splitlines() if ln.strip()])
    assert db.stats["ldb"] + len(db.rejected) + db.stats["skipped_flevel"] <= nlines
    for r in db.rejected:
        assert r.file == "f.ldb" and r.line >= 1 and r.reason
    db.matcher.match(sample[:4096])
