"""The one event model of vmshield.

Every component (file engine through the SVM, network engine, filter, agent, introspection) reports
what happened as an `Event`. On the wire and on disk an event is an EVE-compatible JSON object:
Suricata's field names at the top level (`timestamp`, `flow_id`, `event_type`, `src_ip`, `alert`…)
so existing EVE consumers read it, plus vmshield's own `event_type`s (see docs/events.md).
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

import msgspec

# Made for every event, so compiled with the network engine (vmshield/native.py).
from vmshield.event_stamps import format_timestamp, new_event_id

# Suricata's convention: 1 is the most severe.
SEVERITY_HIGH = 1
SEVERITY_MEDIUM = 2
SEVERITY_LOW = 3
SEVERITY_INFO = 4

# Fields that belong to the envelope; everything else of an EVE object lives in `data`.
_ENVELOPE = ("id", "timestamp", "event_type", "host", "vm", "severity")

__all__ = [
    "SEVERITY_HIGH",
    "SEVERITY_INFO",
    "SEVERITY_LOW",
    "SEVERITY_MEDIUM",
    "Event",
    "eve_line",
    "format_timestamp",
    "new_event_id",
    "now_timestamp",
]


def now_timestamp() -> str:
    """Suricata's timestamp form: ISO 8601, microseconds, numeric UTC offset."""
    return format_timestamp(_dt.datetime.now(_dt.UTC).timestamp())


class Event(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One thing that happened, with an id that makes delivery idempotent."""

    event_type: str
    timestamp: str = msgspec.field(default_factory=now_timestamp)
    id: str = msgspec.field(default_factory=new_event_id)
    host: str | None = None  # hypervisor host (the SVM's host name)
    vm: str | None = None  # VM identity (BIOS/instance UUID or lab name) when known
    severity: int = SEVERITY_LOW
    data: dict[str, Any] = msgspec.field(default_factory=dict)

    def to_eve(self) -> dict[str, Any]:
        """Flatten into one EVE JSON object (envelope fields win over data)."""
        out: dict[str, Any] = dict(self.data)
        out.update(
            {
                "timestamp": self.timestamp,
                "event_type": self.event_type,
                "event_id": self.id,
                "severity": self.severity,
            }
        )
        if self.host is not None:
            out["host"] = self.host
        if self.vm is not None:
            out["vm"] = self.vm
        return out

    @classmethod
    def from_eve(cls, obj: dict[str, Any]) -> Event:
        data = {k: v for k, v in obj.items() if k not in _ENVELOPE and k != "event_id"}
        kwargs: dict[str, Any] = {"event_type": str(obj["event_type"]), "data": data}
        if "timestamp" in obj:
            kwargs["timestamp"] = str(obj["timestamp"])
        if "event_id" in obj or "id" in obj:
            kwargs["id"] = str(obj.get("event_id") or obj["id"])
        for key in ("host", "vm"):
            if obj.get(key) is not None:
                kwargs[key] = str(obj[key])
        if "severity" in obj:
            kwargs["severity"] = int(obj["severity"])
        return cls(**kwargs)


_encoder = msgspec.json.Encoder()


def eve_line(event: Event) -> bytes:
    """One EVE JSON line, newline-terminated."""
    return _encoder.encode(event.to_eve()) + b"\n"
