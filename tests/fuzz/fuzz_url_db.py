"""Fuzz the URL database loader with mutated files: load fails with UrlDatabaseError or works."""

from __future__ import annotations

import os
import tempfile

from tests.fuzz._harness import main
from vmshield.engines.net.urls.db import DatabaseBuilder, UrlDatabase, UrlDatabaseError

_DIR = tempfile.mkdtemp(prefix="vmshield-fuzz-urldb-")
_PATH = os.path.join(_DIR, "u.db")
_b = DatabaseBuilder()
for _i in range(50):
    _b.add_expression(f"h{_i}.example/", 1)
_b.write(_PATH)
with open(_PATH, "rb") as _f:
    _GOOD = _f.read()


def TestOneInput(data: bytes) -> None:
    # Overwrite a slice of a valid database with the input, or use the input as a whole file.
    if len(data) > 2 and data[0] & 1:
        at = int.from_bytes(data[1:3], "big") % len(_GOOD)
        blob = _GOOD[:at] + data[3:] + _GOOD[at + len(data) - 3 :]
    else:
        blob = data
    with open(_PATH, "wb") as f:
        f.write(blob)
    try:
        db = UrlDatabase(_PATH)
    except UrlDatabaseError:
        return
    with db:
        db.check_url("http://h1.example/x")
        db.check_host("h2.example")


if __name__ == "__main__":
    main(TestOneInput)
