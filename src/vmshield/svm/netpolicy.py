"""The center's network policy, applied to the SVM's network protection while it runs.

The network service inspects the traffic of every VM on the host's bridge with one engine, so it
follows one policy: the effective network policy of the host's protected VMs (when they differ,
the one most of them have; the event names the VMs left with another). A VM the center excludes
from network protection, or protects with no policy, is not inspected: its addresses become
`no_scan` exclusions. With neither (no VM of the host known to the center), the service keeps its
local configuration (`--network-config`).

What the policy sets, and how:
- attack detection on/off, attack action (ignore, terminate, terminate and block: the most any
  detector may do; detectors that only ever report keep doing so) and block minutes: the attack
  detectors' settings; thresholds stay local;
- IDS on/off: the local rule files are loaded or not; IDS categories and IDS action `report`:
  a `RuleSelection` the engine applies as it loads the local rule files (never copied or
  rewritten): rules whose classtype belongs to a category the policy leaves out are not loaded
  (`center.profiles.CLASSTYPE_CATEGORY`; rules of other classtypes, or none, and rules that
  cannot alert stay), and with `report` drop/reject rules load as alert rules. The event gives
  the counts of the load (`ids`: `rules_left_out`, `rules_report_only`). IDS action
  `terminate_and_block`: a packet a drop/reject rule stops also blocks its source for the
  policy's block minutes (the engine's `ids.block-minutes`, enforced as attack blocks are, "do
  not block" exclusions honoured); `terminate`: rules act as written, nothing blocked;
- URL filtering on/off: the local URL database is used or not; URL categories blocked and
  allowed (`url_block`, `url_allow`: the engine's `url_block`/`url_allow`; the others are
  reported) and trusted URLs (never blocked nor reported: the engine's `url_trusted`);
- exclusions (address or subnet, or VLAN; do not scan / do not block): the filter's exclusions,
  before the local ones.
Settings the running service cannot take (failure mode, URL categories this SVM does not know,
trusted URLs it cannot read) are named in the event's `not_applied`, never silently dropped.

`plan_from_center` and `protection_config` are pure; `NetworkPolicyFollower` applies them to a
running `NetworkProtection` on each new configuration (`reload`: no restart) and reports every
application (`svm` event `network_policy`) or failure (`network_policy_failed`).
"""

from __future__ import annotations

import copy
import ipaddress
import logging
import threading
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from vmshield.events import SEVERITY_INFO, SEVERITY_MEDIUM, Event

if TYPE_CHECKING:
    from collections.abc import Callable

    from vmshield.filter.exclusions import Exclusion
    from vmshield.filter.service import NetworkProtection, ProtectionConfig

log = logging.getLogger("vmshield.svm.netpolicy")

_ACTION_RANK = {"ignore": 0, "terminate": 1, "block": 2}
_POLICY_CAP = {"ignore": 0, "terminate": 1, "terminate_and_block": 2}
_RANK_ACTION = {v: k for k, v in _ACTION_RANK.items()}


@dataclass(frozen=True)
class NetworkPlan:
    """What the center says about this host's network protection."""

    version: int = 0
    policy: dict[str, Any] | None = None  # {"id", "name", "revision"}: None = none to apply
    settings: dict[str, Any] = field(default_factory=dict)
    protected: tuple[str, ...] = ()  # VMs that have the applied policy
    not_inspected: dict[str, tuple[str, ...]] = field(default_factory=dict)  # VM -> addresses
    other_policy: dict[str, str] = field(default_factory=dict)  # VM -> its (not applied) policy
    vm_names: dict[str, str] = field(default_factory=dict)  # address -> VM, for events

    @property
    def empty(self) -> bool:
        return self.policy is None and not self.not_inspected

    def same_as(self, other: NetworkPlan | None) -> bool:
        """Same effect on the service (the configuration version aside)."""
        return other is not None and {**self.__dict__, "version": 0} == {
            **other.__dict__,
            "version": 0,
        }


def plan_from_center(cfg: dict[str, Any]) -> NetworkPlan:
    by_policy: dict[tuple[Any, ...], list[str]] = {}
    settings_of: dict[tuple[Any, ...], tuple[dict[str, Any], dict[str, Any]]] = {}
    not_inspected: dict[str, tuple[str, ...]] = {}
    vm_names: dict[str, str] = {}
    for vm in cfg.get("vms") or []:
        name = str(vm.get("name") or vm.get("key") or "?")
        addrs = tuple(str(a) for a in vm.get("ip_addresses") or [])
        for a in addrs:
            vm_names[a] = name
        net = vm.get("network") or {}
        status = net.get("status")
        if status in ("excluded", "unprotected"):
            not_inspected[name] = addrs
        elif status == "protected" and net.get("profile"):
            prof = net["profile"]
            settings = dict(net.get("settings") or {})
            key = (prof.get("id"), prof.get("revision"))
            by_policy.setdefault(key, []).append(name)
            settings_of[key] = (
                {"id": prof.get("id"), "name": prof.get("name"), "revision": prof.get("revision")},
                settings,
            )
        else:
            log.warning("center configuration: VM %r has network status %r", name, status)
    if not by_policy:
        return NetworkPlan(int(cfg.get("version", 0)), None, {}, (), not_inspected, {}, vm_names)
    # The policy most VMs have; ties: the lowest policy id, so every SVM picks the same.
    counts = Counter({k: len(v) for k, v in by_policy.items()})
    chosen = min(counts, key=lambda k: (-counts[k], str(k[0]), str(k[1])))
    policy, settings = settings_of[chosen]
    other = {
        vm: f"{settings_of[k][0]['name']} (revision {k[1]})"
        for k, vms in by_policy.items()
        if k != chosen
        for vm in vms
    }
    return NetworkPlan(
        int(cfg.get("version", 0)),
        policy,
        settings,
        tuple(sorted(by_policy[chosen])),
        not_inspected,
        other,
        vm_names,
    )


def _exclusion(item: dict[str, Any], where: str) -> tuple[Exclusion | None, str]:
    from vmshield.filter.exclusions import Exclusion

    action = "no_block" if item.get("mode") == "do_not_block" else "no_scan"
    address, vlan = item.get("address"), item.get("vlan")
    if address:
        net = ipaddress.ip_network(str(address), strict=False)
        note = f"{where}: VLAN {vlan} ignored (address and VLAN together)" if vlan else ""
        return Exclusion(action, network=net), note
    if vlan is not None and 0 < int(vlan) < 4095:
        return Exclusion(action, vlan=int(vlan)), ""
    return None, f"{where}: neither an address nor a VLAN 1-4094"


def protection_config(
    base: ProtectionConfig, plan: NetworkPlan
) -> tuple[ProtectionConfig, list[str], dict[str, Any]]:
    """The service configuration for `plan`, from the local one; what was not applied; and
    notes for the event."""
    from vmshield.center.profiles import IDS_CATEGORIES, ids_classtypes
    from vmshield.engines.net.attacks import AttackConfig, DetectorConfig
    from vmshield.engines.net.rules.select import RuleSelection
    from vmshield.engines.net.urls.db import CATEGORIES as URL_CATEGORIES
    from vmshield.engines.net.urls.trusted import TrustedUrls
    from vmshield.filter.exclusions import Exclusion

    new = copy.deepcopy(base)
    not_applied: list[str] = []
    notes: dict[str, Any] = {}
    exclusions: list[Exclusion] = []
    for vm, addrs in sorted(plan.not_inspected.items()):
        if not addrs:
            not_applied.append(f"{vm}: not inspected, but the center knows no address of it")
        for a in addrs:
            try:
                exclusions.append(Exclusion("no_scan", network=ipaddress.ip_network(a)))
            except ValueError:
                not_applied.append(f"{vm}: address {a!r} is not an IP address")
    s = plan.settings
    if plan.policy is not None:
        for i, item in enumerate(s.get("exclusions") or []):
            try:
                ex, note = _exclusion(item, f"exclusions[{i}]")
            except (ValueError, TypeError) as exc:
                ex, note = None, f"exclusions[{i}]: {exc}"
            if ex is not None:
                exclusions.append(ex)
            if note:
                not_applied.append(note)
        minutes = int(s.get("block_minutes", 60))
        local = dict(base.inspector.extra.get("attacks") or {})
        defaults = AttackConfig()
        cap = _POLICY_CAP.get(str(s.get("attack_action", "terminate_and_block")), 2)
        on = bool(s.get("attack_detection", True))
        attacks: dict[str, Any] = dict(local)
        for f in fields(AttackConfig):
            det = getattr(defaults, f.name)
            if not isinstance(det, DetectorConfig):
                continue
            mine = dict(local.get(f.name) or {})
            own_action = str(mine.get("action", det.action))
            mine["enabled"] = on and bool(mine.get("enabled", det.enabled))
            mine["action"] = _RANK_ACTION[min(_ACTION_RANK.get(own_action, 2), cap)]
            mine["block_minutes"] = minutes
            attacks[f.name] = mine
        new.inspector.extra["attacks"] = attacks
        new.block_seconds = minutes * 60
        cats = s.get("ids_categories")
        left_out = set(IDS_CATEGORIES) - set(cats) if cats is not None else set()
        ids_action = s.get("ids_action", "terminate")
        report_only = ids_action == "report"
        # terminate_and_block: a drop/reject rule blocks the packet's source for the policy's
        # minutes, as an attack does; otherwise rules act as written (or report).
        new.inspector.ids_block_minutes = minutes if ids_action == "terminate_and_block" else 0
        if not s.get("ids_enabled", True):
            new.inspector.rules = []
        elif (left_out or report_only) and base.inspector.rules:
            new.inspector.rule_selection = RuleSelection(ids_classtypes(left_out), report_only)
            # the rule counts are the load's: NetworkPolicyFollower adds them
            notes["ids"] = {"categories_left_out": sorted(left_out), "report_only": report_only}
        if not s.get("url_filtering", True):
            new.inspector.url_db = []
        else:
            for key in ("url_block", "url_allow"):
                names = s.get(key)
                if names is None:
                    continue
                unknown = [c for c in names if c not in URL_CATEGORIES]
                if unknown:
                    not_applied.append(f"{key} {unknown}: not URL categories of this SVM")
                setattr(new.inspector, key, [c for c in names if c in URL_CATEGORIES])
            trusted = []
            for i, entry in enumerate(s.get("trusted_urls") or []):
                try:
                    TrustedUrls([str(entry)])
                except ValueError as exc:
                    not_applied.append(f"trusted_urls[{i}]: {str(exc).split(': ', 1)[-1]}")
                else:
                    trusted.append(str(entry))
            new.inspector.url_trusted = trusted
        fail_closed = s.get("failure_mode", "fail_open") == "fail_closed"
        if fail_closed != base.fail_closed:
            not_applied.append(
                f"failure_mode {s.get('failure_mode')}: the service runs "
                f"{'fail-closed' if base.fail_closed else 'fail-open'} until restarted"
            )
    new.exclusions = exclusions + list(base.exclusions)
    new.vm_names = {**plan.vm_names, **base.vm_names}
    return new, not_applied, notes


class NetworkPolicyFollower:
    """Applies each new center configuration to the running network protection."""

    def __init__(self, emit: Callable[[Event], None], host: str | None = None) -> None:
        self.emit = emit
        self.host = host
        self._lock = threading.Lock()
        self._net: NetworkProtection | None = None
        self._base: ProtectionConfig | None = None
        self._pending: dict[str, Any] | None = None
        self.applied: NetworkPlan | None = None  # the plan in force (None: local configuration)
        self.applied_config: ProtectionConfig | None = None

    def attach(self, net: NetworkProtection) -> None:
        """The service is running: its start configuration is the local one; apply what the
        center said meanwhile."""
        with self._lock:
            self._net, self._base = net, copy.deepcopy(net.cfg)
            if self._pending is not None:
                self._apply(self._pending)

    def on_center_config(self, cfg: dict[str, Any]) -> None:
        with self._lock:
            self._pending = cfg
            if self._net is not None:
                self._apply(cfg)

    def _apply(self, cfg: dict[str, Any]) -> None:
        assert self._net is not None and self._base is not None
        plan = plan_from_center(cfg)
        if plan.same_as(self.applied) or (self.applied is None and plan.empty):
            return
        try:
            new, not_applied, notes = protection_config(self._base, plan)
            gap = self._net.reload(new)
        except Exception as exc:  # the running configuration stays; say why
            log.error("center network policy (version %s) not applied: %s", plan.version, exc)
            self._event(
                "network_policy_failed",
                SEVERITY_MEDIUM,
                config_version=plan.version,
                policy=plan.policy,
                error=str(exc)[:1000],
            )
            return
        self.applied, self.applied_config = plan, new
        stats = getattr(self._net, "rule_stats", None)  # the load that just happened
        if "ids" in notes:
            notes["ids"]["rules_left_out"] = getattr(stats, "left_out", 0)
            notes["ids"]["rules_report_only"] = getattr(stats, "report_only", 0)
        s = plan.settings
        applied: dict[str, Any] = {"exclusions": [e.text() for e in new.exclusions]}
        if plan.policy is not None:
            applied.update(
                {
                    k: s.get(k)
                    for k in (
                        "attack_detection",
                        "attack_action",
                        "block_minutes",
                        "ids_enabled",
                        "ids_action",
                        "url_filtering",
                    )
                }
            )
            if new.inspector.url_db:
                applied["url_block"] = new.inspector.url_block
                applied["url_allow"] = new.inspector.url_allow
                applied["trusted_urls"] = len(new.inspector.url_trusted or [])
        log.info(
            "center network policy applied: configuration version %s, policy %s",
            plan.version,
            plan.policy,
        )
        self._event(
            "network_policy",
            SEVERITY_INFO,
            config_version=plan.version,
            policy=plan.policy,
            vms=list(plan.protected),
            applied=applied,
            not_inspected={vm: list(a) for vm, a in plan.not_inspected.items()},
            other_policy=plan.other_policy,
            not_applied=not_applied,
            reload_seconds=round(gap, 3),
            **notes,
        )

    def _event(self, kind: str, severity: int, **data: Any) -> None:
        try:
            self.emit(
                Event(
                    event_type="svm",
                    host=self.host,
                    severity=severity,
                    data={"svm": {"event": kind, **data}},
                )
            )
        except Exception:
            log.exception("event sink failed")
