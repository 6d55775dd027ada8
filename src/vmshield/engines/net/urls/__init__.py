"""Malicious and phishing URLs: Safe Browsing canonicalization, the database, the feeds.

For the packet pipeline: `UrlDatabase(path)` then `check_http(host, uri)`, `check_url(url)` or
`check_host(name)` (DNS query names, TLS SNI), each `UrlVerdict | None`; `url_event()` makes
the `url` event.
"""

from vmshield.engines.net.urls.canon import (
    UrlError,
    canonicalize,
    host_expressions,
    url_expressions,
)
from vmshield.engines.net.urls.db import (
    CATEGORIES,
    CONTENT_CATEGORIES,
    THREAT_CATEGORIES,
    DatabaseBuilder,
    UrlDatabase,
    UrlDatabaseError,
    UrlVerdict,
)
from vmshield.engines.net.urls.events import url_event
from vmshield.engines.net.urls.feeds import FeedError, Rejected, build_database

__all__ = [
    "CATEGORIES",
    "CONTENT_CATEGORIES",
    "THREAT_CATEGORIES",
    "DatabaseBuilder",
    "FeedError",
    "Rejected",
    "UrlDatabase",
    "UrlDatabaseError",
    "UrlError",
    "UrlVerdict",
    "build_database",
    "canonicalize",
    "host_expressions",
    "url_event",
    "url_expressions",
]
