"""Helpers for the rule-engine tests: packets and contexts built directly (no decoder)."""

from __future__ import annotations

import ipaddress
from typing import Any

from vmshield.engines.net.packet import Packet
from vmshield.engines.net.rules import Alert, FlowDetectState, InspectContext, RuleSet


def pkt(
    payload: bytes = b"",
    src: str = "10.0.0.1",
    dst: str = "192.0.2.10",
    sport: int = 40000,
    dport: int = 80,
    proto: int = 6,
    ts: float = 1000.0,
    **kw: Any,
) -> Packet:
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    return Packet(
        ts=ts,
        raw=b"",
        ip_version=s.version,
        src=src,
        dst=dst,
        src_bytes=s.packed,
        dst_bytes=d.packed,
        proto=proto,
        sport=sport,
        dport=dport,
        payload=payload,
        ttl=kw.pop("ttl", 64),
        **kw,
    )


def ctx(p: Packet, **kw: Any) -> InspectContext:
    kw.setdefault("direction", "to_server")
    kw.setdefault("established", True)
    return InspectContext(packet=p, **kw)


def sids(alerts: list[Alert]) -> list[int]:
    return sorted(a.sid for a in alerts)


def rules(text: str, **kw: Any) -> RuleSet:
    rs = RuleSet.from_text(text, **kw)
    assert not rs.rejected, [str(e) for e in rs.rejected]
    return rs


def run(
    rs: RuleSet, payload: bytes = b"", state: FlowDetectState | None = None, **kw: Any
) -> list[int]:
    ckw = {k: kw.pop(k) for k in list(kw) if k in InspectContext.__dataclass_fields__}
    return sids(rs.match(ctx(pkt(payload, **kw), flow_state=state, **ckw)))


def one(
    rule_opts: str, payload: bytes, header: str = "alert tcp any any -> any any", **kw: Any
) -> bool:
    """Does a single rule `header (rule_opts sid:1;)` match this payload?"""
    rs = rules(f"{header} ({rule_opts} sid:1;)")
    return run(rs, payload, **kw) == [1]
