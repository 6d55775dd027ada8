"""The center's network policy as the SVM's network service configuration (pure part)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vmshield.center.profiles import CLASSTYPE_CATEGORY, IDS_CATEGORIES, NetworkPolicySpec
from vmshield.engines.net.attacks import AttackConfig
from vmshield.engines.net.rules import Classification, RuleSet
from vmshield.events import Event
from vmshield.filter.exclusions import parse_exclusion
from vmshield.filter.inspect import InspectorSettings
from vmshield.filter.service import NetworkProtection, ProtectionConfig
from vmshield.svm.netpolicy import NetworkPolicyFollower, plan_from_center, protection_config


def _vm(name: str, addr: str, status: str, pid: int = 0, **settings: Any) -> dict[str, Any]:
    net: dict[str, Any] = {"status": status}
    if status == "protected":
        net["profile"] = {"id": pid, "name": f"p{pid}", "revision": 1}
        net["settings"] = NetworkPolicySpec(**settings).model_dump()
    return {"name": name, "ip_addresses": [addr], "network": net}


def _base() -> ProtectionConfig:
    return ProtectionConfig(
        name="hs1",
        bridge="hsbr",
        ports=["a", "b"],
        exclusions=[parse_exclusion("no_block 10.9.0.0/16")],
        inspector=InspectorSettings(
            rules=["/etc/local.rules"],
            url_db=["/var/lib/urls.db"],
            extra={"attacks": {"tcp_port_scan": {"threshold": 7}}},
        ),
    )


def test_policy_of_most_vms_applied_and_others_named() -> None:
    cfg = {
        "version": 9,
        "vms": [
            _vm("a", "10.1.0.1", "protected", 1, attack_action="terminate", block_minutes=5),
            _vm("b", "10.1.0.2", "protected", 1, attack_action="terminate", block_minutes=5),
            _vm("c", "10.1.0.3", "protected", 2),
            _vm("d", "10.1.0.4", "excluded"),
            _vm("e", "10.1.0.5", "unprotected"),
        ],
    }
    plan = plan_from_center(cfg)
    assert plan.version == 9 and plan.policy == {"id": 1, "name": "p1", "revision": 1}
    assert plan.protected == ("a", "b") and plan.other_policy == {"c": "p2 (revision 1)"}
    assert plan.not_inspected == {"d": ("10.1.0.4",), "e": ("10.1.0.5",)}
    base = _base()
    new, not_applied, _ = protection_config(base, plan)
    assert not_applied == []
    # VMs the center does not protect are not inspected; the local exclusions come after.
    assert [e.text() for e in new.exclusions] == [
        "no_scan 10.1.0.4/32",
        "no_scan 10.1.0.5/32",
        "no_block 10.9.0.0/16",
    ]
    attacks = AttackConfig.from_dict(new.inspector.extra["attacks"])  # valid for the engine
    assert attacks.tcp_port_scan.threshold == 7  # local threshold kept
    assert attacks.tcp_port_scan.action == "terminate"  # capped by the policy
    assert attacks.syn_flood_distributed.action == "ignore"  # report-only stays report-only
    assert attacks.land.block_minutes == 5 and new.block_seconds == 300
    assert new.inspector.rules == ["/etc/local.rules"] and new.vm_names["10.1.0.3"] == "c"
    # The local configuration is left as it was (the next policy starts again from it).
    assert base.block_seconds == 600 and len(base.exclusions) == 1
    assert "never_block" not in base.inspector.extra


def test_switches_exclusions_and_what_cannot_be_applied() -> None:
    cfg = {
        "version": 3,
        "vms": [
            _vm(
                "a",
                "10.1.0.1",
                "protected",
                4,
                attack_detection=False,
                ids_enabled=False,
                url_filtering=False,
                url_block=["malicious"],
                failure_mode="fail_closed",
                exclusions=[
                    {"address": "10.2.0.0/24", "mode": "do_not_block"},
                    {"vlan": 30},
                ],
            )
        ],
    }
    new, not_applied, _ = protection_config(_base(), plan_from_center(cfg))
    attacks = AttackConfig.from_dict(new.inspector.extra["attacks"])
    assert not attacks.tcp_port_scan.enabled and not attacks.land.enabled
    assert new.inspector.rules == [] and new.inspector.url_db == []
    assert [e.text() for e in new.exclusions][:2] == ["no_block 10.2.0.0/24", "no_scan vlan 30"]
    assert any(x.startswith("failure_mode fail_closed") for x in not_applied)
    assert len(not_applied) == 1  # url_block: moot with URL filtering off


def test_nothing_from_the_center_keeps_the_local_configuration() -> None:
    plan = plan_from_center({"version": 2, "vms": []})
    assert plan.empty and plan.policy is None
    # A host whose VMs all lost their policy: back to local, their traffic not inspected.
    plan = plan_from_center({"version": 5, "vms": [_vm("a", "10.1.0.1", "unprotected")]})
    new, _, _ = protection_config(_base(), plan)
    assert not plan.empty and new.inspector.extra["attacks"] == {"tcp_port_scan": {"threshold": 7}}
    assert new.exclusions[0].text() == "no_scan 10.1.0.1/32"
    assert plan.same_as(
        plan_from_center({"version": 6, "vms": [_vm("a", "10.1.0.1", "unprotected")]})
    )


RULES = """# local rules
drop tcp any any -> any 80 (msg:"web attack"; content:"/etc/passwd"; classtype:web-application-attack; sid:1;)
reject tcp any any -> any any (msg:"scan"; flags:S; \\
    classtype:attempted-recon; sid:2;)
alert tcp any any -> any 6667 (msg:"c2"; content:"NICK"; classtype:command-and-control; sid:3;)
drop tcp any any -> any 22 (msg:"no classtype"; content:"SSH-1."; sid:4;)
alert tcp any any -> any any (msg:"broken"; nosuchkeyword; classtype:trojan-activity; sid:5;)
"""
# every IDS category but scan and botnet
CATS = ["exploit", "malware", "dos", "web-attack", "policy", "trojan", "phishing"]


def test_every_classtype_maps_to_a_known_ids_category() -> None:
    assert set(CLASSTYPE_CATEGORY.values()) == set(IDS_CATEGORIES)
    known = set(Classification.default().types)
    assert set(CLASSTYPE_CATEGORY) <= known, set(CLASSTYPE_CATEGORY) - known


def test_ids_categories_and_report_only_select_the_local_rules_as_they_load(
    tmp_path: Path,
) -> None:
    local = tmp_path / "local.rules"
    local.write_text(RULES)
    base = _base()
    base.inspector.rules = [str(local)]
    cfg = {
        "version": 7,
        "vms": [_vm("a", "10.1.0.1", "protected", 1, ids_categories=CATS, ids_action="report")],
    }
    new, not_applied, notes = protection_config(base, plan_from_center(cfg))
    assert not_applied == []
    assert notes["ids"] == {"categories_left_out": ["botnet", "scan"], "report_only": True}
    assert new.inspector.rules == [str(local)]  # the local file itself, never a copy
    sel = new.inspector.rule_selection
    assert sel is not None and sel.report_only
    assert {"attempted-recon", "command-and-control"} <= sel.exclude_classtypes
    rs = RuleSet.load(paths=new.inspector.rules, selection=sel)
    assert {r.sid: r.action for r in rs.rules} == {1: "alert", 4: "alert"}
    assert (rs.stats.left_out, rs.stats.report_only) == (2, 2)
    (bad,) = rs.rejected  # a rule the engine refuses: reported with its file and line
    assert (bad.sid, bad.line, bad.file) == (5, 7, str(local))
    assert local.read_text() == RULES
    # Every category and the default action: the rules as written.
    cfg["vms"] = [_vm("a", "10.1.0.1", "protected", 1)]
    new, _, notes = protection_config(base, plan_from_center(cfg))
    assert new.inspector.rule_selection is None and "ids" not in notes
    assert base.inspector.rule_selection is None  # the local configuration untouched


def test_follower_reports_the_counts_of_the_rule_load(tmp_path: Path) -> None:
    """The follower applies the policy to a real (not started) network service on loopback;
    the event's counts are those of the engine's rule load."""
    local = tmp_path / "local.rules"
    local.write_text(RULES)
    base = ProtectionConfig(
        name="np1", bridge="lo", ports=["lo"], inspector=InspectorSettings(rules=[str(local)])
    )
    net = NetworkProtection(base)
    assert net.rule_stats.loaded == 4 and net.rule_stats.left_out == 0
    events: list[Event] = []
    follower = NetworkPolicyFollower(events.append, host="esx1")
    follower.attach(net)
    follower.on_center_config(
        {
            "version": 3,
            "vms": [_vm("a", "10.1.0.1", "protected", 1, ids_categories=CATS, ids_action="report")],
        }
    )
    (ev,) = events
    svm = ev.data["svm"]
    assert svm["event"] == "network_policy" and svm["config_version"] == 3
    assert svm["ids"] == {
        "categories_left_out": ["botnet", "scan"],
        "report_only": True,
        "rules_left_out": 2,
        "rules_report_only": 2,
    }
    assert net.rule_stats.loaded == 2 and net.rule_stats.rejected == 1
    assert {r.sid: r.action for r in net._inspector.engine.rules.rules} == {1: "alert", 4: "alert"}
    assert not list(tmp_path.glob("**/rules-*"))  # no rule file written anywhere
    # Back to every category: the rules load as written again.
    follower.on_center_config({"version": 4, "vms": [_vm("a", "10.1.0.1", "protected", 1)]})
    assert "ids" not in events[-1].data["svm"] and net.rule_stats.loaded == 4


def test_stored_policies_keep_blocking_what_they_blocked(tmp_path: Path) -> None:
    """Migration 0002: a policy saved when SVMs blocked every URL database hit (its url_block
    was not applied) still blocks every threat category it does not allow; "unknown" goes."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine, text

    from vmshield.center import db as center_db
    from vmshield.center.profiles import parse_settings

    url = f"sqlite:///{tmp_path / 'c.db'}"
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(center_db.__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url)
    command.upgrade(cfg, "0001")
    old = {
        **NetworkPolicySpec().model_dump(),
        "url_block": ["malicious", "phishing"],
        "url_allow": ["adware", "unknown"],
    }
    eng = create_engine(url)
    with eng.begin() as c:
        c.execute(
            text("INSERT INTO profiles (id, kind, name, settings, revision, updated_at) "
                 "VALUES (1, 'network', 'old', :s, 1, 0)"),
            {"s": json.dumps(old)},
        )  # fmt: skip
    command.upgrade(cfg, "head")
    with eng.begin() as c:
        (raw,) = c.execute(text("SELECT settings FROM profiles WHERE id = 1")).one()
    new = json.loads(raw)
    assert new["url_allow"] == ["adware"]
    assert new["url_block"] == [
        "malicious", "phishing", "malware", "unwanted", "riskware", "suspicious",
    ]  # fmt: skip
    parse_settings("network", new)  # valid in the new vocabulary
    command.downgrade(cfg, "0001")  # and back: only the old vocabulary's names
    with eng.begin() as c:
        (raw,) = c.execute(text("SELECT settings FROM profiles WHERE id = 1")).one()
    assert json.loads(raw)["url_block"] == ["malicious", "phishing"]
    eng.dispose()


def test_url_categories_apply_live_to_the_engine(tmp_path: Path) -> None:
    """url_block / url_allow from the center reach the running service's engine: a request to
    a gambling site gets the block page once the policy blocks gambling; social passes."""
    from scapy.layers.inet import IP, TCP

    from vmshield.engines.net.urls import build_database
    from vmshield.filter import inspect as I  # noqa: N812

    (tmp_path / "gambling").write_text("casino.example\n")
    (tmp_path / "social").write_text("friends.example\n")
    (tmp_path / "bad").write_text("malware.example\n")
    db = tmp_path / "u.db"
    build_database(
        [("plain", tmp_path / "bad")],
        db,
        lists=[("gambling", tmp_path / "gambling"), ("social", tmp_path / "social")],
    )
    net = NetworkProtection(
        ProtectionConfig(
            name="np2", bridge="lo", ports=["lo"], inspector=InspectorSettings(url_db=[str(db)])
        )
    )

    def request(host: str, cport: int) -> list[I.Decision]:
        """A TCP handshake and an HTTP request from a VM, through the service's engine."""
        cli, srv = (
            {"src": "10.1.0.1", "dst": "192.0.2.80"},
            {"src": "192.0.2.80", "dst": "10.1.0.1"},
        )
        get = f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        packets = [
            IP(**cli) / TCP(sport=cport, dport=80, flags="S", seq=100),
            IP(**srv) / TCP(sport=80, dport=cport, flags="SA", seq=500, ack=101),
            IP(**cli) / TCP(sport=cport, dport=80, flags="A", seq=101, ack=501),
            IP(**cli) / TCP(sport=cport, dport=80, flags="PA", seq=101, ack=501) / get,
        ]
        return [net._inspector.inspect(bytes(p), 1000.0 + i) for i, p in enumerate(packets)]

    assert [d.action for d in request("casino.example", 40001)][-1] == I.ACCEPT  # reported
    events: list[Event] = []
    follower = NetworkPolicyFollower(events.append)
    follower.attach(net)
    policy = {"url_block": ["malware", "malicious", "gambling"], "url_allow": ["social"]}
    follower.on_center_config(
        {"version": 2, "vms": [_vm("a", "10.1.0.1", "protected", 1, **policy)]}
    )
    svm = events[-1].data["svm"]
    assert svm["event"] == "network_policy" and svm["not_applied"] == []
    assert svm["applied"]["url_block"] == ["malware", "malicious", "gambling"]
    assert svm["applied"]["url_allow"] == ["social"]
    decisions = request("casino.example", 40002)
    page = decisions[-1]
    assert page.action == I.BLOCK_PAGE and page.response is not None
    assert page.response.startswith(b"HTTP/1.1 403") and b"gambling" in page.response
    social = request("friends.example", 40003)
    assert {d.action for d in social} == {I.ACCEPT}
    assert not [e for d in social for e in d.events if e.event_type == "url"]  # allowed: quiet
    assert request("malware.example", 40004)[-1].action == I.BLOCK_PAGE
    # A center naming a category this SVM does not know: the rest applies, the name is reported.
    policy = {"url_block": ["gambling"]}
    cfg = {"version": 3, "vms": [_vm("a", "10.1.0.1", "protected", 1, **policy)]}
    cfg["vms"][0]["network"]["settings"]["url_allow"] = ["crypto"]
    follower.on_center_config(cfg)
    svm = events[-1].data["svm"]
    assert svm["event"] == "network_policy", svm
    assert svm["not_applied"] == ["url_allow ['crypto']: not URL categories of this SVM"]
    assert request("malware.example", 40005)[-1].action == I.ACCEPT  # malware now reported only
    # Trusted URLs from the center: a blocked site the operator trusts passes, unreported; an
    # entry the SVM cannot read is named, the others apply.
    policy = {"url_block": ["gambling"], "trusted_urls": ["https://casino.example/"]}
    cfg = {"version": 4, "vms": [_vm("a", "10.1.0.1", "protected", 1, **policy)]}
    # (the center refuses "localhost" itself: a center of another version sends it here)
    cfg["vms"][0]["network"]["settings"]["trusted_urls"].insert(0, "localhost")
    follower.on_center_config(cfg)
    svm = events[-1].data["svm"]
    assert svm["not_applied"] == ["trusted_urls[0]: refusing single-label host 'localhost'"]
    assert svm["applied"]["trusted_urls"] == 1
    trusted = request("www.casino.example", 40006)
    assert {d.action for d in trusted} == {I.ACCEPT}
    assert not [e for d in trusted for e in d.events if e.event_type == "url"]


def test_policy_url_settings_over_the_local_engine_configuration(tmp_path: Path) -> None:
    """The policy's categories replace the local engine configuration's; its trusted URLs add."""
    from vmshield.filter.engine_adapter import EngineInspector

    toml = tmp_path / "engine.toml"
    toml.write_text('[url]\nallow-categories = ["games"]\ntrusted = ["local.example"]\n')
    settings = InspectorSettings(engine_config=str(toml))
    cfg = EngineInspector(settings).engine.config
    assert cfg.url_allow == ["games"] and cfg.url_trusted == ["local.example"]
    settings.url_block, settings.url_allow = ["gambling"], ["social"]
    settings.url_trusted = ["center.example"]
    cfg = EngineInspector(settings).engine.config
    assert (cfg.url_block, cfg.url_allow) == (["gambling"], ["social"])
    assert cfg.url_trusted == ["local.example", "center.example"]
    assert cfg.url_policy(("malicious",), "http://www.center.example/", False) == "allow"
    assert cfg.url_policy(("malicious",), "http://other.example/", False) == "alert"


def test_ids_action_sets_the_engine_block_minutes() -> None:
    """IDS action terminate_and_block is applied: the engine's `ids.block-minutes` becomes the
    policy's block minutes; terminate and report block nothing."""
    base = _base()
    for action, minutes in (("terminate_and_block", 15), ("terminate", 0), ("report", 0)):
        cfg = {
            "version": 4,
            "vms": [_vm("a", "10.1.0.1", "protected", 1, ids_action=action, block_minutes=15)],
        }
        new, not_applied, _ = protection_config(base, plan_from_center(cfg))
        assert new.inspector.ids_block_minutes == minutes, action
        assert not_applied == [], action
    assert base.inspector.ids_block_minutes is None  # the local configuration untouched
    # Without a policy, the engine configuration's own setting stays.
    new, _, _ = protection_config(base, plan_from_center({"version": 5, "vms": []}))
    assert new.inspector.ids_block_minutes is None


def test_ids_terminate_and_block_blocks_the_source_live(tmp_path: Path) -> None:
    """terminate_and_block reaches the running service's engine: a packet a drop rule stops
    asks the filter to block its source for the policy's minutes (the attacks' path), except
    a "do not block" exclusion of the policy."""
    from scapy.layers.inet import IP, TCP

    from vmshield.filter import inspect as I  # noqa: N812

    rules = tmp_path / "local.rules"
    rules.write_text('drop tcp any any -> any 6666 (msg:"ids block"; flags:S; sid:9;)\n')
    net = NetworkProtection(
        ProtectionConfig(
            name="np3", bridge="lo", ports=["lo"], inspector=InspectorSettings(rules=[str(rules)])
        )
    )

    def syn(src: str, ts: float) -> I.Decision:
        p = IP(src=src, dst="10.1.0.1") / TCP(sport=40000, dport=6666, flags="S")
        return net._inspector.inspect(bytes(p), ts)

    d = syn("192.0.2.66", 1000.0)
    assert (d.action, d.block_src) == (I.DROP, None)  # local configuration: drop as written
    events: list[Event] = []
    follower = NetworkPolicyFollower(events.append)
    follower.attach(net)
    policy: dict[str, Any] = {
        "ids_action": "terminate_and_block",
        "block_minutes": 15,
        "exclusions": [{"address": "192.0.2.128/25", "mode": "do_not_block"}],
    }
    follower.on_center_config(
        {"version": 2, "vms": [_vm("a", "10.1.0.1", "protected", 1, **policy)]}
    )
    svm = events[-1].data["svm"]
    assert svm["event"] == "network_policy" and svm["not_applied"] == []
    assert svm["applied"]["ids_action"] == "terminate_and_block"
    d = syn("192.0.2.66", 1001.0)
    assert (d.action, d.block_src, d.block_seconds) == (I.DROP, "192.0.2.66", 900)
    (alert,) = [e for e in d.events if e.event_type == "alert"]
    assert alert.data["alert"]["block_minutes"] == 15
    d = syn("192.0.2.200", 1002.0)  # do not block: dropped as the rule says, never blocked
    assert (d.action, d.block_src) == (I.DROP, None)
    (alert,) = [e for e in d.events if e.event_type == "alert"]
    assert alert.data["alert"]["not_blocked"] == "source may not be blocked"
    policy["ids_action"] = "terminate"
    follower.on_center_config(
        {"version": 3, "vms": [_vm("a", "10.1.0.1", "protected", 1, **policy)]}
    )
    d = syn("192.0.2.67", 1003.0)
    assert (d.action, d.block_src) == (I.DROP, None)
