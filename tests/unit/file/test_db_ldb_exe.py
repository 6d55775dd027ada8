"""`.ldb` target-block keys about executables: EntryPoint and NumberOfSections (ClamAV's
LogicalSignatures.md: "EntryPoint: entry point offset, integer or range"; "NumberOfSections:
required number of sections in executable, integer or range"), checked against Debian's clamscan
with the same database on a PE built here."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sig_testlib import clamscan, db_of, names, write_db
from test_match_exe_offsets import CODE, make_pe

from vmshield.engines.file.database import Database
from vmshield.engines.file.scanner import Scanner

CODE_HEX = CODE.hex()
EP = 0x204  # make_pe(): AddressOfEntryPoint 0x1004 in .text at file offset 0x200

LDB = "\n".join(
    [
        f"EP.Exact;Engine:51-255,Target:1,EntryPoint:{EP}-{EP};0;{CODE_HEX}",
        f"EP.Range;Engine:51-255,Target:1,EntryPoint:500-600;0;{CODE_HEX}",
        f"EP.Out;Engine:51-255,Target:1,EntryPoint:0-100;0;{CODE_HEX}",
        f"NS.Two;Engine:51-255,Target:1,NumberOfSections:2-2;0;{CODE_HEX}",
        f"NS.Range;Engine:51-255,Target:1,NumberOfSections:1-3;0;{CODE_HEX}",
        f"NS.Out;Engine:51-255,Target:1,NumberOfSections:3-9;0;{CODE_HEX}",
        f"Both;Engine:51-255,Target:1,EntryPoint:{EP}-{EP},NumberOfSections:2-2;0;{CODE_HEX}",
    ]
)
EXPECTED_PE = {"EP.Exact", "EP.Range", "NS.Two", "NS.Range", "Both"}


def test_entry_point_and_section_count_on_pe() -> None:
    db = db_of(t_ldb=LDB + "\n")
    assert not db.rejected, db.rejected
    assert names(db, make_pe()) == EXPECTED_PE
    # The same bytes without a PE header: no entry point, no sections, nothing matches.
    assert names(db, b"\x00" * 0x204 + CODE) == set()


def test_bad_ranges_are_rejected_with_reason() -> None:
    db = db_of(
        t_ldb=f"Bad;Target:1,EntryPoint:x-9;0;{CODE_HEX}\n"
        f"Bad2;Target:1,NumberOfSections:5-2;0;{CODE_HEX}\n"
        f"Bad3;Target:1,EntryPoint:516;0;{CODE_HEX}\n"  # clamscan refuses a bare number too
        f"Bad4;Target:0,EntryPoint:0-600;0;{CODE_HEX}\n"  # and a target that is no executable
    )
    assert [r.line for r in db.rejected] == [1, 2, 3, 4]
    assert all("range" in r.reason for r in db.rejected[:3])
    assert "Target:1" in db.rejected[3].reason


@pytest.mark.skipif(shutil.which("clamscan") is None, reason="clamscan not installed")
def test_agrees_with_clamscan(tmp_path: Path) -> None:
    db_dir = write_db(tmp_path / "db", {"t.ldb": LDB + "\n"})
    f = tmp_path / "x.exe"
    f.write_bytes(make_pe())
    ours = {d.name for d in Scanner(Database.load(db_dir)).scan_path(f).detections}
    assert ours == clamscan(db_dir, [f])[f.name] == EXPECTED_PE
