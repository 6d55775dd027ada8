"""Builders for container test data (every archive is made by the test, never stored) and a
small recursive walk that finds EICAR through `open_container`, standing in for the scanner."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import shutil
import struct
import subprocess
import tarfile
import zipfile
import zlib
from pathlib import Path

from vmshield.engines.file.containers import open_container
from vmshield.engines.file.limits import LimitExceeded, Limits, ScanBudget

# The standard 68-byte EICAR test string, assembled so this file is not itself a detection.
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
assert len(EICAR) == 68


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


def find_eicar(
    data: bytes, name: str = "top", limits: Limits | None = None
) -> dict[str, list[str]]:
    """Walk containers recursively; return {'found': [inner paths], 'errors': [...], 'encrypted': [...]}."""
    budget = ScanBudget(limits or Limits())
    out: dict[str, list[str]] = {"found": [], "errors": [], "encrypted": [], "limit": []}

    def rec(blob: bytes, path: str, depth: int) -> None:
        budget.check_depth(depth)
        budget.charge_file(len(blob))
        if EICAR in blob[:4096] and blob.startswith(b"X5O!"):
            out["found"].append(path)
        it = open_container(blob, path.rsplit("//", 1)[-1], budget)
        if it is None:
            return
        for m in it:
            inner = f"{path}//{m.name}" if path else m.name
            if m.error:
                out["errors"].append(f"{inner}: {m.error}")
            if m.encrypted:
                out["encrypted"].append(inner)
            if m.data is not None:
                rec(m.data, inner, depth + 1)

    try:
        rec(data, "", 0)
    except LimitExceeded as exc:
        out["limit"].append(exc.limit)
    return out


def inner_paths(data: bytes) -> list[str]:
    return find_eicar(data)["found"]


# --- builders ------------------------------------------------------------------------------


def make_zip(files: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", method) as z:
        for n, d in files.items():
            z.writestr(n, d)
    return b.getvalue()


def make_tar(files: dict[str, bytes], mode: str = "w") -> bytes:
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode=mode) as t:  # type: ignore[call-overload]
        for n, d in files.items():
            ti = tarfile.TarInfo(n)
            ti.size = len(d)
            t.addfile(ti, io.BytesIO(d))
    return b.getvalue()


def make_7z(files: dict[str, bytes], tmp: Path, password: str | None = None) -> bytes:
    import py7zr

    p = tmp / "a.7z"
    with py7zr.SevenZipFile(p, "w", password=password) as z:
        if password:
            z.set_encrypted_header(False)
        for n, d in files.items():
            z.writestr(d, n)
    return p.read_bytes()


def _tree(files: dict[str, bytes], tmp: Path) -> Path:
    root = tmp / "tree"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir()
    for n, d in files.items():
        f = root / n
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(d)
    return root


def _run(args: list[str], cwd: Path, stdin: bytes | None = None) -> bytes:
    r = subprocess.run(args, cwd=cwd, input=stdin, capture_output=True, timeout=60, check=True)
    return r.stdout


def make_cab(files: dict[str, bytes], tmp: Path) -> bytes:
    root = _tree(files, tmp)
    _run(["gcab", "-c", "-z", str(tmp / "a.cab"), *files], cwd=root)
    return (tmp / "a.cab").read_bytes()


def make_arj(files: dict[str, bytes], tmp: Path) -> bytes:
    root = _tree(files, tmp)
    out = tmp / "a.arj"
    out.unlink(missing_ok=True)
    _run(["arj", "a", "-y", str(out), *files], cwd=root)
    return out.read_bytes()


def make_iso(files: dict[str, bytes], tmp: Path) -> bytes:
    root = _tree(files, tmp)
    out = tmp / "a.iso"
    _run(["xorriso", "-as", "mkisofs", "-quiet", "-R", "-J", "-o", str(out), str(root)], cwd=tmp)
    return out.read_bytes()


def make_cpio(files: dict[str, bytes], tmp: Path, fmt: str = "newc") -> bytes:
    root = _tree(files, tmp)
    names = "".join(f"{n}\n" for n in files).encode()
    return _run(["cpio", "-o", "--quiet", "-H", fmt], cwd=root, stdin=names)


def make_7zz_zip(files: dict[str, bytes], tmp: Path, method: str) -> bytes:
    root = _tree(files, tmp)
    out = tmp / "a.zip"
    out.unlink(missing_ok=True)
    _run(["7zz", "a", "-bd", "-tzip", f"-mm={method}", str(out), *files], cwd=root)
    return out.read_bytes()


def make_rar4(files: dict[str, bytes]) -> bytes:
    """A stored (method 0x30) RAR 4 archive written from the format's technote: no RAR writer
    exists on Debian, and libarchive cannot write RAR."""

    def block(htype: int, flags: int, body: bytes) -> bytes:
        head = struct.pack("<BHH", htype, flags, 7 + len(body)) + body
        return struct.pack("<H", zlib.crc32(head) & 0xFFFF) + head

    out = bytearray(b"Rar!\x1a\x07\x00")
    out += block(0x73, 0, b"\x00" * 6)
    for name, data in files.items():
        nb = name.encode()
        hdr = struct.pack(
            "<IIBIIBBHI",
            len(data),
            len(data),
            3,
            zlib.crc32(data),
            0x5A000000,
            20,
            0x30,
            len(nb),
            0o100644,
        )
        out += block(0x74, 0x8000, hdr + nb) + data
    out += block(0x7B, 0x4000, b"")
    return bytes(out)


def gz(data: bytes) -> bytes:
    return gzip.compress(data)


def bz(data: bytes) -> bytes:
    return bz2.compress(data)


def xz(data: bytes) -> bytes:
    return lzma.compress(data)
