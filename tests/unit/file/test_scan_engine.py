"""Scanner: one read, containers recursively, limits reported, bad files never end a scan."""

from __future__ import annotations

import io
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from sig_testlib import EICAR, EICAR_MD5, db_of, make_targz, make_zip

from vmshield.engines.file.limits import Limits
from vmshield.engines.file.results import Status
from vmshield.engines.file.scanner import Scanner

DB = db_of(
    t_hdb=f"{EICAR_MD5}:68:Eicar.Hash\n",
    t_ndb="Eicar.Body:0:*:" + EICAR[10:40].hex() + "\n",
)


def test_eicar_plain_and_clean() -> None:
    s = Scanner(DB)
    r = s.scan_bytes(EICAR, "eicar.com")
    assert r.status is Status.INFECTED
    assert {(d.name, d.inner_path, d.engine) for d in r.detections} == {
        ("Eicar.Hash", "", "hash"),
        ("Eicar.Body", "", "body"),
    }
    assert r.db_version == DB.version and r.size == 68
    clean = s.scan_bytes(b"just text\n", "a.txt")
    assert clean.status is Status.CLEAN and not clean.detections


def test_nested_three_deep_shows_inner_path() -> None:
    inner = make_targz({"bin/x.exe": EICAR, "bin/ok": b"fine"})
    middle = make_zip({"dir/b.tar.gz": inner, "readme": b"hello"})
    outer = make_zip({"pkg/middle.zip": middle})
    r = Scanner(DB).scan_bytes(outer, "a.zip")
    assert r.status is Status.INFECTED
    paths = {d.inner_path for d in r.detections}
    assert paths == {"pkg/middle.zip//dir/b.tar.gz//bin/x.exe"}


def test_containers_off_sees_only_outer_bytes() -> None:
    r = Scanner(DB, containers=False).scan_bytes(make_zip({"e": EICAR}), "a.zip")
    assert r.status is Status.CLEAN  # deflated: the EICAR bytes are not in the outer file


def test_max_recursion_is_reported_not_clean() -> None:
    data = EICAR
    for i in range(6):
        data = make_zip({f"l{i}.zip" if i else "e.com": data})
    r = Scanner(DB, Limits(max_recursion=3)).scan_bytes(data, "deep.zip")
    assert r.status is Status.LIMITS_EXCEEDED
    assert r.limit == "max_recursion"
    assert r.limit_path is not None and r.limit_path.count("//") >= 2
    # With the default limits, the same file is found infected five levels down.
    r = Scanner(DB).scan_bytes(data, "deep.zip")
    assert r.status is Status.INFECTED
    assert r.detections[0].inner_path.count("//") == 5


def test_infected_beats_limit_and_siblings_still_scanned() -> None:
    big = make_zip({"big.bin": b"A" * 5000})
    data = make_zip({"big.zip": big, "eicar.com": EICAR})
    r = Scanner(DB, Limits(max_file_size=4000)).scan_bytes(data, "mix.zip")
    assert r.status is Status.INFECTED  # worst wins
    assert r.limit == "max_file_size" and r.limit_path == "big.zip"
    assert [d.inner_path for d in r.detections] == ["eicar.com", "eicar.com"]


def test_max_files_and_scan_size(tmp_path: Path) -> None:
    data = make_zip({f"f{i}.txt": b"x" * 100 for i in range(50)})
    r = Scanner(DB, Limits(max_files=10)).scan_bytes(data, "many.zip")
    assert r.status is Status.LIMITS_EXCEEDED and r.limit == "max_files"
    r = Scanner(DB, Limits(max_scan_size=2000)).scan_bytes(data, "many.zip")
    assert r.status is Status.LIMITS_EXCEEDED and r.limit == "max_scan_size"


def test_max_scan_time_with_a_fake_clock() -> None:
    ticks = iter(range(0, 10_000, 10))
    data = make_zip({f"f{i}.txt": b"x" for i in range(20)})
    r = Scanner(DB, Limits(max_scan_time=25), clock=lambda: float(next(ticks))).scan_bytes(
        data, "z"
    )
    assert r.status is Status.LIMITS_EXCEEDED and r.limit == "max_scan_time"


def test_top_level_file_over_max_filesize_is_not_read(tmp_path: Path) -> None:
    p = tmp_path / "big.bin"
    p.write_bytes(EICAR + b"\0" * 2000)
    r = Scanner(DB, Limits(max_file_size=1000)).scan_path(p)
    assert r.status is Status.LIMITS_EXCEEDED and r.limit == "max_file_size"
    assert r.hashes is None and r.size == 2068


def test_truncated_archive_gives_error_status_and_keeps_what_was_read() -> None:
    data = make_zip({"a.txt": b"hello" * 100, "eicar.com": EICAR})
    cut = data[: len(data) // 2]
    r = Scanner(DB).scan_bytes(cut, "cut.zip")
    assert r.status in (Status.ERROR, Status.INFECTED, Status.CLEAN)
    assert r.status is not Status.CLEAN or not r.errors
    # Garbage pretending to be a zip: an error, named, never an exception.
    r = Scanner(DB).scan_bytes(b"PK\x03\x04" + b"\xff" * 200, "bad.zip")
    assert r.status is Status.ERROR and r.errors


@pytest.mark.skipif(shutil.which("zip") is None, reason="zip not installed")
def test_encrypted_member_reported(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_bytes(b"top secret " * 10)
    subprocess.run(
        ["zip", "-q", "-P", "pw", str(tmp_path / "enc.zip"), "secret.txt"], cwd=tmp_path, check=True
    )
    r = Scanner(DB).scan_path(tmp_path / "enc.zip")
    assert r.status is Status.ENCRYPTED
    assert r.encrypted == ["secret.txt"]


def test_scan_path_errors_are_results(tmp_path: Path) -> None:
    s = Scanner(DB)
    r = s.scan_path(tmp_path / "missing")
    assert r.status is Status.ERROR and "No such file" in r.errors[0]
    r = s.scan_path(tmp_path)
    assert r.status is Status.ERROR and "regular file" in r.errors[0]


def test_fp_allow_list_applies_inside_containers() -> None:
    db = db_of(t_hdb=f"{EICAR_MD5}:68:Eicar.Hash\n", t_fp=f"{EICAR_MD5}:68:Allowed\n")
    r = Scanner(db).scan_bytes(make_zip({"e.com": EICAR}), "a.zip")
    assert r.status is Status.CLEAN


def test_yara_prefilter_never_hides_a_rule() -> None:
    db = db_of(
        a_yar='rule Gated { strings: $a = "needle-in-haystack" condition: $a }\n',
        b_yar="rule Ungated { condition: filesize == 13 }\n",
    )
    s = Scanner(db)
    assert {d.name for d in s.scan_bytes(b"13 bytes long", "x").detections} == {"Ungated"}
    assert {d.name for d in s.scan_bytes(b"a needle-in-haystack", "x").detections} == {"Gated"}
    only_gated = db_of(a_yar='rule Gated { strings: $a = "needle-in-haystack" condition: $a }\n')
    assert not only_gated.yara_always and only_gated.yara_anchors
    s = Scanner(only_gated)
    assert not s.scan_bytes(b"hay " * 100, "x").detections
    assert {d.name for d in s.scan_bytes(b"hay needle-in-haystack hay", "x").detections} == {
        "Gated"
    }


def test_zip_member_names_cannot_escape(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("../../etc/evil.com", EICAR)
    r = Scanner(DB).scan_bytes(buf.getvalue(), "evil.zip")
    assert r.status is Status.INFECTED
    assert all(".." not in d.inner_path.split("/") for d in r.detections)


def test_failed_carve_in_an_executable_is_not_an_error() -> None:
    # Go binaries hold archive magic bytes as constants: a carve that fails is a guess, not an error.
    elf = b"\x7fELF" + b"\x00" * 200 + b"Rar!\x1a\x07\x00" + b"\x00" * 100
    r = Scanner(DB).scan_bytes(elf, "tool")
    assert r.status is Status.CLEAN
    assert r.errors and all(e.startswith("(speculative)") for e in r.errors)
    # A real self-extracting archive still has its content scanned and detected.
    sfx = b"MZ" + b"\x00" * 200 + make_zip({"payload/e.com": EICAR})
    r = Scanner(DB).scan_bytes(sfx, "setup.exe")
    assert r.status is Status.INFECTED
    assert any(d.inner_path.endswith("//payload/e.com") for d in r.detections)


@pytest.mark.timeout(120)
def test_slow_yara_rule_hits_the_time_limit_not_clean() -> None:
    rule = "rule Slow { condition: for all i in (0..filesize-1) : ( for all j in (0..1000) : ( uint8(i) != 256 ) ) }"
    db = db_of(slow_yar=rule)
    r = Scanner(db, Limits(max_scan_time=1.5)).scan_bytes(b"x" * 200_000, "slow")
    assert r.status is Status.LIMITS_EXCEEDED and r.limit == "max_scan_time"


@pytest.mark.skipif(shutil.which("zip") is None, reason="zip not installed")
def test_encrypted_self_extracting_archive_is_encrypted(tmp_path: Path) -> None:
    (tmp_path / "payload.bin").write_bytes(b"secret payload " * 20)
    subprocess.run(
        ["zip", "-q", "-P", "pw", str(tmp_path / "p.zip"), "payload.bin"], cwd=tmp_path, check=True
    )
    sfx = b"MZ" + b"\x00" * 300 + (tmp_path / "p.zip").read_bytes()
    r = Scanner(DB).scan_bytes(sfx, "setup.exe")
    assert r.status is Status.ENCRYPTED
    assert r.encrypted and r.encrypted[0].endswith("//payload.bin")
