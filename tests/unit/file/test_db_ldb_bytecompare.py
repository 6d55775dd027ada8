"""Byte-compare subsignatures `N(>>off#opts#cmp)` (LogicalSignatures.md, "Byte Compare
Subsignatures"): read bytes at an offset from the start of each match of subsignature N and
compare them as a number. Checked against Debian's clamscan with the same database; what we
refuse (automatic base, little-endian hex text) is where our reading of clamscan was unsure."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sig_testlib import clamscan, db_of, names, write_db

from vmshield.engines.file.database import Database
from vmshield.engines.file.scanner import Scanner

HEAD = b"HEADER!"
DATA = b"xxxxxxxx" + HEAD + b"\x02\x00" + b"0x1F4 500 " + b"y" * 40
SIGS = {
    "S7ib2": ("0(>>7#ib2#=512)", True),  # 02 00 big endian
    "S0ib2": ("0(>>0#ib2#=512)", False),  # offset counts from the match start
    "S7il2": ("0(>>7#il2#=2)", True),
    "S7gt": ("0(>>7#ib2#>511)", True),
    "S7lt": ("0(>>7#ib2#<511)", False),
    "Srange": ("0(>>7#ib2#>500,<600)", True),
    "Snorange": ("0(>>7#ib2#>500,<510)", False),
    "Sback": ("0(<<2#ib2#=30840)", True),  # "xx" before the match
    "Sdec": ("0(>>15#de3#=500)", True),
    "Sdec4": ("0(>>15#d4#=500)", True),  # not exact: the digits before the space
    "Sdece4": ("0(>>15#de4#=500)", False),  # exact: "500 " is not all digits
    "Shex": ("0(>>11#hbe3#=500)", True),  # "1F4"
    "Shex2": ("0(>>11#hb3#>0)", True),
    "Sib1": ("0(>>7#ib1#=2)", True),
}
LDB = "".join(f"BC.{k};Engine:81-255,Target:0;0&1;{HEAD.hex()};{v}\n" for k, (v, _) in SIGS.items())
EXPECTED = {f"BC.{k}" for k, (_, hit) in SIGS.items() if hit}


def test_byte_compare() -> None:
    db = db_of(t_ldb=LDB)
    assert not db.rejected, db.rejected
    assert names(db, DATA) == EXPECTED
    assert names(db, DATA.replace(HEAD, b"HEADER?")) == set()  # no trigger match, no compare


def test_bad_byte_compare_rejected_with_reason() -> None:
    bad = {
        "0(>>7#ab2#=5)": "not supported",
        "0(>>7#hl3#=5)": "big endian",
        "0(>>7#ib3#=5)": "1, 2, 4 or 8",
        "0(>>7#i2#=5)": "endian",
        "1(>>7#ib2#=5)": "not another",
        "0(>>7#ib2#~5)": "comparison",
    }
    text = "".join(f"X{i};Target:0;0&1;{HEAD.hex()};{s}\n" for i, s in enumerate(bad))
    db = db_of(t_ldb=text)
    assert len(db.rejected) == len(bad)
    for r, want in zip(db.rejected, bad.values(), strict=True):
        assert want in r.reason, (r.reason, want)


@pytest.mark.skipif(shutil.which("clamscan") is None, reason="clamscan not installed")
def test_agrees_with_clamscan(tmp_path: Path) -> None:
    db_dir = write_db(tmp_path / "db", {"t.ldb": LDB})
    f = tmp_path / "f.bin"
    f.write_bytes(DATA)
    ours = {d.name for d in Scanner(Database.load(db_dir)).scan_path(f).detections}
    assert ours == clamscan(db_dir, [f])[f.name] == EXPECTED
