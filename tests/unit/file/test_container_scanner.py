"""The containers through the real scanner (`Scanner(db, limits).scan_bytes`), as users see them:
status, detections with inner paths, the limit named."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest
from container_testlib import (
    EICAR,
    make_7z,
    make_cpio,
    make_iso,
    make_ole2,
    make_rar4,
    make_tar,
    make_tnef,
    make_zip,
    ole10native,
)

from vmshield.engines.file.limits import Limits
from vmshield.engines.file.results import Status

scanner_mod = pytest.importorskip("vmshield.engines.file.scanner")
database_mod = pytest.importorskip("vmshield.engines.file.database")
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def scanner():  # type: ignore[no-untyped-def]
    # A body signature and a hash signature, as a user's own database would hold them.
    db = database_mod.Database.from_texts(
        {
            "test.ndb": f"Eicar-Body:0:0:{EICAR[:40].hex()}\n",
            "test.hdb": f"{hashlib.md5(EICAR).hexdigest()}:{len(EICAR)}:Eicar-Hash\n",
        }
    )
    return scanner_mod.Scanner(db, Limits())


def paths(result) -> set[str]:  # type: ignore[no-untyped-def]
    return {d.inner_path for d in result.detections}


def test_nested_three_deep_through_scanner(scanner, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    seven = make_7z({"deep/eicar.com": EICAR}, tmp_path)
    tgz = make_tar({"mid/inner.7z": seven}, "w:gz")
    top = make_zip({"outer/b.tar.gz": tgz, "clean.txt": b"ok"})
    r = scanner.scan_bytes(top, "a.zip")
    assert r.status == Status.INFECTED
    assert paths(r) == {"outer/b.tar.gz//mid/inner.7z//deep/eicar.com"}
    assert {d.name for d in r.detections} >= {"Eicar-Body"}


def test_iso_cpio_rar_ole_tnef_chain(scanner, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ole = make_ole2({"ObjectPool/_1/\x01Ole10Native": ole10native("drop.exe", EICAR)})
    tnef = make_tnef({"doc.doc": ole})
    rar = make_rar4({"winmail.dat": tnef})
    cpio = make_cpio({"r.rar": rar}, tmp_path)
    iso = make_iso({"c.cpio": cpio}, tmp_path)
    r = scanner.scan_bytes(iso, "disk.iso")
    assert r.status == Status.INFECTED
    assert "c.cpio//r.rar//winmail.dat//doc.doc//ObjectPool/_1/drop.exe" in paths(r)


def test_clean_archive_is_clean(scanner) -> None:  # type: ignore[no-untyped-def]
    r = scanner.scan_bytes(make_zip({"a.txt": b"hello", "b/c.txt": b"world"}), "ok.zip")
    assert r.status == Status.CLEAN and r.detections == []


def test_bomb_reported_as_limits_exceeded(scanner) -> None:  # type: ignore[no-untyped-def]
    r = scanner.scan_bytes(make_zip({"zeros": b"\x00" * 40 * MiB}), "bomb.zip")
    assert r.status == Status.LIMITS_EXCEEDED and r.limit == "bomb_ratio"


def test_overlap_reported(scanner) -> None:  # type: ignore[no-untyped-def]
    import struct

    from vmshield.engines.file.containers.zipfmt import read_directory

    blob = make_zip({"k.bin": b"A" * 1000})
    d = read_directory(blob)
    cen = blob[d.cd_offset : d.cd_offset + d.cd_size]
    recs = b""
    for i in range(3):
        rec = bytearray(cen[:46]) + b"k%d" % i
        struct.pack_into("<HHH", rec, 28, 2, 0, 0)
        recs += rec
    bomb = (
        blob[: d.cd_offset]
        + recs
        + struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 3, 3, len(recs), d.cd_offset, 0)
    )
    r = scanner.scan_bytes(bomb, "overlap.zip")
    assert r.status == Status.LIMITS_EXCEEDED and r.limit == "zip_overlap"


def test_deep_nesting(scanner) -> None:  # type: ignore[no-untyped-def]
    blob = EICAR
    for i in range(20):
        blob = make_zip({f"l{i}.zip" if i else "e.com": blob})
    r = scanner.scan_bytes(blob, "deep.zip")
    assert r.status == Status.LIMITS_EXCEEDED and r.limit == "max_recursion"


def test_encrypted_member(scanner, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = scanner.scan_bytes(make_7z({"e.com": EICAR}, tmp_path, password="pw"), "enc.7z")
    assert r.status == Status.ENCRYPTED and r.encrypted == ["e.com"]


def test_truncated_archive_reports_error_and_what_was_read(scanner) -> None:  # type: ignore[no-untyped-def]
    import os

    blob = make_zip({"e.com": EICAR, "pad.bin": os.urandom(30000)}, zipfile.ZIP_STORED)
    r = scanner.scan_bytes(blob[:-20000], "cut.zip")
    assert r.status == Status.INFECTED  # the first member was still read
    assert paths(r) == {"e.com"}
    assert any("truncated" in e for e in r.errors)


def test_malware_next_to_a_bomb_is_still_found(scanner) -> None:  # type: ignore[no-untyped-def]
    top = make_zip({"a-bomb.bin": b"\x00" * 40 * MiB, "b/e.com": EICAR, "c.txt": b"ok"})
    r = scanner.scan_bytes(top, "mixed.zip")
    assert r.status == Status.INFECTED
    assert paths(r) == {"b/e.com"}
    assert r.limit == "bomb_ratio"  # the bomb is still reported
