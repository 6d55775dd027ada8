"""Semantics agree with the real thing: the same home-made database through Debian's clamscan.

ClamAV's own databases are not installed (no network); we give clamscan ours with -d, and compare
per file the set of names each engine reports (ClamAV appends `.UNOFFICIAL` to home-made names).
Files are longer than 5 bytes: clamscan does not match anything in files of 5 bytes or fewer
(we do), a difference kept on purpose.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sig_testlib import EICAR, EICAR_MD5, clamscan, write_db

from vmshield.engines.file.database import Database
from vmshield.engines.file.scanner import Scanner

pytestmark = pytest.mark.skipif(shutil.which("clamscan") is None, reason="clamscan not installed")


def h(s: bytes) -> str:
    return s.hex()


NDB = "\n".join(
    [
        "T.Plain:0:*:" + h(b"plainpattern"),
        "T.Spaced:0:*:" + h(b"first and second"),
        "T.Wild:0:*:" + h(b"wild") + "??" + h(b"card"),
        "T.Nibble:0:*:" + h(b"nib") + "6?" + h(b"ble"),
        "T.Star:0:*:" + h(b"star") + "*" + h(b"end"),
        "T.Jump:0:*:" + h(b"jump") + "{2-4}" + h(b"over"),
        "T.Alt:0:*:" + h(b"alt") + "(41|4242)" + h(b"ern"),
        "T.Neg:0:*:" + h(b"neg") + "!(41|42)" + h(b"ate"),
        "T.Abs:0:4:" + h(b"atfour"),
        "T.Float:0:10,5:" + h(b"floating"),
        "T.Eof:0:EOF-6:" + h(b"ending"),
        "T.PE:1:*:" + h(b"pe-only"),
    ]
)
LDB = "\n".join(
    [
        "T.Logic;Target:0;(0&1)|2;" + ";".join(h(x) for x in (b"first", b"second", b"third")),
        "T.Count;Target:0;0>2;" + h(b"again"),
        "T.Nocase;Target:0;0;" + h(b"shout") + "::i",
        "T.Wide;Target:0;0;" + h(b"widestr") + "::w",
    ]
)

FILES = {
    "plain": b"xx plainpattern xx",
    "wild": b"wildXcard",
    "wild_no": b"wildXXcard",
    "nibble": b"nibfble",
    "nibble_no": b"nib\x96ble",
    "star": b"star" + b"-" * 3000 + b"end",
    "jump": b"jumpXYZover",
    "jump_no": b"jumpXover",
    "alt": b"altBBern",
    "alt_no": b"altCern",
    "neg": b"negCate",
    "neg_no": b"\x00\x01\x02\x03\xff\xfe\x80\x81negAate" + bytes(range(256)),
    "abs": b"0123atfour",
    "abs_no": b"012atfour",
    "float": b"x" * 13 + b"floating",
    "float_no": b"x" * 16 + b"floating",
    "eof": b"some ending",
    "eof_no": b"some ending.",
    "pe": b"MZ" + b"\x00" * 100 + b"pe-only",
    "pe_no": b"not a pe: pe-only",
    "logic": b"first and second",
    "logic3": b"only third",
    "logic_no": b"first alone",
    "count": b"again again again",
    "count_no": b"again again",
    "nocase": b"SHOUT!",
    "nocase_text": b"they Shout here",
    # A text file is also matched lower-cased, as ClamAV normalises text: 0x41 'A' → 0x61.
    "nibble_text": b"nibAble",
    # ... and with every run of whitespace made one space.
    "plain_spaced": b"xx PlainPattern \n",
    "logic_spaced": b"first\n\n  and   second",
    "wide": "widestr".encode("utf-16-le"),
    "eicar": EICAR,
    "clean": b"nothing to see here\n" * 50,
}


def test_detections_agree_with_clamscan(tmp_path: Path) -> None:
    db_dir = write_db(
        tmp_path / "db",
        {"t.ndb": NDB + "\n", "t.ldb": LDB + "\n", "t.hdb": f"{EICAR_MD5}:68:T.Eicar.Hash\n"},
    )
    files = []
    for name, data in FILES.items():
        p = tmp_path / "files" / name
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(data)
        files.append(p)
    db = Database.load(db_dir)
    assert not db.rejected
    scanner = Scanner(db)
    ours = {p.name: {d.name for d in scanner.scan_path(p).detections} for p in files}
    theirs = clamscan(db_dir, files)
    assert ours == theirs
    # And the test is not vacuous: most files are detected, the *_no ones are not.
    assert sum(1 for v in ours.values() if v) >= 18
    assert all(not ours[n] for n in FILES if n.endswith("_no") or n == "clean")


@pytest.mark.timeout(120)  # with a backtracking matcher this file alone takes hours
def test_many_star_signature_cannot_be_used_to_stall_the_scanner() -> None:
    from sig_testlib import db_of, names

    db = db_of(
        t_ndb="Many.Stars:0:*:4141*4242*4343*4444\n",
        t_ldb="L.Stars;Target:0;0>1;4141*4242*4343*4444\n",
    )
    hostile = b"AA" * 1000 + b"BB" * 1000 + b"CC" * 1000
    assert names(db, hostile) == set()
    assert names(db, b"xAAyyBBzzCCqqDD") == {"Many.Stars"}
    assert names(db, b"AABBCCDD AABBCCDD") == {"Many.Stars", "L.Stars"}


@pytest.mark.timeout(120)  # bounded gaps chained: polynomial for a backtracking matcher too
def test_chained_bounded_gaps_cannot_stall_the_scanner() -> None:
    from sig_testlib import db_of, names

    db = db_of(t_ndb="Gaps:0:*:4141{0-2000}4242{0-2000}4343{0-2000}4444\n")
    assert names(db, b"AA" * 1000 + b"BB" * 1000 + b"CC" * 1000) == set()
    assert names(db, b"AA..BB..CC..DD") == {"Gaps"}


def test_word_boundary_bytes_agree_with_clamscan(tmp_path: Path) -> None:
    # (B) before and after a pattern, with every possible byte next to it.
    files = []
    d = tmp_path / "b"
    d.mkdir()
    for c in range(256):
        for side, data in (
            ("p", b"xx" + bytes([c]) + b"evil yy"),
            ("s", b"xx evil" + bytes([c]) + b"yy"),
        ):
            p = d / f"{side}{c:03d}"
            p.write_bytes(data)
            files.append(p)
    db_dir = write_db(
        tmp_path / "db", {"t.ndb": "T.Before:0:*:(B)6576696c\nT.After:0:*:6576696c(B)\n"}
    )
    scanner = Scanner(Database.load(db_dir))
    ours = {p.name: {d.name for d in scanner.scan_path(p).detections} for p in files}
    assert ours == clamscan(db_dir, files)
    assert "T.Before" in ours["p032"] and "T.Before" not in ours["p001"]


def test_text_normalisation_in_pieces_equals_whole() -> None:
    import random

    from vmshield.engines.file.matcher import _norm_piece, normalize_text

    rng = random.Random(7)
    for _ in range(500):
        d = bytes(rng.choice(b"ab \n\tCD\r") for _ in range(rng.randint(0, 80)))
        for chunk in (1, 2, 3, 7, 64):
            assert normalize_text(d, chunk) == _norm_piece(d.lower())
    assert normalize_text(b"  Evil \r\n\t Payload  ") == b" evil payload "
