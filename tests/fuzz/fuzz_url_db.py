"""Fuzz the URL database loader with mutated files: load fails with UrlDatabaseError or works,
and lookups on what loads never raise. Some inputs get their checksum recomputed, so that a
mutated index, host keys or filters reach the lookups (a crafted file, not a damaged one)."""

from __future__ import annotations

import hashlib
import os
import tempfile

from tests.fuzz._harness import main
from vmshield.engines.net.urls.db import HEADER_SIZE, DatabaseBuilder, UrlDatabase, UrlDatabaseError

_DIR = tempfile.mkdtemp(prefix="vmshield-fuzz-urldb-")
_PATH = os.path.join(_DIR, "u.db")
_b = DatabaseBuilder()
for _i in range(50):
    _b.add_expression(f"h{_i}.example/", 1)
    _b.add_expression(f"www.p{_i}.co.example/dir/", 2)
_b.add_expression("ok.h1.example/", 0x80)
_b.write(_PATH)
with open(_PATH, "rb") as _f:
    _GOOD = _f.read()
_DIGEST_AT = HEADER_SIZE - 36  # the header ends with the body's SHA-256 and 4 pad bytes


def seeds() -> list[bytes]:
    # The valid file whole, and slices of it put back in place with and without a new checksum.
    return [_GOOD] + [
        bytes([mode]) + (at).to_bytes(2, "big") + _GOOD[at : at + 300]
        for mode in (1, 3)
        for at in (0, 90, 4200)
    ]


def TestOneInput(data: bytes) -> None:
    # Overwrite a slice of a valid database with the input, or use the input as a whole file.
    if len(data) > 2 and data[0] & 1:
        at = int.from_bytes(data[1:3], "big") % len(_GOOD)
        blob = _GOOD[:at] + data[3:] + _GOOD[at + len(data) - 3 :]
    else:
        blob = data
    if len(data) > 2 and data[0] & 2 and len(blob) >= HEADER_SIZE:
        digest = hashlib.sha256(blob[HEADER_SIZE:]).digest()
        blob = blob[:_DIGEST_AT] + digest + blob[_DIGEST_AT + 32 :]
    with open(_PATH, "wb") as f:
        f.write(blob)
    try:
        db = UrlDatabase(_PATH)
    except UrlDatabaseError:
        return
    with db:
        db.check_url("http://h1.example/x")
        db.check_url("http://ok.h1.example/x")
        db.check_url("http://www.p3.co.example/dir/a.html")
        db.check_url("http://new.co.example/")
        db.check_url(b"http://10.0.0.1/")
        db.check_host("h2.example")
        db.check_host("x.www.p4.co.example")
        db.check_http(b"www.p5.co.example", b"/dir/")
        db.lookup_expression("h3.example/")


if __name__ == "__main__":
    main(TestOneInput, seeds)
