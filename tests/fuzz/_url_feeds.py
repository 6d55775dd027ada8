"""The check every URL feed fuzz target makes: the feed is parsed and built into a database;
bad lines are rejected with a reason, never raised."""

from __future__ import annotations

import os
import tempfile

from vmshield.engines.net.urls.feeds import FeedError, build_database

_DIR = tempfile.mkdtemp(prefix="vmshield-fuzz-url-")
_FEED = os.path.join(_DIR, "feed")
_DB = os.path.join(_DIR, "out.db")


def check_feed(kind: str, data: bytes) -> None:
    with open(_FEED, "wb") as f:
        f.write(data)
    try:
        report = build_database([(kind, _FEED)], _DB)
    except FeedError:
        return  # the file as a whole is unusable (e.g. invalid JSON): a clear error
    for r in report.rejected:
        assert r.file == _FEED and r.reason
