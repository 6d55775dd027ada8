"""A policy's rule selection applied as rule files load: categories left out, report-only."""

from __future__ import annotations

from pathlib import Path

import pytest
from nids_capgen import TcpConv

from vmshield.engines.net.config import EngineConfig
from vmshield.engines.net.engine import Action, Engine
from vmshield.engines.net.rules import RuleSet
from vmshield.engines.net.rules.select import RuleSelection

RULES = """# local rules
drop tcp any any -> any 80 (msg:"web attack"; content:"/etc/passwd"; classtype:web-application-attack; sid:1;)
reject tcp any any -> any any (msg:"scan"; flags:S; \\
    classtype:attempted-recon; sid:2;)
alert tcp any any -> any 6667 (msg:"c2"; content:"NICK"; \\
    sid:3; \\
    classtype:command-and-control;)
drop tcp any any -> any 22 (msg:"no classtype"; content:"SSH-1."; sid:4;)
rejectsrc tcp any any -> any 25 (msg:"smtp"; content:"EHLO evil"; classtype:policy-violation; sid:6;)
rejectboth tcp any any -> any 110 (msg:"pop"; content:"USER x"; classtype:Trojan-Activity; sid:7;)
rejectdst tcp any any -> any 143 (msg:"imap"; content:"LOGIN y"; sid:8;)
pass tcp 10.0.0.9 any -> any any (msg:"trusted scanner"; classtype:attempted-recon; sid:9;)
alert tcp any any -> any any (msg:"sets a bit"; content:"HELLO"; flowbits:set,greeted; flowbits:noalert; classtype:command-and-control; sid:10;)
alert tcp any any -> any any (msg:"broken"; nosuchkeyword; classtype:trojan-activity; sid:5;)
"""


def _load(tmp_path: Path, selection: RuleSelection | None) -> RuleSet:
    local = tmp_path / "local.rules"
    local.write_text(RULES)
    return RuleSet.load(paths=[local], selection=selection)


def test_no_selection_loads_the_rules_as_written(tmp_path: Path) -> None:
    rs = _load(tmp_path, None)
    assert {r.sid: r.action for r in rs.rules} == {
        1: "drop", 2: "reject", 3: "alert", 4: "drop", 6: "reject", 7: "reject", 8: "reject",
        9: "pass", 10: "alert",
    }  # fmt: skip
    assert (rs.stats.loaded, rs.stats.rejected, rs.stats.left_out, rs.stats.report_only) == (
        9,
        1,
        0,
        0,
    )
    assert _load(tmp_path, RuleSelection()).stats.loaded == 9  # the empty selection: the same


def test_excluded_classtypes_are_left_out_not_rejected(tmp_path: Path) -> None:
    sel = RuleSelection(
        frozenset({"attempted-recon", "command-and-control", "trojan-activity", "policy-violation"})
    )
    rs = _load(tmp_path, sel)
    # sid 3: its classtype on a continued line; sid 7: classtype spelled in capitals;
    # sid 9 (pass) and sid 10 (noalert flowbit setter) cannot alert: they stay.
    assert sorted(r.sid for r in rs.rules) == [1, 4, 8, 9, 10]
    assert rs.stats.left_out == 4 and rs.stats.loaded == 5
    # The broken rule is still rejected (and reported with its line), never counted as left out.
    (bad,) = rs.rejected
    assert (bad.sid, bad.line) == (5, 14) and rs.stats.rejected == 1


def test_report_only_makes_every_blocking_form_an_alert(tmp_path: Path) -> None:
    rs = _load(tmp_path, RuleSelection(report_only=True))
    actions = {r.sid: r.action for r in rs.rules}
    assert actions == {
        1: "alert", 2: "alert", 3: "alert", 4: "alert", 6: "alert", 7: "alert", 8: "alert",
        9: "pass", 10: "alert",
    }  # fmt: skip
    assert rs.stats.report_only == 6 and rs.stats.left_out == 0 and rs.stats.loaded == 9
    # Both at once: left-out rules are not counted as made report-only.
    both = _load(tmp_path, RuleSelection(frozenset({"web-application-attack"}), report_only=True))
    assert both.stats.left_out == 1 and both.stats.report_only == 5


def test_report_only_count_follows_the_revision_kept() -> None:
    text = (
        'drop tcp any any -> any 1 (msg:"old"; sid:20; rev:1;)\n'
        'alert tcp any any -> any 1 (msg:"new"; sid:20; rev:2;)\n'
    )
    rs = RuleSet.load(texts=[text], selection=RuleSelection(report_only=True))
    assert [(r.sid, r.rev, r.action) for r in rs.rules] == [(20, 2, "alert")]
    assert rs.stats.report_only == 0 and rs.stats.duplicates == 1


@pytest.mark.parametrize("report_only", [False, True])
def test_report_only_drop_rule_alerts_as_allowed_and_passes(report_only: bool) -> None:
    """What a user sees: with report-only, the drop rule's traffic passes and the alert
    says "allowed", as Suricata says for alert rules."""
    rs = RuleSet.load(
        texts=['drop tcp any any -> any 6666 (msg:"drop 6666"; flags:S; sid:1003;)'],
        selection=RuleSelection(report_only=report_only),
    )
    e = Engine(EngineConfig(mode="ips"), rules=rs)
    c = TcpConv(sport=6666).handshake()
    c.send(b"hello")
    results = [e.process(f, ts) for ts, f in c.frames]
    alerts = [ev.data["alert"] for r in results for ev in r.events if ev.event_type == "alert"]
    assert len(alerts) == 1 and alerts[0]["signature_id"] == 1003
    if report_only:
        assert alerts[0]["action"] == "allowed"
        assert all(r.verdict.action == Action.ACCEPT for r in results)
    else:
        assert alerts[0]["action"] == "blocked"
        assert results[0].verdict.action == Action.DROP
