"""Fuzz the urlhaus URL feed parser and the build: bad lines are rejected, never raised."""

from __future__ import annotations

import os
import sys
import tempfile

try:  # coverage feedback when atheris is there; plain import otherwise
    import atheris

    with atheris.instrument_imports(include=["vmshield"]):
        from vmshield.engines.net.urls.feeds import FeedError, build_database
except ImportError:
    from vmshield.engines.net.urls.feeds import FeedError, build_database

_DIR = tempfile.mkdtemp(prefix="vmshield-fuzz-url-")
_FEED = os.path.join(_DIR, "feed")
_DB = os.path.join(_DIR, "out.db")


def TestOneInput(data: bytes) -> None:
    with open(_FEED, "wb") as f:
        f.write(data)
    try:
        report = build_database([("urlhaus", _FEED)], _DB)
    except FeedError:
        return  # the file as a whole is unusable (e.g. invalid JSON): a clear error
    for r in report.rejected:
        assert r.file == _FEED and r.reason


def main() -> None:
    import atheris

    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
