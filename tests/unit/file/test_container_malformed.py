"""Malformed and truncated containers: what could be read, then a clear error; never an exception.
Hostile member names never escape."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest
from container_testlib import EICAR, find_eicar, make_7z, make_rar4, make_tar, make_zip

from vmshield.engines.file.containers import open_container, sanitize_name
from vmshield.engines.file.limits import Limits, ScanBudget


def drain(blob: bytes, name: str = "x") -> list:  # type: ignore[no-untyped-def]
    it = open_container(blob, name, ScanBudget(Limits()))
    assert it is not None
    return list(it)


def test_truncated_zip_yields_readable_members_then_error() -> None:
    blob = make_zip({"first/eicar.com": EICAR, "second.bin": os.urandom(20000)}, zipfile.ZIP_STORED)
    cut = blob[: len(blob) - 15000]
    ms = drain(cut)
    assert ms[0].name == "first/eicar.com" and ms[0].data == EICAR
    assert any(m.error and "truncated" in m.error for m in ms)


def test_corrupt_crc_reported_with_data() -> None:
    blob = bytearray(make_zip({"a.txt": b"hello world" * 10}, zipfile.ZIP_STORED))
    i = blob.index(b"hello")
    blob[i] ^= 0xFF
    (m,) = drain(bytes(blob))
    assert m.error == "CRC mismatch"
    assert m.data is not None


def test_truncated_tar_gz() -> None:
    blob = make_tar({"a/eicar.com": EICAR, "b.bin": os.urandom(50000)}, "w:gz")
    r = find_eicar(blob[: len(blob) // 2])
    assert r["errors"], "truncation must be reported"


@pytest.mark.parametrize(
    "kind", ["zip", "7z", "rar", "tar.gz", "gzip", "xz", "bzip2", "cab", "ole2", "pdf"]
)
def test_garbage_after_magic_is_an_error_not_a_crash(kind: str, tmp_path: Path) -> None:
    magic = {
        "zip": b"PK\x03\x04",
        "7z": b"7z\xbc\xaf\x27\x1c",
        "rar": b"Rar!\x1a\x07\x00",
        "tar.gz": b"\x1f\x8b\x08\x00",
        "gzip": b"\x1f\x8b",
        "xz": b"\xfd7zXZ\x00",
        "bzip2": b"BZh91AY&SY",
        "cab": b"MSCF",
        "ole2": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
        "pdf": b"%PDF-1.7\n",
    }[kind]
    blob = magic + os.urandom(3000)
    it = open_container(blob, "bad", ScanBudget(Limits()))
    assert it is not None
    ms = list(it)
    assert all(m.data is None or isinstance(m.data, bytes) for m in ms)
    assert any(m.error for m in ms), f"{kind}: malformed input must be reported"


def test_truncated_7z_and_rar(tmp_path: Path) -> None:
    for blob in (
        make_7z({"e.com": EICAR, "r": os.urandom(5000)}, tmp_path),
        make_rar4({"e.com": EICAR, "r": os.urandom(5000)}),
    ):
        r = find_eicar(blob[: len(blob) - 3000])
        assert r["errors"]


HOSTILE = [
    "../../etc/passwd",
    "/etc/shadow",
    "a/../../../b",
    "C:\\Windows\\evil.exe",
    "..\\..\\x.bat",
    "ok\x00.txt.exe",
    "a/./b/\x01c",
]


def _check_safe(name: str) -> None:
    assert not name.startswith("/")
    assert ".." not in name.split("/")
    assert "\x00" not in name and "\\" not in name
    assert not any(ord(c) < 32 for c in name)
    assert not (len(name) > 1 and name[1] == ":")


def test_sanitize_name_cases() -> None:
    assert sanitize_name("../../etc/passwd") == "etc/passwd"
    assert sanitize_name("/etc/shadow") == "etc/shadow"
    assert sanitize_name("C:\\Windows\\evil.exe") == "Windows/evil.exe"
    assert sanitize_name("ok\x00.txt.exe") == "ok"
    assert sanitize_name("../..") == "member"
    for n in HOSTILE:
        _check_safe(sanitize_name(n))


def test_hostile_zip_names_cannot_escape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w") as z:
        for i, n in enumerate(HOSTILE):
            zi = zipfile.ZipInfo("x")
            zi.filename = n  # ZipInfo() would normalise the name; write the raw one
            z.writestr(zi, b"%d" % i)
    ms = drain(b.getvalue())
    assert len(ms) == len(HOSTILE)
    for m in ms:
        _check_safe(m.name)
    assert list(tmp_path.iterdir()) == []  # nothing written anywhere


def test_hostile_tar_names_cannot_escape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w", format=tarfile.GNU_FORMAT) as t:
        for n in HOSTILE:
            ti = tarfile.TarInfo(n)
            ti.size = 1
            t.addfile(ti, io.BytesIO(b"z"))
    for m in drain(b.getvalue()):
        _check_safe(m.name)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_duplicate_names_stay_distinct() -> None:
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w") as z:
        z.writestr("a.txt", b"1")
        z.writestr("a.txt", b"2")
        z.writestr("../a.txt", b"3")
    names = [m.name for m in drain(b.getvalue())]
    assert len(set(names)) == 3


def test_scan_continues_after_bad_member() -> None:
    good = make_zip({"e.com": EICAR})
    top = make_zip({"bad.zip": b"PK\x03\x04" + os.urandom(100), "good.zip": good})
    r = find_eicar(top)
    assert r["found"] == ["good.zip//e.com"]
    assert any(e.startswith("bad.zip") for e in r["errors"])


def test_mime_part_without_filename_gets_a_safe_name() -> None:
    # Found by fuzzing: the fallback name was built from the attacker's Content-Type subtype.
    mail = (
        b"From: a@example.org\nSubject: x\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="b"\n\n--b\n'
        b"Content-Type: text/..\\..\\{evil/x\n\nbody\n--b\n"
        b"Content-Type: application/x\x01y\n\nbody2\n--b--\n"
    )
    for m in drain(mail):
        _check_safe(m.name)


def test_hostile_names_in_rar_and_cpio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in HOSTILE:
        for m in drain(make_rar4({name: b"x"})):
            _check_safe(m.name)
    assert list(tmp_path.iterdir()) == []


def test_ole2_with_an_impossible_minifat_is_malformed_not_slow() -> None:
    # Found by fuzzing: a header declaring 150 million mini-FAT sectors made olefile spin.
    import struct

    from container_testlib import make_ole2

    blob = bytearray(make_ole2({"a": b"x" * 100}))
    struct.pack_into("<I", blob, 0x40, 150_000_000)  # csectMiniFat
    struct.pack_into("<I", blob, 0x3C, 0)  # first mini-FAT sector
    ms = drain(bytes(blob))
    assert any(m.error and "mini-FAT" in m.error for m in ms)
