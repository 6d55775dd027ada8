"""`vmshield url`: what an operator types and sees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vmshield.cli import main


def test_canon_and_expressions(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["url", "canon", "http://www.GOOgle.com.../", "http://3279880203/blah"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "http://www.google.com/",
        "http://195.127.0.11/blah",
    ]
    assert main(["url", "expressions", "http://1.2.3.4/1/"]) == 0
    assert capsys.readouterr().out.splitlines() == ["1.2.3.4/1/", "1.2.3.4/"]
    assert main(["url", "canon", "http:///nohost"]) == 2
    assert "no host" in capsys.readouterr().err


def test_build_then_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    feed = tmp_path / "openphish.txt"
    feed.write_text("https://phish.example/login/\nnot-a-url\nhttp://other.example/x.html\n")
    trusted = tmp_path / "trusted.txt"
    trusted.write_text("other.example\n")
    db = tmp_path / "urls.db"
    rc = main(
        ["url", "build", "--feed", "openphish", str(feed), "--trusted", str(trusted), "-o", str(db)]
    )
    out = capsys.readouterr()
    assert rc == 0
    assert "3 entries (phishing 2; trusted 1)" in out.out and "1 rejected" in out.out
    assert f"{feed}:2: not a URL (no scheme)" in out.err

    assert main(["url", "check", "--db", str(db), "http://clean.example/"]) == 0
    assert capsys.readouterr().out.strip() == "http://clean.example/: clean"
    rc = main(
        [
            "url",
            "check",
            "--db",
            str(db),
            "https://PHISH.example/login/step2?a=1",
            "http://other.example/x.html",
        ]
    )
    lines = capsys.readouterr().out.splitlines()
    assert rc == 1
    assert lines[0].endswith("LISTED phishing (matched phish.example/login/)")
    assert lines[1].endswith("trusted (matched other.example/)")
    assert main(["url", "check", "--db", str(db), "--json", "--host", "phish.example"]) == 0
    assert json.loads(capsys.readouterr().out)["verdict"] == "clean"  # only a path is listed

    assert main(["url", "info", str(db)]) == 0
    assert "entries 3 (trusted 1)" in capsys.readouterr().out


def test_errors_exit_2_with_the_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["url", "check", "--db", str(tmp_path / "none.db"), "http://a.example/"]) == 2
    assert "cannot open URL database" in capsys.readouterr().err
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"\0" * 200)
    assert main(["url", "check", "--db", str(junk), "http://a.example/"]) == 2
    assert "bad magic" in capsys.readouterr().err
    assert (
        main(
            [
                "url",
                "build",
                "--feed",
                "plain",
                str(tmp_path / "missing.txt"),
                "-o",
                str(tmp_path / "o.db"),
            ]
        )
        == 2
    )
    assert "no such feed file" in capsys.readouterr().err


def test_build_mixes_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plain = tmp_path / "mine.txt"
    plain.write_text("adware.example\n")
    haus = tmp_path / "urlhaus.csv"
    haus.write_text(
        '"1","2024-01-01 00:00:00","http://mw.example/x.exe","online","malware_download",'
        '"exe","https://urlhaus.abuse.ch/url/1/","anon"\n'
    )
    db = tmp_path / "u.db"
    rc = main(["url", "build", "--feed", "plain", str(plain), f"urlhaus:{haus}", "-o", str(db)])
    assert rc == 0 and "2 entries (malicious 1, malware 1" in capsys.readouterr().out
    assert main(["url", "check", "--db", str(db), "http://mw.example/x.exe"]) == 1
    assert "LISTED malware" in capsys.readouterr().out


def test_check_reads_urls_from_stdin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    feed = tmp_path / "f.txt"
    feed.write_text("evil.example\n")
    db = tmp_path / "u.db"
    assert main(["url", "build", "--feed", "plain", str(feed), "-o", str(db)]) == 0
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO("http://ok.example/\n\nhttp://x.evil.example/a\n"))
    assert main(["url", "check", "--db", str(db), "-"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "http://ok.example/: clean",
        "http://x.evil.example/a: LISTED malicious (matched evil.example/)",
    ]
