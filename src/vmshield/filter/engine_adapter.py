"""Adapter from the network engine's per-packet result to the filter's `Decision`.

The engine (`vmshield.engines.net.engine.Engine`) does all detection: rules, URLs, attacks.
Until the attack detectors (`vmshield.engines.net.attacks`) land, a thin stand-in
(`_StandInAttacks`: port scan and SYN flood by source) is plugged into the engine's attack
interface; its events say `"detector": "filter-stand-in"`.
"""

from __future__ import annotations

import importlib
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any

from vmshield.events import SEVERITY_HIGH, Event
from vmshield.filter import inspect as I  # noqa: N812


def _engine_class() -> Any:
    try:
        mod = importlib.import_module("vmshield.engines.net.engine")
    except ModuleNotFoundError as exc:
        if exc.name == "vmshield.engines.net.engine":
            return None
        raise
    return getattr(mod, "Engine", None)


class EngineInspector:
    def __init__(self, settings: I.InspectorSettings) -> None:
        self.settings = settings
        cls = _engine_class()
        if cls is None:
            raise RuntimeError("the network engine (vmshield.engines.net.engine) is not installed")
        self.load_errors: list[str] = []
        self.engine: Any = _build_engine(cls, settings, self.load_errors)

    def inspect(
        self, ip_packet: bytes, ts: float, iface: str = "", vlan: int = 0, linktype: int = 228
    ) -> I.Decision:
        if linktype in (228, 229) and ip_packet[:1]:
            linktype = 228 if ip_packet[0] >> 4 == 4 else 229
        res = self.engine.process(ip_packet, ts, linktype=linktype, iface=iface, vlan=vlan)
        return _to_decision(res, self.settings)


def _build_engine(cls: Any, settings: I.InspectorSettings, errors: list[str]) -> Any:
    from vmshield.engines.net.config import EngineConfig

    cfg = (
        EngineConfig.from_toml(settings.engine_config) if settings.engine_config else EngineConfig()
    )
    cfg.mode = settings.mode
    kwargs: dict[str, Any] = {}
    if settings.rules:
        from vmshield.engines.net.rules import RuleSet

        rs = RuleSet.load(paths=list(settings.rules))
        for r in getattr(rs, "rejected", []):
            errors.append(
                f"{getattr(r, 'file', '?')}:{getattr(r, 'line', '?')}: {getattr(r, 'reason', r)}"
            )
        kwargs["rules"] = rs
    if settings.url_db:
        from vmshield.engines.net.urls import UrlDatabase

        kwargs["url_db"] = UrlDatabase(settings.url_db[0])
    kwargs["attacks"] = _attacks(settings)
    return cls(cfg, **kwargs)


def _attacks(settings: I.InspectorSettings) -> Any:
    """The attack detectors of the engine package, or the filter's stand-in until they land."""
    try:
        mod = importlib.import_module("vmshield.engines.net.attacks")
    except ModuleNotFoundError as exc:
        if exc.name != "vmshield.engines.net.attacks":
            raise
        return _StandInAttacks(settings)
    for name in ("AttackDetector", "Attacks", "NetworkAttackBlocker"):
        cls = getattr(mod, name, None)
        if cls is not None:
            try:
                return cls(block_minutes=max(1, settings.block_seconds // 60))
            except TypeError:
                return cls()
    return _StandInAttacks(settings)


def _to_decision(res: Any, settings: I.InspectorSettings) -> I.Decision:
    v = res.verdict
    act = int(v.action)
    events = list(res.events) if res.events else []
    if act == 0:
        return I.Decision(I.ACCEPT, events)
    if act == 1:
        return I.Decision(I.BYPASS, events)
    if act == 2:
        return I.Decision(I.DROP, events, reason=v.reason)
    if act == 3:
        if v.block_page is not None:
            return I.Decision(
                I.BLOCK_PAGE,
                events,
                url=v.block_page.url,
                reason=v.block_page.reason,
                response=v.block_page.http_response(),
            )
        return I.Decision(I.RESET, events, reason=v.reason)
    # BLOCK_SOURCE: drop this packet, the kernel drops the rest for block_minutes.
    seconds = int(v.block_minutes) * 60 if v.block_minutes else settings.block_seconds
    if settings.extra.get("block_seconds_override"):
        seconds = int(settings.extra["block_seconds_override"])
    return I.Decision(
        I.DROP, events, block_src=v.block_address or None, block_seconds=seconds, reason=v.reason
    )


# ------------------------------------------------------------------------ stand-in detectors


class _StandInAttacks:
    """Port scan and SYN flood by source, in the engine's attack-detector interface.

    A stand-in until `vmshield.engines.net.attacks` lands; events say `"detector":
    "filter-stand-in"`.
    """

    SCAN_PORTS = 20  # distinct destination ports per source in SCAN_WINDOW seconds
    SCAN_WINDOW = 10.0
    FLOOD_SYNS = 200  # SYNs to one destination per second
    MAX_SOURCES = 65536

    def __init__(self, settings: I.InspectorSettings) -> None:
        self.minutes = max(1, settings.block_seconds // 60)
        self._ports: dict[str, dict[tuple[str, int], float]] = defaultdict(dict)
        self._syns: dict[str, deque[float]] = defaultdict(deque)
        self._reported: dict[tuple[str, str], float] = {}

    def _once(self, kind: str, src: str, now: float) -> bool:
        last = self._reported.get((kind, src))
        if last is not None and now - last < 5.0:
            return False
        if len(self._reported) > self.MAX_SOURCES:
            self._reported.clear()
        self._reported[(kind, src)] = now
        return True

    def process(self, p: Any) -> list[Any]:
        if p.proto != 6 or p.tcp_flags & 0x12 != 0x02:  # SYN without ACK
            return []
        now = p.ts
        if len(self._ports) > self.MAX_SOURCES:
            self._ports.clear()
            self._syns.clear()
        ports = self._ports[p.src]
        ports[(p.dst, p.dport)] = now
        if len(ports) > 4 * self.SCAN_PORTS:
            for k in [k for k, t in ports.items() if now - t > self.SCAN_WINDOW]:
                del ports[k]
        distinct = sum(1 for t in ports.values() if now - t <= self.SCAN_WINDOW)
        syns = self._syns[p.dst]
        syns.append(now)
        while syns and now - syns[0] > 1.0:
            syns.popleft()
        kind = (
            "portscan"
            if distinct >= self.SCAN_PORTS
            else "synflood"
            if len(syns) >= self.FLOOD_SYNS
            else ""
        )
        if not kind:
            return []
        ev = Event(
            event_type="attack",
            severity=SEVERITY_HIGH,
            data={
                "src_ip": p.src,
                "dest_ip": p.dst,
                "proto": "TCP",
                "attack": {
                    "type": kind,
                    "action": "block",
                    "block_minutes": self.minutes,
                    "detector": "filter-stand-in",
                },
            },
        )
        if not self._once(kind, p.src, now):
            ev.data["attack"]["repeat"] = True
            return [_Finding(None, "block", self.minutes, p.src)]
        return [_Finding(ev, "block", self.minutes, p.src)]


@dataclass
class _Finding:
    event: Event | None
    action: str
    block_minutes: int
    source: str
