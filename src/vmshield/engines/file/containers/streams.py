"""Single compressed streams: gzip, bzip2, xz, lzma-alone. A compressed tar is read as one level."""

from __future__ import annotations

import bz2
import lzma
import struct
import zlib
from collections.abc import Iterator

from ..limits import ScanBudget
from . import archive
from ._base import Member, sanitize_name, zlib_like


def _gzip_name(data: bytes, outer: str) -> str:
    # RFC 1952: FNAME (flag 0x08) follows the optional FEXTRA field.
    try:
        flags = data[3]
        pos = 10
        if flags & 0x04:
            pos += 2 + struct.unpack_from("<H", data, pos)[0]
        if flags & 0x08:
            end = data.index(b"\x00", pos, pos + 1024)
            return sanitize_name(data[pos:end].decode("latin-1"))
    except (IndexError, ValueError, struct.error):
        pass
    return _strip(outer, (".gz", ".tgz", ".z"))


def _strip(outer: str, exts: tuple[str, ...]) -> str:
    base = outer.rsplit("/", 1)[-1]
    low = base.lower()
    for ext in exts:
        if low.endswith(ext) and len(base) > len(ext):
            base = base[: -len(ext)]
            return sanitize_name(base + (".tar" if ext in (".tgz", ".tbz2", ".txz") else ""))
    return "data"


def is_tar(data: bytes) -> bool:
    if len(data) >= 263 and data[257:262] == b"ustar":
        return True
    if len(data) < 512:
        return False
    # v7 tar has no magic: check the header checksum.
    try:
        stored = int(data[148:156].split(b"\x00", 1)[0].strip() or b"-1", 8)
    except ValueError:
        return False
    calc = sum(data[:148]) + 256 + sum(data[156:512])
    return stored == calc and data[0] != 0


def _head(data: bytes, kind: str, n: int = 1024) -> bytes:
    """The first `n` decompressed bytes (enough to recognise a tar), never more."""
    try:
        if kind == "gzip":
            return zlib.decompressobj(16 + 15).decompress(data[: 1 << 20], n)
        if kind == "bzip2":
            return bz2.BZ2Decompressor().decompress(data[: 1 << 20], n)
        if kind == "xz":
            return lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(data[: 1 << 20], n)
        return lzma.LZMADecompressor(lzma.FORMAT_ALONE).decompress(data[: 1 << 20], n)
    except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError):
        return b""


def walk(data: bytes, name: str, budget: ScanBudget, kind: str) -> Iterator[Member]:
    if kind != "lzma" and is_tar(_head(data, kind)):
        # A compressed tar is one level ("a.tar.gz//x.exe", as users name it), streamed by
        # libarchive so only its members count against the size limits, never the whole tar.
        yield from archive.walk(data, budget, fmt="tar")
        return
    if kind == "gzip":
        out, err = zlib_like(lambda: zlib.decompressobj(16 + 15), data, budget, multi=True)
        inner = _gzip_name(data, name)
    elif kind == "bzip2":
        out, err = zlib_like(bz2.BZ2Decompressor, data, budget, multi=True)
        inner = _strip(name, (".bz2", ".tbz2", ".tbz"))
    elif kind == "xz":
        out, err = zlib_like(
            lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ), data, budget, multi=True
        )
        inner = _strip(name, (".xz", ".txz"))
    else:  # lzma-alone
        out, err = zlib_like(lambda: lzma.LZMADecompressor(lzma.FORMAT_ALONE), data, budget)
        inner = _strip(name, (".lzma",))
    if err is None and is_tar(out):  # lzma-alone: libarchive's raw filter list may not cover it
        yield from archive.walk(out, budget, fmt="tar")
        return
    yield Member(inner, out if out or err is None else None, error=err)
