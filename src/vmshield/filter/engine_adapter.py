"""Adapter from the network engine's per-packet result to the filter's `Decision`.

The engine (`vmshield.engines.net.engine.Engine`) does all detection: Suricata rules, the URL
database, network attacks (`vmshield.engines.net.attacks.AttackDetector`). The filter only maps
its verdict to kernel actions.
"""

from __future__ import annotations

import importlib
from dataclasses import fields
from typing import Any

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
        # The rule load's counts (loaded, rejected, left out by policy, made report-only).
        rules = getattr(self.engine, "rules", None)
        self.rule_stats: Any = getattr(rules, "stats", None)
        # Monitoring: the engine hands BYPASS only in IPS mode, but the mirror's kernel filter
        # (filter/bpf.py) needs the same "done with this flow" to stop copying it. The flow
        # logic is the standard mode's (same events in both modes).
        if settings.extra.get("report_bypass") and not self.engine.ips:
            self.engine.report_bypass()

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
    # A policy's URL categories replace the configuration's; its trusted URLs add to them.
    if settings.url_block is not None:
        cfg.url_block = list(settings.url_block)
    if settings.url_allow is not None:
        cfg.url_allow = list(settings.url_allow)
    if settings.url_trusted:
        cfg.url_trusted = [*cfg.url_trusted, *settings.url_trusted]
    # A policy's IDS action: whether drop/reject rules also block the source (their
    # BLOCK_SOURCE verdicts take the attacks' path in `_to_decision`).
    if settings.ids_block_minutes is not None:
        cfg.ids_block_minutes = settings.ids_block_minutes
    cfg.validate()  # after the overrides: names a bad mode, category, URL or minutes
    kwargs: dict[str, Any] = {}
    if settings.rules:
        from vmshield.engines.net.rules import RuleSet

        rs = RuleSet.load(paths=list(settings.rules), selection=settings.rule_selection)
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
    """The network attack detectors, with the filter's block duration and "do not block" list."""
    from vmshield.engines.net.attacks import AttackConfig, AttackDetector, DetectorConfig

    cfg = AttackConfig.from_dict(settings.extra.get("attacks", {}))
    if "attacks" not in settings.extra or not any(
        isinstance(v, dict) and "block_minutes" in v for v in settings.extra["attacks"].values()
    ):
        minutes = max(1, min(32768, settings.block_seconds // 60))
        for f in fields(cfg):
            det = getattr(cfg, f.name)
            if isinstance(det, DetectorConfig):
                det.block_minutes = minutes
    cfg.never_block = tuple(cfg.never_block) + tuple(settings.extra.get("never_block", ()))
    cfg.validate()
    return AttackDetector(cfg)


_ACCEPT = I.Decision(I.ACCEPT, [])


def _to_decision(res: Any, settings: I.InspectorSettings) -> I.Decision:
    v = res.verdict
    act = int(v.action)
    if act == 0 and not res.events:
        return _ACCEPT  # the common case: no allocation (the worker never mutates a Decision)
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
