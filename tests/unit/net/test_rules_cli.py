"""`vmshield rules check` / `vmshield rules gen`."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmshield.cli import main


def test_check_reports_rejected_rules_and_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.rules"
    good.write_text('alert tcp $HOME_NET any -> any $HTTP_PORTS (msg:"x"; content:"a"; sid:1;)\n')
    bad = tmp_path / "bad.rules"
    bad.write_text('alert tcp any any -> any any (msg:"y"; content:"a"; depht:3; sid:2;)\n')
    assert main(["rules", "check", str(good)]) == 0
    assert "1 rules loaded, 0 rejected, 1 files" in capsys.readouterr().out
    assert main(["rules", "check", str(good), str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"{bad}:1: sid 2 keyword 'depht': unsupported keyword" in out
    assert "1 rules loaded, 1 rejected, 2 files" in out
    assert main(["rules", "check", str(tmp_path / "missing.rules")]) == 2
    assert "cannot read" in capsys.readouterr().err
    # variables from the command line
    assert (
        main(
            [
                "rules",
                "check",
                "--home-net",
                "10.9.0.0/16",
                "--var",
                "HTTP_PORTS=[80,8080]",
                str(good),
            ]
        )
        == 0
    )
    assert main(["rules", "check", "--var", "HOME_NET=[10.0.0.0/99]", str(good)]) == 2


def test_check_with_suricata_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.rules").write_text("alert ip any any -> any any (sid:1;)\n")
    (tmp_path / "suricata.yaml").write_text(
        "default-rule-path: .\nrule-files:\n  - a.rules\n  - b.rules\n"
    )
    assert main(["rules", "check", "--config", str(tmp_path / "suricata.yaml")]) == 1
    out = capsys.readouterr().out
    assert "rule file not found" in out and "1 rules loaded" in out


def test_gen_writes_rules_that_all_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "gen.rules"
    assert main(["rules", "gen", "--count", "300", "-o", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 300
    assert main(["rules", "check", "--quiet", str(out)]) == 0
    assert "300 rules loaded, 0 rejected" in capsys.readouterr().out


def test_check_with_a_policy_selection(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "local.rules"
    rules.write_text(
        'drop tcp any any -> any 80 (msg:"a"; content:"x"; classtype:web-application-attack; sid:1;)\n'
        'rejectsrc tcp any any -> any 81 (msg:"b"; content:"y"; classtype:attempted-recon; sid:2;)\n'
        'alert tcp any any -> any 82 (msg:"c"; content:"z"; sid:3;)\n'
    )
    argv = ["rules", "check", "--exclude-classtype", "Attempted-Recon", "--report-only"]
    assert main([*argv, str(rules)]) == 0
    out = capsys.readouterr().out
    assert "2 rules loaded, 0 rejected, 1 files, 1 left out by policy, 1 made report-only" in out
    assert main(["rules", "check", "--exclude-classtype", "no-such-type", str(rules)]) == 2
    assert "unknown classtypes ['no-such-type']" in capsys.readouterr().err
