"""Engine configuration: defaults like Suricata's, overridable from a TOML file.

Every key is checked: an unknown key or a value of the wrong type is a `ConfigError` that names
the key, so a typo in a deployed configuration never silently falls back to a default.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from vmshield.engines.net.attacks import MAX_BLOCK_MINUTES
from vmshield.engines.net.urls.db import CATEGORIES, THREAT_CATEGORIES
from vmshield.engines.net.urls.trusted import TrustedUrls

# Suricata's default HOME_NET: the private ranges.
DEFAULT_HOME_NET = ("192.168.0.0/16", "10.0.0.0/8", "172.16.0.0/12")


class ConfigError(ValueError):
    pass


@dataclass
class EngineConfig:
    # "ips": inline (drop/reject/block act on the verdict); "ids": monitoring, never blocks.
    mode: str = "ips"
    home_net: list[str] = field(default_factory=lambda: list(DEFAULT_HOME_NET))
    # Extra address/port variables for the rules (e.g. {"HTTP_SERVERS": "[10.0.0.5]"}).
    address_vars: dict[str, str] = field(default_factory=dict)
    port_vars: dict[str, str] = field(default_factory=dict)
    # stream
    stream_depth: int = 1024 * 1024  # stream.reassembly.depth
    stream_memcap: int = 256 * 1024 * 1024  # bytes held out of order, all flows
    stream_max_segments: int = 1024  # out-of-order segments per direction
    # flow
    flow_max: int = 65536
    flow_timeouts: dict[str, list[float]] = field(
        default_factory=dict
    )  # proto -> [new, est, closed]
    flow_housekeeping_interval: float = 1.0  # seconds of packet time between expiry passes
    # defrag
    defrag_timeout: float = 60.0
    defrag_memcap: int = 32 * 1024 * 1024
    defrag_max_trackers: int = 65535
    defrag_max_frags: int = 256
    # app layer
    http_request_body_limit: int = 100 * 1024
    http_response_body_limit: int = 100 * 1024
    http_max_header: int = 64 * 1024
    http_max_tx: int = 32  # unanswered requests per connection (pipelining depth)
    tls_max_handshake: int = 64 * 1024
    tls_encryption_handling: str = "bypass"  # "bypass" | "track-only" | "full"
    # verdicts
    bypass: bool = True  # hand BYPASS for flows that need no more inspection
    # A fault inside the engine (a bug, never bad input): "pass" the packet or "drop" it.
    exception_policy: str = "pass"
    # A drop/reject rule (IPS mode) also blocks the packet's source for this many minutes, as
    # an attack does (the policy's IDS action "terminate and block"); 0: rules act as written.
    ids_block_minutes: int = 0
    url_action: str = "block-page"  # "alert" | "drop" | "block-page" for a malicious HTTP URL
    url_tls_action: str = "reset"  # "alert" | "drop" | "reset" for a malicious SNI
    url_dns_action: str = "alert"  # "alert" | "drop" for a malicious DNS query name
    # URL categories (urls.CATEGORIES): a hit in a blocked one gets the action above; a hit only
    # in allowed ones passes without an event (counted: url_allowed); any other hit alerts.
    url_block: list[str] = field(default_factory=lambda: list(THREAT_CATEGORIES))
    url_allow: list[str] = field(default_factory=list)
    # Trusted URLs and hosts (urls/trusted.py): a hit on one passes without an event.
    url_trusted: list[str] = field(default_factory=list)
    _trusted: TrustedUrls | None = field(default=None, init=False, repr=False, compare=False)
    # outputs
    out_alert: bool = True
    out_http: bool = True
    out_dns: bool = True
    out_tls: bool = True
    out_ssh: bool = True
    out_flow: bool = False
    out_anomaly: bool = True
    out_attack: bool = True
    out_url: bool = True
    community_id: bool = True
    max_events_per_packet: int = 64  # bound on what one packet can emit
    # [attacks] table, handed as is to the attack detector's own configuration
    # (`vmshield.engines.net.attacks.AttackConfig.from_dict`, which checks it).
    attacks: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def url_policy(
        self, categories: tuple[str, ...], target: str = "", is_host: bool = False
    ) -> str:
        """What a URL database hit gets: "allow" (trusted `target`, or allowed categories only:
        passes unreported), "block" (a blocked category: the configured action) or "alert"."""
        if self._trusted is not None and self._trusted.trusts(target, is_host):
            return "allow"
        if any(c in self.url_block for c in categories):
            return "block"
        if categories and all(c in self.url_allow for c in categories):
            return "allow"
        return "alert"

    def validate(self) -> None:
        if self.mode not in ("ips", "ids"):
            raise ConfigError(f"mode: expected 'ips' or 'ids', got {self.mode!r}")
        for cidr in self.home_net:
            try:
                ipaddress.ip_network(cidr.lstrip("!"), strict=False)
            except ValueError as exc:
                raise ConfigError(f"home-net: {cidr!r} is not a network ({exc})") from None
        for name in (
            "stream_depth",
            "stream_memcap",
            "stream_max_segments",
            "flow_max",
            "defrag_memcap",
            "defrag_max_trackers",
            "defrag_max_frags",
            "http_request_body_limit",
            "http_response_body_limit",
            "http_max_header",
            "http_max_tx",
            "tls_max_handshake",
            "max_events_per_packet",
        ):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ConfigError(f"{_key(name)}: expected a non-negative integer, got {v!r}")
        if self.tls_encryption_handling not in ("bypass", "track-only", "full"):
            raise ConfigError(
                "app.tls.encryption-handling: expected bypass, track-only or full, "
                f"got {self.tls_encryption_handling!r}"
            )
        if self.exception_policy not in ("pass", "drop"):
            raise ConfigError(
                f"exception-policy: expected 'pass' or 'drop', got {self.exception_policy!r}"
            )
        v = self.ids_block_minutes
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= MAX_BLOCK_MINUTES:
            raise ConfigError(
                f"ids.block-minutes: expected minutes 0..{MAX_BLOCK_MINUTES} (0: off), got {v!r}"
            )
        if self.url_action not in ("alert", "drop", "block-page"):
            raise ConfigError(f"url.http-action: bad value {self.url_action!r}")
        if self.url_tls_action not in ("alert", "drop", "reset"):
            raise ConfigError(f"url.tls-action: bad value {self.url_tls_action!r}")
        if self.url_dns_action not in ("alert", "drop"):
            raise ConfigError(f"url.dns-action: bad value {self.url_dns_action!r}")
        for attr in ("url_block", "url_allow"):
            bad = [c for c in getattr(self, attr) if c not in CATEGORIES]
            if bad:
                raise ConfigError(
                    f"{_key(attr)}: unknown URL categories {bad}; known: {', '.join(CATEGORIES)}"
                )
        both = set(self.url_block) & set(self.url_allow)
        if both:
            raise ConfigError(f"URL categories both blocked and allowed: {sorted(both)}")
        try:
            self._trusted = TrustedUrls(self.url_trusted) if self.url_trusted else None
        except ValueError as exc:
            raise ConfigError(f"url.trusted: {exc}") from None
        for proto, vals in self.flow_timeouts.items():
            if proto not in ("tcp", "udp", "icmp", "default"):
                raise ConfigError(f"flow.timeouts: unknown protocol {proto!r}")
            if len(vals) != 3 or not all(isinstance(x, int | float) and x >= 0 for x in vals):
                raise ConfigError(f"flow.timeouts.{proto}: expected [new, established, closed]")

    @classmethod
    def from_toml(cls, path: str | Path) -> EngineConfig:
        try:
            with open(path, "rb") as f:
                doc = tomllib.load(f)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML ({exc})") from None
        return cls.from_dict(doc, source=str(path))

    @classmethod
    def from_dict(cls, doc: dict[str, Any], source: str = "config") -> EngineConfig:
        kw: dict[str, Any] = {}
        names = {f.name: f for f in fields(cls)}
        for key, value in _flatten(doc):
            attr = _TOML_KEYS.get(key)
            if attr is None:
                raise ConfigError(f"{source}: unknown key {key!r}")
            if attr == "flow_timeouts":
                proto = key.rsplit(".", 1)[1]
                if not isinstance(value, dict):
                    raise ConfigError(f"{source}: {key}: expected a table")
                unknown = set(value) - {"new", "established", "closed"}
                if unknown:
                    raise ConfigError(f"{source}: {key}: unknown keys {sorted(unknown)}")
                base = {"tcp": (60, 600, 60), "udp": (30, 300, 0), "icmp": (30, 300, 0)}.get(
                    proto, (30, 300, 0)
                )
                kw.setdefault("flow_timeouts", {})[proto] = [
                    value.get("new", base[0]),
                    value.get("established", base[1]),
                    value.get("closed", base[2]),
                ]
                continue
            expected = names[attr].type
            if "bool" in str(expected) and not isinstance(value, bool):
                raise ConfigError(f"{source}: {key}: expected true or false, got {value!r}")
            if str(expected) == "int" and (not isinstance(value, int) or isinstance(value, bool)):
                raise ConfigError(f"{source}: {key}: expected an integer, got {value!r}")
            if str(expected) == "float" and not isinstance(value, int | float):
                raise ConfigError(f"{source}: {key}: expected a number, got {value!r}")
            if str(expected) == "str" and not isinstance(value, str):
                raise ConfigError(f"{source}: {key}: expected a string, got {value!r}")
            if attr == "home_net":
                if isinstance(value, str):
                    value = [v.strip() for v in value.strip("[]").split(",") if v.strip()]
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ConfigError(f"{source}: {key}: expected a list of CIDRs")
            if attr in ("url_block", "url_allow", "url_trusted") and not (
                isinstance(value, list) and all(isinstance(v, str) for v in value)
            ):
                raise ConfigError(f"{source}: {key}: expected a list of strings")
            if attr == "attacks":
                if not isinstance(value, dict):
                    raise ConfigError(f"{source}: attacks: expected a table")
                kw[attr] = value
                continue
            if attr in ("address_vars", "port_vars") and not (
                isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
            ):
                raise ConfigError(f"{source}: {key}: expected a table of strings")
            kw[attr] = float(value) if str(expected) == "float" else value
        try:
            return cls(**kw)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None


def _key(attr: str) -> str:
    for k, v in _TOML_KEYS.items():
        if v == attr:
            return k
    return attr


_TOML_KEYS = {
    "mode": "mode",
    "home-net": "home_net",
    "vars.address-groups": "address_vars",
    "vars.port-groups": "port_vars",
    "stream.reassembly.depth": "stream_depth",
    "stream.memcap": "stream_memcap",
    "stream.max-segments": "stream_max_segments",
    "flow.max-flows": "flow_max",
    "flow.timeouts.tcp": "flow_timeouts",
    "flow.timeouts.udp": "flow_timeouts",
    "flow.timeouts.icmp": "flow_timeouts",
    "flow.timeouts.default": "flow_timeouts",
    "flow.housekeeping-interval": "flow_housekeeping_interval",
    "defrag.timeout": "defrag_timeout",
    "defrag.memcap": "defrag_memcap",
    "defrag.max-trackers": "defrag_max_trackers",
    "defrag.max-frags": "defrag_max_frags",
    "app.http.request-body-limit": "http_request_body_limit",
    "app.http.response-body-limit": "http_response_body_limit",
    "app.http.max-header": "http_max_header",
    "app.http.max-tx": "http_max_tx",
    "app.tls.max-handshake": "tls_max_handshake",
    "app.tls.encryption-handling": "tls_encryption_handling",
    "bypass": "bypass",
    "exception-policy": "exception_policy",
    "ids.block-minutes": "ids_block_minutes",
    "url.http-action": "url_action",
    "url.tls-action": "url_tls_action",
    "url.dns-action": "url_dns_action",
    "url.block-categories": "url_block",
    "url.allow-categories": "url_allow",
    "url.trusted": "url_trusted",
    "outputs.alert": "out_alert",
    "outputs.http": "out_http",
    "outputs.dns": "out_dns",
    "outputs.tls": "out_tls",
    "outputs.ssh": "out_ssh",
    "outputs.flow": "out_flow",
    "outputs.anomaly": "out_anomaly",
    "outputs.attack": "out_attack",
    "outputs.url": "out_url",
    "outputs.community-id": "community_id",
    "outputs.max-events-per-packet": "max_events_per_packet",
    "attacks": "attacks",
}
# Tables whose whole value is one setting (not descended into).
_LEAF_TABLES = {
    "flow.timeouts.tcp",
    "flow.timeouts.udp",
    "flow.timeouts.icmp",
    "flow.timeouts.default",
    "vars.address-groups",
    "vars.port-groups",
    "attacks",
}


def _flatten(doc: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in doc.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key not in _LEAF_TABLES:
            out.extend(_flatten(v, key + "."))
        else:
            out.append((key, v))
    return out
