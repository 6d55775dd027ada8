"""Fuzz .cvd/.cld containers: the header check and the tar.gz inside never crash the loader."""

from __future__ import annotations

from vmshield.engines.file.database import Database
from vmshield.engines.file.signatures import cvd

HEADER = b"ClamAV-VDB:27 Nov 2026:1:1:200:"


def TestOneInput(data: bytes) -> None:
    for raw in (data, HEADER + data, cvd.build({"a.ndb": data[:512], "b.hdb": data[512:1024]})):
        for name in ("x.cvd", "x.cld"):
            db = Database.from_texts({name: raw})
            for r in db.rejected:
                assert r.file.startswith(name) and r.reason
