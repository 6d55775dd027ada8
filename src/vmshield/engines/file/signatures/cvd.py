"""ClamAV `.cvd` / `.cld` containers: a 512-byte text header, then a tar (gzip'd for .cvd).

Header: `ClamAV-VDB:build time:version:signatures:flevel:MD5:digital signature:builder:stime`.
We check the header's shape and, for .cvd, that the MD5 matches the archive that follows. The
header's digital signature (Talos' own RSA scheme) is NOT verified: load databases only from a
channel you trust, or check them with `sigtool --verify-cvd` first.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from dataclasses import dataclass

HEADER_SIZE = 512
MAX_MEMBER = 1 << 30  # a database member larger than this is refused
MAX_TOTAL = 2 << 30
MAX_MEMBERS = 10_000


class CvdError(ValueError):
    pass


@dataclass(frozen=True)
class CvdHeader:
    build_time: str
    version: int
    signatures: int
    flevel: int
    md5: str
    builder: str


def parse_header(raw: bytes) -> CvdHeader:
    if len(raw) < HEADER_SIZE:
        raise CvdError(f"file shorter than the {HEADER_SIZE}-byte CVD header")
    text = raw[:HEADER_SIZE].decode("latin-1").rstrip(" \x00\n")
    if not text.startswith("ClamAV-VDB:"):
        raise CvdError("header does not start with 'ClamAV-VDB:'")
    fields = text.split(":")
    if len(fields) < 8:
        raise CvdError(f"header has {len(fields)} fields, want at least 8")
    try:
        version, sigs, flevel = int(fields[2]), int(fields[3]), int(fields[4])
    except ValueError:
        raise CvdError("header version/signatures/flevel are not numbers") from None
    md5 = fields[5]
    if len(md5) != 32:
        raise CvdError("header MD5 field is not 32 hex digits")
    return CvdHeader(fields[1], version, sigs, flevel, md5.lower(), fields[7])


def unpack(raw: bytes, name: str) -> tuple[CvdHeader, list[tuple[str, bytes]]]:
    """Return the header and the (member name, content) pairs of the database files inside."""
    header = parse_header(raw)
    body = raw[HEADER_SIZE:]
    is_gzip = body[:2] == b"\x1f\x8b"
    if name.lower().endswith(".cvd"):
        if hashlib.md5(body).hexdigest() != header.md5:
            raise CvdError("MD5 in the header does not match the archive (corrupt or altered)")
        if not is_gzip:
            raise CvdError(".cvd archive is not gzip-compressed")
    if is_gzip:
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(body)) as gz:
                body = gz.read(MAX_TOTAL + 1)
        except (OSError, EOFError) as exc:
            raise CvdError(f"bad gzip data: {exc}") from None
        if len(body) > MAX_TOTAL:
            raise CvdError("archive expands beyond the size limit")
    members: list[tuple[str, bytes]] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:") as tar:
            for info in tar:
                if len(members) >= MAX_MEMBERS:
                    raise CvdError(f"more than {MAX_MEMBERS} members")
                if not info.isfile():
                    continue
                if info.size > MAX_MEMBER:
                    raise CvdError(f"member {info.name!r} is too large")
                fh = tar.extractfile(info)
                if fh is None:
                    continue
                # Only the base name matters: nothing is ever written to disk.
                members.append((info.name.rsplit("/", 1)[-1], fh.read()))
    except tarfile.TarError as exc:
        raise CvdError(f"bad tar data: {exc}") from None
    return header, members


def build(
    members: dict[str, bytes],
    *,
    version: int = 1,
    builder: str = "vmshield",
    compress: bool = True,
    signatures: int | None = None,
) -> bytes:
    """Make a .cvd (compress=True) or .cld; used by tests and by `vmshield db` tooling."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for mname, data in members.items():
            info = tarfile.TarInfo(mname)
            info.size = len(data)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    body = buf.getvalue()
    if compress:
        body = gzip.compress(body, mtime=0)
    nsig = (
        signatures
        if signatures is not None
        else sum(1 for d in members.values() for ln in d.splitlines() if ln.strip())
    )
    header = (
        f"ClamAV-VDB:27 Nov 2026 00-00 +0000:{version}:{nsig}:200:"
        f"{hashlib.md5(body).hexdigest()}:X:{builder}:0"
    ).encode()
    return header.ljust(HEADER_SIZE, b" ") + body
