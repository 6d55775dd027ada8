"""The center's network policy as the SVM's network service configuration (pure part)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vmshield.center.profiles import NetworkPolicySpec
from vmshield.engines.net.attacks import AttackConfig
from vmshield.engines.net.rules import RuleSet
from vmshield.filter.exclusions import parse_exclusion
from vmshield.filter.inspect import InspectorSettings
from vmshield.filter.service import ProtectionConfig
from vmshield.svm.netpolicy import plan_from_center, protection_config


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
    assert any(x.startswith("url_block ['malicious']") for x in not_applied)
    assert len(not_applied) == 2


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


def test_ids_categories_and_report_only_rewrite_the_local_rules(tmp_path: Path) -> None:
    local = tmp_path / "local.rules"
    local.write_text(RULES)
    base = _base()
    base.inspector.rules = [str(local)]
    cats = ["exploit", "malware", "dos", "web-attack", "policy", "trojan", "phishing"]
    cfg = {
        "version": 7,
        "vms": [_vm("a", "10.1.0.1", "protected", 1, ids_categories=cats, ids_action="report")],
    }
    new, not_applied, notes = protection_config(base, plan_from_center(cfg), tmp_path / "out")
    assert not_applied == []
    assert notes["ids"] == {
        "categories_left_out": ["botnet", "scan"],
        "rules_left_out": 2,
        "rules_report_only": 2,
    }
    (path,) = new.inspector.rules
    assert path.endswith("/local.rules") and path != str(local)
    rs = RuleSet.load(paths=[path])
    assert {r.sid: r.action for r in rs.rules} == {1: "alert", 4: "alert"}
    # A rule the engine refuses is still reported with its file name and original line.
    (bad,) = rs.rejected
    assert (bad.sid, bad.line, Path(bad.file).name) == (5, 7, "local.rules")
    assert local.read_text() == RULES  # the local file is never touched
    # Every category and the default action: the local files themselves.
    cfg["vms"] = [_vm("a", "10.1.0.1", "protected", 1)]
    new, _, notes = protection_config(base, plan_from_center(cfg), tmp_path / "out2")
    assert new.inspector.rules == [str(local)] and "ids" not in notes
