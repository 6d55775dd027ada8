"""Fuzz Safe Browsing canonicalization and expressions: any bytes give a result or UrlError.

Also the database's shortcuts: for any URL or host name, the crc32 filter and memo paths of
`UrlDatabase` must answer exactly as hashing every expression of Google's algorithm does.
"""

from __future__ import annotations

import os
import tempfile

from tests.fuzz._harness import main
from vmshield.engines.net.urls.canon import (
    UrlError,
    _canonical_host,
    canonicalize,
    host_suffixes,
    split_url,
    to_latin1,
    url_expressions,
)
from vmshield.engines.net.urls.db import TRUSTED, DatabaseBuilder, UrlDatabase

_DIR = tempfile.mkdtemp(prefix="vmshield-fuzz-urlcanon-")
_b = DatabaseBuilder()
for _expr, _bits in [
    ("a.b/", 0x01),
    ("x.a.b/p/", 0x02),
    ("t.a.b/", TRUSTED),
    ("co.uk/", 0x04),
    ("k_9.co.uk/q.html?x=1", 0x08),
    ("1.2.3.4/", 0x01),
    ("e.d.c.b.a.z/", 0x10),
    ("h/", 0x20),
]:
    _b.add_expression(_expr, _bits)
_b.write(os.path.join(_DIR, "u.db"))
_DB = UrlDatabase(os.path.join(_DIR, "u.db"))


def _reference(expressions: list[str]) -> object:
    found = None
    for e in expressions:
        bits = _DB.lookup_expression(e)
        if bits & TRUSTED:
            return (e, True)
        if bits and found is None:
            found = (e, False)
    return found


def _outcome(fn: object, arg: object) -> object:
    try:
        v = fn(arg)  # type: ignore[operator]
    except UrlError:
        return "error"
    return None if v is None else (v.expression, v.trusted)


def TestOneInput(data: bytes) -> None:
    try:
        canon = canonicalize(data)
    except UrlError:
        canon = None
    if canon is not None:
        # Canonical output is printable ASCII. It is a fixed point unless it holds an escaped
        # "%" (the specification's repeated unescaping makes "%25aa" canonicalize again to "%AA").
        assert canon.isascii() and all(0x20 < ord(c) < 0x7F for c in canon), canon
        again = canonicalize(canon)
        assert "%25" in canon or again == canon, (data, canon)
        exprs = url_expressions(data)
        assert 1 <= len(exprs) <= 30
    # The str fast paths must give what the bytes (full algorithm) path gives.
    text = data.decode("utf-8", "replace")
    try:
        fast = split_url(text)
    except UrlError:
        fast = None
    try:
        full = split_url(text.encode("utf-8"))
    except UrlError:
        full = None
    assert fast == full, (text, fast, full)
    # The database: filters and memos against every expression hashed.
    try:
        expected = _reference(url_expressions(text.encode("utf-8")))
    except UrlError:
        expected = "error"
    assert _outcome(_DB.verdict_url, text) == expected, text
    canon_host = _canonical_host(to_latin1(text).strip().rstrip("."))
    expected_host = (
        _reference([h + "/" for h in host_suffixes(canon_host)]) if canon_host else "error"
    )
    assert _outcome(_DB.verdict_host, text) == expected_host, text


def seeds() -> list[bytes]:
    return [
        s.encode()
        for s in [
            "http://x.a.b/p/q",
            "http://www.t.a.b/",
            "https://K_9.co.uk:8080/q.html?x=1",
            "http://y.co.uk/",
            "http://1.2.3.4/",
            "http://0x01020304/",
            "http://f.e.d.c.b.a.z/",
            "h",
            "a.b.",
            "http://a%2eb/",
        ]
    ]


if __name__ == "__main__":
    main(TestOneInput, seeds)
