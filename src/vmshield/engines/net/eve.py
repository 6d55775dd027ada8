"""EVE event construction for the network engine (Suricata's field names).

Pure helpers: they build `vmshield.events.Event`s; writing lines is the caller's business
(`vmshield.events.eve_line`).
"""

from __future__ import annotations

from typing import Any, Final

from vmshield.engines.net.flow import PROTO_NAMES, Flow
from vmshield.engines.net.packet import Packet
from vmshield.event_stamps import format_timestamp
from vmshield.events import SEVERITY_INFO, SEVERITY_LOW, Event


def proto_name(proto: int) -> str:
    return PROTO_NAMES.get(proto, str(proto))


def packet_base(p: Packet, f: Flow | None, community: bool) -> dict[str, Any]:
    """Common fields, addresses in the packet's direction (Suricata does so for alerts)."""
    d: dict[str, Any] = {}
    if f is not None:
        d["flow_id"] = f.flow_id
    if p.iface:
        d["in_iface"] = p.iface
    if p.vlan:
        d["vlan"] = [p.vlan]
    if p.src:
        d["src_ip"] = p.src
        d["dest_ip"] = p.dst
    if p.proto:
        if p.sport or p.dport:
            d["src_port"] = p.sport
            d["dest_port"] = p.dport
        d["proto"] = proto_name(p.proto)
    if p.icmp_type >= 0:
        d["icmp_type"] = p.icmp_type
        d["icmp_code"] = p.icmp_code
    if f is not None:
        if f.app_proto and f.app_proto not in ("unknown",):
            d["app_proto"] = f.app_proto
        if community and f.proto:
            d["community_id"] = f.community_id
    return d


def flow_base(f: Flow, community: bool) -> dict[str, Any]:
    """Common fields in the flow's direction (initiator is the source): http/dns/tls/flow."""
    d: dict[str, Any] = {"flow_id": f.flow_id}
    if f.iface:
        d["in_iface"] = f.iface
    if f.vlan:
        d["vlan"] = [f.vlan]
    d["src_ip"] = f.src
    if f.sport or f.dport:
        d["src_port"] = f.sport
    d["dest_ip"] = f.dst
    if f.sport or f.dport:
        d["dest_port"] = f.dport
    d["proto"] = proto_name(f.proto)
    if f.app_proto and f.app_proto != "unknown":
        d["app_proto"] = f.app_proto
    if community:
        d["community_id"] = f.community_id
    return d


def app_event(
    kind: str,
    ts: float,
    f: Flow,
    obj: dict[str, Any],
    community: bool,
    *,
    reverse: bool = False,
    tx_id: int | None = None,
) -> Event:
    d = flow_base(f, community)
    if reverse:
        # DNS answers: Suricata reports them in the answer's direction.
        d["src_ip"], d["dest_ip"] = d["dest_ip"], d["src_ip"]
        if "src_port" in d:
            d["src_port"], d["dest_port"] = d["dest_port"], d["src_port"]
    if tx_id is not None:
        d["tx_id"] = tx_id
    d[kind] = obj
    return Event(event_type=kind, timestamp=format_timestamp(ts), severity=SEVERITY_INFO, data=d)


def add_flow_ends(obj: dict[str, Any], f: Flow) -> None:
    """The flow's addresses and ports, initiator first (Suricata 7's alert `flow` object)."""
    obj["src_ip"] = f.src
    obj["dest_ip"] = f.dst
    if f.sport or f.dport:
        obj["src_port"] = f.sport
        obj["dest_port"] = f.dport


def flow_event(f: Flow, community: bool) -> Event:
    d = flow_base(f, community)
    if (f.proto == 1 or f.proto == 58) and f.icmp_type >= 0:
        # The initiator's ICMP type and code, as Suricata's flow events carry them.
        d["icmp_type"] = f.icmp_type
        d["icmp_code"] = max(f.icmp_code, 0)
    d["flow"] = f.eve_flow()
    if f.proto == 6:
        flags = (f.tcp_flags_ts | f.tcp_flags_tc) & 0xFF
        tcp: dict[str, Any] = {
            "tcp_flags": _HEX2[flags],
            "tcp_flags_ts": _HEX2[f.tcp_flags_ts & 0xFF],
            "tcp_flags_tc": _HEX2[f.tcp_flags_tc & 0xFF],
        }
        tcp.update(_TCP_FLAG_BOOLS[flags])
        tcp["state"] = _TCP_STATE[f.tcp_state]
        d["tcp"] = tcp
    return Event(
        event_type="flow", timestamp=format_timestamp(f.last), severity=SEVERITY_INFO, data=d
    )


_TCP_STATE: Final = ("none", "syn_sent", "syn_recv", "established", "closing", "closed")
# Two hex digits of a byte (TCP flags): a format spec per field costs more than the whole event.
_HEX2: Final = tuple(f"{i:02x}" for i in range(256))
# One `true` per flag seen in either direction, named and ordered as Suricata's, made once per
# flags byte (a loop over the names per flow record cost ~1 600 instructions compiled).
_TCP_FLAG_NAMES: Final = ("fin", "syn", "rst", "psh", "ack", "urg", "ecn", "cwr")
_TCP_FLAG_BOOLS: Final = tuple(
    {name: True for bit, name in enumerate(_TCP_FLAG_NAMES) if flags >> bit & 1}
    for flags in range(256)
)


def anomaly_event(p: Packet, f: Flow | None, name: str, community: bool) -> Event:
    """Suricata's `anomaly` event: type decode (packet) or stream / applayer."""
    d = packet_base(p, f, community)
    kind = name.split(".", 1)[0]
    atype = {"decoder": "decode", "stream": "stream", "defrag": "decode"}.get(kind, "applayer")
    an: dict[str, Any] = {"type": atype, "event": name}
    if atype == "decode":
        an["layer"] = name.split(".")[1] if name.count(".") >= 2 else kind
    else:
        an["layer"] = "proto_parser" if atype == "applayer" else "stream"
        if atype == "applayer":
            an["app_proto"] = kind
    d["anomaly"] = an
    return Event(
        event_type="anomaly", timestamp=format_timestamp(p.ts), severity=SEVERITY_LOW, data=d
    )
