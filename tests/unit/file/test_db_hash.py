"""Hash signatures (.hdb/.hsb) and allow-lists (.fp/.sfp), as in ClamAV's HashSignatures.md."""

from __future__ import annotations

import hashlib

from sig_testlib import EICAR, EICAR_MD5, db_of, names

from vmshield.engines.file.scanner import Scanner


def test_hdb_md5_size_name_detects_eicar() -> None:
    # HashSignatures.md: `sigtool --md5 test.exe > test.hdb` gives MD5:Size:Name lines.
    db = db_of(t_hdb=f"{EICAR_MD5}:68:Eicar-Test-Signature\n")
    assert db.stats["md5"] == 1
    assert names(db, EICAR) == {"Eicar-Test-Signature"}
    assert names(db, EICAR + b"\n") == set()


def test_hdb_size_must_match_and_star_means_any_size() -> None:
    db = db_of(t_hdb=f"{EICAR_MD5}:69:WrongSize\n")
    assert names(db, EICAR) == set()
    # `*` as size (with FLEVEL 73, as the documentation requires) matches any size.
    db = db_of(t_hdb=f"{EICAR_MD5}:*:AnySize:73\n")
    assert names(db, EICAR) == {"AnySize"}


def test_hsb_sha1_and_sha256_told_apart_by_length() -> None:
    sha1 = hashlib.sha1(EICAR).hexdigest()
    sha256 = hashlib.sha256(EICAR).hexdigest()
    db = db_of(t_hsb=f"{sha1}:68:Eicar.SHA1\n{sha256.upper()}:68:Eicar.SHA256\n")
    assert db.stats["sha1"] == 1 and db.stats["sha256"] == 1
    assert names(db, EICAR) == {"Eicar.SHA1", "Eicar.SHA256"}


def test_md5_in_hsb_and_sha_in_hdb_are_rejected_with_line() -> None:
    sha1 = hashlib.sha1(EICAR).hexdigest()
    db = db_of(a_hsb=f"{EICAR_MD5}:68:X\n", b_hdb=f"# comment\n{sha1}:68:Y\n")
    assert [(r.file, r.line) for r in db.rejected] == [("a.hsb", 1), ("b.hdb", 2)]
    assert "MD5" in db.rejected[0].reason and "SHA1" in db.rejected[1].reason


def test_bad_hash_lines_rejected_and_loading_continues() -> None:
    text = "\n".join(
        [
            f"{EICAR_MD5}:68:Good.One",
            "nothex:68:Bad.Hash",
            f"{EICAR_MD5}:sixty:Bad.Size",
            f"{EICAR_MD5}:68",
            f"{EICAR_MD5}:68:",
            f"{EICAR_MD5}:68:Too.New:999",
        ]
    )
    db = db_of(t_hdb=text)
    assert db.stats["md5"] == 1
    assert (
        db.stats["skipped_flevel"] == 1
    )  # a valid line for a newer engine is skipped, not rejected
    lines = {r.line: r.reason for r in db.rejected}
    assert sorted(lines) == [2, 3, 4, 5]
    assert "bad hash" in lines[2] and "size" in lines[3] and "fields" in lines[4]
    assert "name" in lines[5]
    assert names(db, EICAR) == {"Good.One"}


def test_fp_allow_list_suppresses_hash_and_body_detections() -> None:
    files = {
        "t_hdb": f"{EICAR_MD5}:68:Eicar.Hash\n",
        "t_ndb": "Eicar.Body:0:*:" + EICAR[:16].hex() + "\n",
    }
    assert names(db_of(**files), EICAR) == {"Eicar.Hash", "Eicar.Body"}
    db = db_of(**files, t_fp=f"{EICAR_MD5}:68:Known.Good\n")
    assert db.stats["fp"] == 1
    assert names(db, EICAR) == set()
    sha256 = hashlib.sha256(EICAR).hexdigest()
    db = db_of(**files, t_sfp=f"{sha256}:68:Known.Good\n")
    assert names(db, EICAR) == set()
    # The allow-list entry is exact: a different size does not allow the file.
    db = db_of(**files, t_fp=f"{EICAR_MD5}:67:Wrong.Size\n")
    assert names(db, EICAR) == {"Eicar.Hash", "Eicar.Body"}


def test_ign2_drops_signature_by_name() -> None:
    db = db_of(t_hdb=f"{EICAR_MD5}:68:Eicar.Noisy\n", t_ign2="Eicar.Noisy\n")
    assert names(db, EICAR) == set()


def test_scan_result_carries_all_three_hashes() -> None:
    r = Scanner(db_of(t_hdb=f"{EICAR_MD5}:68:E\n")).scan_bytes(EICAR, "eicar.com")
    assert r.hashes is not None
    assert r.hashes.md5 == EICAR_MD5
    assert r.hashes.sha1 == hashlib.sha1(EICAR).hexdigest()
    assert r.hashes.sha256 == hashlib.sha256(EICAR).hexdigest()
