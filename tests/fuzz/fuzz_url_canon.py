"""Fuzz Safe Browsing canonicalization and expressions: any bytes give a result or UrlError."""

from __future__ import annotations

from tests.fuzz._harness import main
from vmshield.engines.net.urls.canon import UrlError, canonicalize, split_url, url_expressions


def TestOneInput(data: bytes) -> None:
    try:
        canon = canonicalize(data)
    except UrlError:
        return
    # Canonical output is printable ASCII. It is a fixed point unless it holds an escaped "%"
    # (the specification's repeated unescaping makes "%25aa" canonicalize again to "%AA").
    assert canon.isascii() and all(0x20 < ord(c) < 0x7F for c in canon), canon
    again = canonicalize(canon)
    assert "%25" in canon or again == canon, (data, canon)
    exprs = url_expressions(data)
    assert 1 <= len(exprs) <= 30
    text = data.decode("utf-8", "replace")
    try:
        split_url(text)  # the str fast path must not crash either
    except UrlError:
        pass


if __name__ == "__main__":
    main(TestOneInput)
