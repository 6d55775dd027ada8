"""Hostile input against backtracking verification: a crafted file must not hold a scan past the
scan-time limit. Each signature below goes through `regex` (not Hyperscan: a PCRE subsignature, or
a gap pattern with `(B)`, `(L)`, `::f` or a multi-byte `!()`), and each hostile file makes that
pattern backtrack for far longer than any machine has (chained lazy gaps over 5 000 bytes with no
match). The scan must end `limits_exceeded (max_scan_time)`, never clean and never hang; the same
signature still detects a file it really matches."""

from __future__ import annotations

import pytest
from sig_testlib import db_of, make_zip

from vmshield.engines.file.limits import Limits
from vmshield.engines.file.results import Status
from vmshield.engines.file.scanner import Scanner

LIMITS = Limits(max_scan_time=0.5)
HOSTILE = b"a" * 5000  # no terminating byte: every split of the gaps is tried

CASES = [
    # (database files, hostile data, data the signature really matches)
    (
        {"t_ldb": "Evil.PCRE;Target:0;0&1;61616161;0/(a|aa)+c/\n"},
        HOSTILE + b"b",
        b"xx aaaac yy",
    ),
    (
        {"t_ldb": "Evil.PCRE2;Target:0;0&1;61616161;0/(?:a.*?){1,30}b/s\n"},
        HOSTILE,
        b"aaaa b",
    ),
    ({"t_ndb": "Evil.GapB:0:*:6161(B)*61*61*61*61*62\n"}, b"aa " + HOSTILE, b"aa aaaab"),
    ({"t_ndb": "Evil.GapL:0:*:6161*61*61*61*61*62(L)\n"}, HOSTILE, b"aaaaaab\nrest"),
    ({"t_ldb": "Evil.F;Target:0;0;6161*61*61*61*61*62::f\n"}, HOSTILE, b"x aaaaaab y"),
    ({"t_ldb": "Evil.Not;Target:0;0;6161*61*!(6162)*61*61*62\n"}, HOSTILE, b"aa a aa a ab"),
]


@pytest.mark.parametrize(
    ("files", "hostile", "real"), CASES, ids=[str(i) for i in range(len(CASES))]
)
def test_pathological_input_ends_at_scan_time_limit(
    files: dict[str, str], hostile: bytes, real: bytes
) -> None:
    db = db_of(**files)
    assert not db.rejected, db.rejected
    name = next(iter(files.values())).split(";")[0].split(":")[0]
    scanner = Scanner(db, LIMITS, containers=False)
    good = scanner.scan_bytes(real, "real")
    assert good.status is Status.INFECTED, (good.status, good.errors)
    assert [d.name for d in good.detections] == [name]
    bad = scanner.scan_bytes(hostile, "hostile")
    assert bad.status is Status.LIMITS_EXCEEDED, (bad.status, bad.errors)
    assert bad.limit == "max_scan_time"


def test_pathological_member_of_archive_reports_the_limit_not_clean() -> None:
    db = db_of(t_ldb="Evil.PCRE;Target:0;0&1;61616161;0/(a|aa)+c/\n")
    data = make_zip({"ok.txt": b"harmless", "dir/evil.txt": HOSTILE + b"b"})
    res = Scanner(db, LIMITS).scan_bytes(data, "a.zip")
    assert res.status is Status.LIMITS_EXCEEDED
    assert res.limit == "max_scan_time"


def test_pcre_that_python_re_accepts_but_regex_runs_is_loaded() -> None:
    # The loader validates with the module that runs the pattern: what loads, runs.
    db = db_of(t_ldb="P;Target:0;0&1;6b6f74656b;0/kotek\\s+(?i:ALA)/\n")
    assert not db.rejected
    res = Scanner(db, LIMITS, containers=False).scan_bytes(b"kotek   ala", "x")
    assert [d.name for d in res.detections] == ["P"]
