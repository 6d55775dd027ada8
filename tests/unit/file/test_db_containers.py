"""Database files: .cvd/.cld built by the test, YARA, directories, version, pickling."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

from sig_testlib import EICAR, EICAR_MD5, db_of, names

from vmshield.engines.file.database import Database
from vmshield.engines.file.signatures import cvd


def _members() -> dict[str, bytes]:
    return {
        "main.hdb": f"{EICAR_MD5}:68:Cvd.Eicar.Hash\n".encode(),
        "main.ndb": ("Cvd.Eicar.Body:0:*:" + EICAR[:24].hex() + "\n").encode(),
        "main.info": b"whatever\n",
    }


def test_cvd_loads_members_and_checks_md5(tmp_path: Path) -> None:
    raw = cvd.build(_members(), version=42)
    (tmp_path / "main.cvd").write_bytes(raw)
    db = Database.load(tmp_path / "main.cvd")
    assert not db.rejected
    assert db.stats["md5"] == 1 and db.stats["ndb"] == 1
    assert names(db, EICAR) == {"Cvd.Eicar.Hash", "Cvd.Eicar.Body"}
    # One flipped byte in the archive: the header MD5 no longer matches, the file is refused.
    bad = bytearray(raw)
    bad[-10] ^= 0xFF
    (tmp_path / "main.cvd").write_bytes(bytes(bad))
    db = Database.load(tmp_path / "main.cvd")
    assert db.signature_count == 0
    assert len(db.rejected) == 1 and "MD5" in db.rejected[0].reason


def test_cld_plain_tar_loads(tmp_path: Path) -> None:
    (tmp_path / "daily.cld").write_bytes(cvd.build(_members(), compress=False))
    db = Database.load(tmp_path)
    assert not db.rejected and db.stats["md5"] == 1


def test_bad_cvd_headers(tmp_path: Path) -> None:
    (tmp_path / "a.cvd").write_bytes(b"NotClamAV:" + b" " * 600)
    (tmp_path / "b.cvd").write_bytes(b"short")
    body = gzip.compress(b"not a tar")
    hdr = f"ClamAV-VDB:x:1:1:200:{'0' * 32}:X:me:0".encode().ljust(512, b" ")
    (tmp_path / "c.cld").write_bytes(hdr + body)
    db = Database.load(tmp_path)
    reasons = {Path(r.file).name: r.reason for r in db.rejected}
    assert "ClamAV-VDB" in reasons["a.cvd"]
    assert "shorter" in reasons["b.cvd"]
    assert "tar" in reasons["c.cld"]


def test_cvd_member_errors_name_the_member(tmp_path: Path) -> None:
    m = _members()
    m["main.ndb"] += b"Broken:0:*:zz\n"
    (tmp_path / "main.cvd").write_bytes(cvd.build(m))
    db = Database.load(tmp_path)
    assert [(r.file, r.line) for r in db.rejected] == [(f"{tmp_path}/main.cvd//main.ndb", 2)]


def test_yara_rules_and_bad_yara_file() -> None:
    rule = 'rule EicarYara { strings: $a = "EICAR-STANDARD" condition: $a }\n'
    db = db_of(a_yar=rule, b_yara='rule Broken {\n  strings: $a = "x"\n  condition: $b\n}\n')
    assert db.stats["yara"] == 1
    assert len(db.rejected) == 1
    r = db.rejected[0]
    assert r.file == "b.yara" and r.line == 4 and "not loaded" in r.reason
    assert names(db, EICAR) == {"EicarYara"}


def test_directory_loading_unknown_files_and_missing_paths(tmp_path: Path) -> None:
    (tmp_path / "a.hdb").write_text(f"{EICAR_MD5}:68:A\n")
    (tmp_path / "notes.txt").write_text("hello\n")
    (tmp_path / "x.info").write_text("info\n")
    db = Database.load([tmp_path, tmp_path / "missing.ndb"])
    assert db.stats["md5"] == 1
    reasons = {Path(r.file).name: r.reason for r in db.rejected}
    assert "unknown database type" in reasons["notes.txt"]
    assert "no such file" in reasons["missing.ndb"]
    assert any(f.endswith("x.info") for f in db.ignored_files)


def test_version_changes_with_content_only(tmp_path: Path) -> None:
    (tmp_path / "a.hdb").write_text(f"{EICAR_MD5}:68:A\n")
    v1 = Database.load(tmp_path).version
    assert Database.load(tmp_path).version == v1
    (tmp_path / "a.hdb").write_text(f"{EICAR_MD5}:68:B\n")
    v2 = Database.load(tmp_path).version
    assert v2 != v1


def test_database_pickles_for_worker_processes() -> None:
    db = db_of(
        a_hdb=f"{EICAR_MD5}:68:H\n",
        a_ndb="B:0:*:" + EICAR[:20].hex() + "\n",
        a_ldb="L;Target:0;0&1;" + b"EICAR".hex() + ";" + b"TEST-FILE".hex() + "\n",
        a_yar='rule Y { strings: $a = "ANTIVIRUS" condition: $a }\n',
    )
    clone = pickle.loads(pickle.dumps(db))
    assert clone.version == db.version
    assert names(clone, EICAR) == names(db, EICAR) == {"H", "B", "L", "Y"}
