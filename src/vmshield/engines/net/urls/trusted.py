"""Trusted URLs given as a list (a policy's), checked after a database hit: a trusted URL or host
is never blocked nor reported, as the database's own trusted entries.

Entries are written as in a plain feed list: a host name ("intranet.example", "*.example.com":
the host and every host below it), or a URL ("https://portal.example/app/": that path and
everything below it, on that host and below). They become Safe Browsing lookup expressions, and
a URL is trusted when one of its expressions is one of them (the same suffix and prefix rules as
the database). A host name (DNS query, TLS SNI) is trusted by host entries only.
"""

from __future__ import annotations

from collections.abc import Sequence

from vmshield.engines.net.urls.canon import UrlError, host_expressions, url_expressions
from vmshield.engines.net.urls.feeds import FeedEntry, expression_for

MAX_TRUSTED = 5000  # as many as the center's policy allows


class TrustedUrls:
    def __init__(self, entries: Sequence[str]) -> None:
        if len(entries) > MAX_TRUSTED:
            raise ValueError(f"{len(entries)} trusted URLs: at most {MAX_TRUSTED}")
        expressions = set()
        for i, text in enumerate(entries):
            t = text.strip()
            try:
                if not t or len(t) > 2048:
                    raise UrlError("empty" if not t else "longer than 2048 characters")
                is_host = "/" not in t and "?" not in t
                expressions.add(expression_for(FeedEntry(t, is_host, "trusted", i + 1)))
            except UrlError as exc:
                raise ValueError(f"trusted URL {i + 1} {text!r:.100}: {exc}") from None
        self.expressions = frozenset(expressions)

    def __len__(self) -> int:
        return len(self.expressions)

    def trusts(self, target: str, is_host: bool) -> bool:
        """`target`: the URL (or, `is_host`, the host name) a database hit was for."""
        try:
            exprs = host_expressions(target) if is_host else url_expressions(target)
        except (UrlError, ValueError):
            return False
        return any(e in self.expressions for e in exprs)
