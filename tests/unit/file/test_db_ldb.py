"""Logical signatures (.ldb), following the examples of ClamAV's LogicalSignatures.md."""

from __future__ import annotations

from sig_testlib import db_of, names

KOTEK, ALA, ZOLW, STEK, DEAD = "6b6f74656b", "616c61", "7a6f6c77", "7374656b", "deadbeef"


def ldb_hit(line: str, data: bytes) -> bool:
    db = db_of(t_ldb=line + "\n")
    assert not db.rejected, db.rejected
    name = line.split(";", 1)[0]
    return name in names(db, data)


def test_doc_sig1_and_or() -> None:
    # LogicalSignatures.md: Sig1;Target:0;(0&1&2&3)&(4|1);6b6f74656b;616c61;7a6f6c77;7374656b;deadbeef
    line = f"Sig1;Target:0;(0&1&2&3)&(4|1);{KOTEK};{ALA};{ZOLW};{STEK};{DEAD}"
    assert ldb_hit(line, b"kotek ala zolw stek")
    assert not ldb_hit(line, b"kotek ala zolw")  # subsig 3 missing
    assert not ldb_hit(line, b"kotek zolw stek \xde\xad\xbe\xef")  # 0&1&2&3 fails without ala


def test_doc_sig2_counts_with_distinct() -> None:
    # Sig2;Target:0;((0|1|2)>5,2)&(3|1);…: more than 5 matches of 0|1|2, from at least 2 of them.
    line = f"Sig2;Target:0;((0|1|2)>5,2)&(3|1);{KOTEK};{ALA};{ZOLW};{STEK}"
    assert ldb_hit(line, b"kotek " * 5 + b"ala")  # 6 matches from 2 subsigs, and ala for (3|1)
    assert not ldb_hit(line, b"kotek " * 7 + b"stek")  # only one distinct subsig
    assert not ldb_hit(line, b"kotek ala zolw stek")  # only 3 matches


def test_doc_sig3_exact_count() -> None:
    # Sig3;Target:0;((0|1|2|3)=2)&(4|1);…
    line = f"Sig3;Target:0;((0|1|2|3)=2)&(4|1);{KOTEK};{ALA};{ZOLW};{STEK};{DEAD}"
    assert ldb_hit(line, b"kotek ala")
    assert not ldb_hit(line, b"kotek ala zolw")
    assert not ldb_hit(line, b"kotek zolw")  # count 2 but neither 4 nor 1


def test_less_than_and_equal_for_one_subsig() -> None:
    assert ldb_hit(f"L;Target:0;0&1<2;{KOTEK};{ALA}", b"kotek ala")
    assert not ldb_hit(f"L;Target:0;0&1<2;{KOTEK};{ALA}", b"kotek ala ala")
    assert ldb_hit(f"E;Target:0;0=3;{ALA}", b"ala ala ala")
    assert not ldb_hit(f"E;Target:0;0=3;{ALA}", b"ala ala")


def test_target_block_filesize_and_target() -> None:
    line = f"FS;Target:0,FileSize:10-20;0;{KOTEK}"
    assert ldb_hit(line, b"kotek" + b"." * 10)
    assert not ldb_hit(line, b"kotek")
    assert not ldb_hit(line, b"kotek" + b"." * 30)
    pe_line = f"PE;Engine:51-255,Target:1;0;{KOTEK}"
    assert ldb_hit(pe_line, b"MZ" + b"\x00" * 60 + b"kotek")
    assert not ldb_hit(pe_line, b"\x7fELF" + b"\x00" * 60 + b"kotek")


def test_subsig_offsets() -> None:
    assert ldb_hit(f"O;Target:0;0&1;0:{KOTEK};EOF-3:{ALA}", b"kotek...ala")
    assert not ldb_hit(f"O;Target:0;0&1;0:{KOTEK};EOF-3:{ALA}", b".kotek..ala")


def test_modifiers_i_w_f_a() -> None:
    # ::i case-insensitive
    assert ldb_hit(f"I;Target:0;0;{KOTEK}::i", b"KoTeK")
    # Without ::i, only a text file (matched lower-cased too, as ClamAV does) would match.
    assert not ldb_hit(f"NI;Target:0;0;{KOTEK}", b"\x00KoTeK")
    assert ldb_hit(f"NI;Target:0;0;{KOTEK}", b"a KoTeK")
    # ::w wide (UTF-16LE); ::wa wide or ascii
    wide = "kotek".encode("utf-16-le")
    assert ldb_hit(f"W;Target:0;0;{KOTEK}::w", b"xx" + wide)
    assert not ldb_hit(f"W;Target:0;0;{KOTEK}::w", b"xx kotek")
    assert ldb_hit(f"WA;Target:0;0;{KOTEK}::wa", b"xx kotek")
    assert ldb_hit(f"WA;Target:0;0;{KOTEK}::wa", b"xx" + wide)
    # ::f full word
    assert ldb_hit(f"F;Target:0;0;{KOTEK}::f", b"a kotek.")
    assert not ldb_hit(f"F;Target:0;0;{KOTEK}::f", b"kotekz")
    assert ldb_hit(f"IF;Target:0;0;{KOTEK}::fi", b"(KOTEK)")


def test_subsig_wildcards() -> None:
    assert ldb_hit("WC;Target:0;0;6b6f??656b{-3}616c61", b"koXek..ala")
    assert not ldb_hit("WC;Target:0;0;6b6f??656b{-3}616c61", b"koXek....ala")


def test_pcre_subsignature_with_trigger() -> None:
    line = f"P;Target:0;0&1;{KOTEK};0/kot[a-z]k\\s+\\d+/i"
    assert ldb_hit(line, b"kotek KOTAK 42")
    assert not ldb_hit(line, b"kotek alone")


def test_bad_ldb_lines_reported() -> None:
    lines = [
        f"Good;Target:0;0;{KOTEK}",
        "NoSubs;Target:0;0",
        f"BadIdx;Target:0;0&5;{KOTEK}",
        f"BadExpr;Target:0;0&&1;{KOTEK};{ALA}",
        f"BadKey;Target:0,Colour:red;0;{KOTEK}",
        f"BadMod;Target:0;0;{KOTEK}::z",
        "BadHex;Target:0;0;6b6fzz",
        f"Paren;Target:0;(0&1;{KOTEK};{ALA}",
    ]
    db = db_of(t_ldb="\n".join(lines))
    assert db.stats["ldb"] == 1
    by_line = {r.line: r.reason for r in db.rejected}
    assert sorted(by_line) == [2, 3, 4, 5, 6, 7, 8]
    assert "Subsig0" in by_line[2]
    assert "subsignature 5" in by_line[3]
    assert "unexpected" in by_line[4]
    assert "Colour" in by_line[5]
    assert "modifier" in by_line[6]
    assert "subsignature 0" in by_line[7]
    assert "')'" in by_line[8]


def test_container_key_limits_a_signature_to_members_of_that_container() -> None:
    from sig_testlib import make_targz, make_zip

    from vmshield.engines.file.scanner import Scanner

    db = db_of(t_ldb=f"InZip;Target:0,Container:CL_TYPE_ZIP;0;{KOTEK}\n")
    s = Scanner(db)
    assert [
        d.inner_path for d in s.scan_bytes(make_zip({"a.txt": b"kotek"}), "a.zip").detections
    ] == ["a.txt"]
    assert not s.scan_bytes(make_targz({"a.txt": b"kotek"}), "a.tgz").detections
    assert not s.scan_bytes(b"kotek on its own", "a.txt").detections
    bad = db_of(t_ldb=f"X;Target:0,Container:CL_TYPE_AUTOIT;0;{KOTEK}\n")
    assert "CL_TYPE_AUTOIT" in bad.rejected[0].reason
