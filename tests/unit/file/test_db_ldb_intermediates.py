"""`Intermediates:A>B` in the target block: the innermost containers holding the file, outermost
first, CL_TYPE_ANY for any type. The semantics were read off Debian's clamscan with the same
database (the last test compares): a suffix of the chain from the scanned file down, so
`CL_TYPE_POSIX_TAR` matches a file in a tar inside a zip, `CL_TYPE_ANY>CL_TYPE_ZIP` does not match
a file directly in a top-level zip."""

from __future__ import annotations

import io
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest
from sig_testlib import clamscan, db_of, write_db

from vmshield.engines.file.database import Database
from vmshield.engines.file.scanner import Scanner

MARK = b"MARKER-INTERMEDIATE-PAYLOAD-0123456789 " * 3
SIGS = {
    "A": "CL_TYPE_ZIP>CL_TYPE_POSIX_TAR",
    "B": "CL_TYPE_POSIX_TAR>CL_TYPE_ZIP",
    "C": "CL_TYPE_POSIX_TAR",
    "D": "CL_TYPE_ZIP",
    "E": "CL_TYPE_ANY>CL_TYPE_POSIX_TAR",
    "F": "CL_TYPE_ANY>CL_TYPE_ZIP",
}
LDB = "".join(
    f"I.{k};Engine:81-255,Target:0,Intermediates:{v};0;{MARK[:19].hex()}\n" for k, v in SIGS.items()
)


def _tar(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        ti = tarfile.TarInfo(name)
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def _zip(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:  # stored: the member's bytes show in the zip too
        z.writestr(name, data)
    return buf.getvalue()


FILES = {
    "ztx.zip": _zip("in.tar", _tar("x.bin", MARK)),  # zip > tar > x.bin
    "zx.zip": _zip("x.bin", MARK),
    "tx.tar": _tar("x.bin", MARK),
    "tzx.tar": _tar("in.zip", _zip("x.bin", MARK)),  # tar > zip > x.bin
}
# Uncompressed containers carry the marker themselves: "in.tar" inside the zip (chain ZIP)
# matches D, "in.zip" inside the tar (chain TAR) matches C, as in clamscan.
EXPECTED = {
    "ztx.zip": {
        ("I.A", "in.tar//x.bin"),
        ("I.C", "in.tar//x.bin"),
        ("I.E", "in.tar//x.bin"),
        ("I.D", "in.tar"),
    },
    "zx.zip": {("I.D", "x.bin")},
    "tx.tar": {("I.C", "x.bin")},
    "tzx.tar": {
        ("I.B", "in.zip//x.bin"),
        ("I.D", "in.zip//x.bin"),
        ("I.F", "in.zip//x.bin"),
        ("I.C", "in.zip"),
    },
}


def test_intermediates_chain_suffix() -> None:
    db = db_of(t_ldb=LDB)
    assert not db.rejected, db.rejected
    scanner = Scanner(db)
    for name, data in FILES.items():
        got = {(d.name, d.inner_path) for d in scanner.scan_bytes(data, name).detections}
        assert got == EXPECTED[name], name
    assert not scanner.scan_bytes(MARK, "plain").detections


def test_bad_intermediates_rejected() -> None:
    db = db_of(t_ldb=f"X;Target:0,Intermediates:CL_TYPE_ZIP>CL_TYPE_NOPE;0;{MARK[:8].hex()}\n")
    assert "CL_TYPE_NOPE" in db.rejected[0].reason


@pytest.mark.skipif(shutil.which("clamscan") is None, reason="clamscan not installed")
def test_agrees_with_clamscan(tmp_path: Path) -> None:
    db_dir = write_db(tmp_path / "db", {"t.ldb": LDB})
    paths = []
    for name, data in FILES.items():
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    scanner = Scanner(Database.load(db_dir))
    ours = {p.name: {d.name for d in scanner.scan_path(p).detections} for p in paths}
    theirs = clamscan(db_dir, paths)
    assert ours == theirs == {k: {n for n, _ in v} for k, v in EXPECTED.items()}
