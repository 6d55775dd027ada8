"""The `url` event: a request to a listed URL or host (see docs/events.md, "URL verdicts")."""

from __future__ import annotations

from typing import Any

from vmshield.engines.net.urls.db import THREAT_CATEGORIES, UrlVerdict
from vmshield.events import SEVERITY_HIGH, SEVERITY_LOW, SEVERITY_MEDIUM, Event, format_timestamp

# Phishing and malware delivery are high; adware and the like are medium; a site listed only in
# content categories (gambling, adult...) is low: a policy matter, not a threat.
_HIGH = {"malicious", "phishing", "malware"}
_THREATS = frozenset(THREAT_CATEGORIES)


def url_event(
    verdict: UrlVerdict,
    *,
    ts: float,
    source: str,
    action: str = "blocked",
    src_ip: str = "",
    src_port: int = 0,
    dest_ip: str = "",
    dest_port: int = 0,
    proto: str = "TCP",
    app_proto: str = "",
    flow_id: int | None = None,
    hostname: str | None = None,
) -> Event:
    """`source` is where the name came from: "http", "tls.sni" or "dns"; action "blocked"/"allowed"."""
    data: dict[str, Any] = {
        "src_ip": src_ip,
        "src_port": src_port,
        "dest_ip": dest_ip,
        "dest_port": dest_port,
        "proto": proto,
        "url": {
            "url": verdict.target,
            "source": source,
            "expression": verdict.expression,
            "categories": list(verdict.categories),
            "action": action,
        },
    }
    if hostname:
        data["url"]["hostname"] = hostname
    if app_proto:
        data["app_proto"] = app_proto
    if flow_id is not None:
        data["flow_id"] = flow_id
    if _HIGH.intersection(verdict.categories):
        severity = SEVERITY_HIGH
    elif _THREATS.intersection(verdict.categories):
        severity = SEVERITY_MEDIUM
    else:
        severity = SEVERITY_LOW
    return Event(event_type="url", timestamp=format_timestamp(ts), severity=severity, data=data)
