"""Protection profiles (files) and network policies: their settings, presets and validation.

A file profile names a security level; `high`, `recommended` and `low` are presets whose settings
cannot be changed, `custom` starts from `recommended` and overrides what it sets. The effective
settings record, for each setting, whether it came from the preset or from the profile.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from vmshield.engines.net.urls.db import CONTENT_CATEGORIES, THREAT_CATEGORIES
from vmshield.engines.net.urls.trusted import TrustedUrls


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileExclusions(_Strict):
    paths: list[str] = Field(default_factory=list, max_length=1000)  # globs
    regexes: list[str] = Field(default_factory=list, max_length=200)
    extensions: list[str] = Field(default_factory=list, max_length=500)
    processes: list[str] = Field(default_factory=list, max_length=500)

    @field_validator("regexes")
    @classmethod
    def _regexes_compile(cls, v: list[str]) -> list[str]:
        for i, r in enumerate(v):
            try:
                re.compile(r)
            except re.error as exc:
                raise ValueError(f"regexes[{i}] {r!r}: {exc}") from None
        return v

    @field_validator("extensions")
    @classmethod
    def _ext_norm(cls, v: list[str]) -> list[str]:
        return [e.lower().lstrip(".") for e in v]


DETECT = ("viruses", "worms", "trojans", "malware", "adware", "riskware", "pua", "packed")
ACTIONS = ("disinfect", "delete", "quarantine", "block", "report")
FALLBACKS = ("delete", "quarantine", "block", "report")


class FileSettings(_Strict):
    """Every setting optional: a custom profile sets what it changes."""

    scan_archives: bool | None = None
    scan_sfx: bool | None = None
    scan_embedded: bool | None = None
    max_compound_mb: int | None = Field(default=None, ge=0, le=65536)  # 0 = no limit
    scan_time_limit_s: int | None = Field(default=None, ge=0, le=3600)  # 0 = no limit
    detect: list[str] | None = None
    scope: Literal["all", "executables", "by_extension"] | None = None
    on_open: bool | None = None
    on_execute: bool | None = None
    on_close_write: bool | None = None
    action: Literal["disinfect", "delete", "quarantine", "block", "report"] | None = None
    fallback: Literal["delete", "quarantine", "block", "report"] | None = None
    backup_before_action: bool | None = None
    exclusions: FileExclusions | None = None

    @field_validator("detect")
    @classmethod
    def _detect_known(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        bad = [d for d in v if d not in DETECT]
        if bad:
            raise ValueError(f"unknown detection classes {bad}; known: {', '.join(DETECT)}")
        return v


PRESETS: dict[str, dict[str, Any]] = {
    "recommended": {
        "scan_archives": False,
        "scan_sfx": True,
        "scan_embedded": True,
        "max_compound_mb": 8,
        "scan_time_limit_s": 0,
        "detect": ["viruses", "worms", "trojans", "malware", "adware", "riskware"],
        "scope": "all",
        "on_open": True,
        "on_execute": True,
        "on_close_write": True,
        "action": "disinfect",
        "fallback": "quarantine",
        "backup_before_action": True,
        "exclusions": {"paths": [], "regexes": [], "extensions": [], "processes": []},
    },
}
PRESETS["high"] = {
    **PRESETS["recommended"],
    "scan_archives": True,
    "max_compound_mb": 0,
    "detect": list(DETECT),
    "fallback": "delete",
}
PRESETS["low"] = {
    **PRESETS["recommended"],
    "scan_sfx": False,
    "scan_embedded": False,
    "max_compound_mb": 1,
    "scan_time_limit_s": 30,
    "scope": "executables",
    "on_open": False,
    "detect": ["viruses", "worms", "trojans"],
}
LEVELS = ("high", "recommended", "low", "custom")


class FileProfileSpec(_Strict):
    level: Literal["high", "recommended", "low", "custom"] = "recommended"
    settings: FileSettings = Field(default_factory=FileSettings)

    def check(self) -> None:
        set_fields = self.settings.model_dump(exclude_none=True)
        if self.level != "custom" and set_fields:
            raise ValueError(
                f"level {self.level!r} is a preset; its settings cannot be changed "
                f"(use level 'custom' to set {', '.join(sorted(set_fields))})"
            )

    def effective(self) -> dict[str, dict[str, Any]]:
        """{setting: {"value": v, "from": "preset:<level>" | "profile"}}."""
        base = PRESETS["recommended" if self.level == "custom" else self.level]
        own = self.settings.model_dump(exclude_none=True)
        preset_name = "recommended" if self.level == "custom" else self.level
        out: dict[str, dict[str, Any]] = {}
        for k, v in base.items():
            if k in own:
                out[k] = {"value": own[k], "from": "profile"}
            else:
                out[k] = {"value": v, "from": f"preset:{preset_name}"}
        return out


IDS_CATEGORIES = (
    "exploit",
    "malware",
    "scan",
    "dos",
    "web-attack",
    "policy",
    "trojan",
    "botnet",
    "phishing",
)
# Suricata classtypes (rules/classification.config) -> the IDS categories above. A policy that
# leaves a category out leaves out the rules of its classtypes (`ids_classtypes`); classtypes
# not listed are in no category, so their rules (and rules without classtype) always load.
CLASSTYPE_CATEGORY = {
    **dict.fromkeys(
        (
            "attempted-user", "unsuccessful-user", "successful-user", "attempted-admin",
            "successful-admin", "shellcode-detect", "rpc-portmap-decode", "system-call-detect",
            "exploit-kit", "default-login-attempt", "suspicious-login",
        ),
        "exploit",
    ),
    **dict.fromkeys(("pup-activity", "coin-mining", "suspicious-filename-detect"), "malware"),
    **dict.fromkeys(
        ("attempted-recon", "successful-recon-limited", "successful-recon-largescale",
         "network-scan"),
        "scan",
    ),
    **dict.fromkeys(("attempted-dos", "successful-dos", "denial-of-service"), "dos"),
    **dict.fromkeys(("web-application-attack", "web-application-activity"), "web-attack"),
    **dict.fromkeys(
        ("policy-violation", "inappropriate-content", "external-ip-check",
         "non-standard-protocol", "unusual-client-port-connection"),
        "policy",
    ),
    "trojan-activity": "trojan",
    **dict.fromkeys(("command-and-control", "domain-c2"), "botnet"),
    **dict.fromkeys(("social-engineering", "credential-theft"), "phishing"),
}  # fmt: skip


def ids_classtypes(categories: set[str] | frozenset[str]) -> frozenset[str]:
    """The classtypes of the IDS `categories`."""
    return frozenset(ct for ct, cat in CLASSTYPE_CATEGORY.items() if cat in categories)


# The URL database's categories (one vocabulary, defined by the URL package): threat categories,
# then content categories (built from category lists such as UT1's).
URL_CATEGORIES = (*THREAT_CATEGORIES, *CONTENT_CATEGORIES)


def _known(v: list[str], known: tuple[str, ...], what: str) -> list[str]:
    bad = [c for c in v if c not in known]
    if bad:
        raise ValueError(f"unknown {what} categories {bad}; known: {', '.join(known)}")
    return v


class NetExclusion(_Strict):
    address: str | None = None  # an address or a subnet (CIDR)
    vlan: int | None = Field(default=None, ge=0, le=4095)
    mode: Literal["do_not_scan", "do_not_block"] = "do_not_scan"

    @field_validator("address")
    @classmethod
    def _addr(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            return str(ipaddress.ip_network(v, strict=False))
        except ValueError:
            raise ValueError(f"address {v!r} is not an IP address or subnet") from None

    def model_post_init(self, _ctx: Any) -> None:
        if self.address is None and self.vlan is None:
            raise ValueError("a network exclusion needs an address/subnet or a VLAN")


class NetworkPolicySpec(_Strict):
    attack_detection: bool = True
    attack_action: Literal["ignore", "terminate", "terminate_and_block"] = "terminate_and_block"
    block_minutes: int = Field(default=60, ge=1, le=10080)
    ids_enabled: bool = True
    ids_categories: list[str] = Field(default_factory=lambda: list(IDS_CATEGORIES))
    ids_action: Literal["report", "terminate", "terminate_and_block"] = "terminate"
    url_filtering: bool = True
    # URL categories: blocked (the SVM's URL action), allowed (passed, not reported); the others
    # are reported. The default blocks every threat category.
    url_block: list[str] = Field(default_factory=lambda: list(THREAT_CATEGORIES))
    url_allow: list[str] = Field(default_factory=list)
    trusted_urls: list[str] = Field(default_factory=list, max_length=5000)
    exclusions: list[NetExclusion] = Field(default_factory=list, max_length=5000)
    failure_mode: Literal["fail_open", "fail_closed"] = "fail_open"

    @field_validator("ids_categories")
    @classmethod
    def _ids(cls, v: list[str]) -> list[str]:
        return _known(v, IDS_CATEGORIES, "IDS")

    @field_validator("url_block", "url_allow")
    @classmethod
    def _urls(cls, v: list[str]) -> list[str]:
        return _known(v, URL_CATEGORIES, "URL")

    @field_validator("trusted_urls")
    @classmethod
    def _trusted(cls, v: list[str]) -> list[str]:
        TrustedUrls(v)  # as the SVM reads them: ValueError names the entry
        return v

    def check(self) -> None:
        both = set(self.url_block) & set(self.url_allow)
        if both:
            raise ValueError(f"URL categories both blocked and allowed: {sorted(both)}")

    def effective(self) -> dict[str, dict[str, Any]]:
        return {k: {"value": v, "from": "policy"} for k, v in self.model_dump().items()}


def parse_settings(kind: str, settings: dict[str, Any]) -> FileProfileSpec | NetworkPolicySpec:
    """Validate stored or submitted settings; ValueError (pydantic's) names the bad field."""
    spec: FileProfileSpec | NetworkPolicySpec
    if kind == "file":
        spec = FileProfileSpec.model_validate(settings)
    elif kind == "network":
        spec = NetworkPolicySpec.model_validate(settings)
    else:
        raise ValueError(f"kind: {kind!r} is not 'file' or 'network'")
    spec.check()
    return spec
