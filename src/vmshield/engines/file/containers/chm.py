"""Microsoft Compiled HTML Help (CHM, "ITSF"): directory parsed here; files stored uncompressed
(section 0) are extracted. Files in the LZX-compressed section ("MSCompressed") are NOT
decompressed (no LZX decoder here): each is reported as an error member, so a CHM is never
called clean on content that was not read."""

from __future__ import annotations

import struct
from collections.abc import Iterator

from ..limits import LimitExceeded, ScanBudget
from ._base import Member, member_cap, sanitize_name, unique_names

MAX_CHUNKS = 100_000


class ChmError(Exception):
    pass


def _encint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    v = 0
    for _ in range(10):
        if pos >= end:
            raise ChmError("truncated directory entry")
        b = buf[pos]
        pos += 1
        v = (v << 7) | (b & 0x7F)
        if not b & 0x80:
            return v, pos
    raise ChmError("bad encoded integer")


def directory(data: bytes) -> tuple[list[tuple[str, int, int, int]], int]:
    """[(name, section, offset, length)], content offset."""
    if len(data) < 0x58 or data[:4] != b"ITSF":
        raise ChmError("not an ITSF file")
    version, hlen = struct.unpack_from("<II", data, 4)
    off0, len0, off1, len1 = struct.unpack_from("<QQQQ", data, 0x38)
    if version >= 3 and hlen >= 0x60 and len(data) >= 0x60:
        content = struct.unpack_from("<Q", data, 0x58)[0]
    else:
        content = off1 + len1
    if off1 + 0x54 > len(data) or data[off1 : off1 + 4] != b"ITSP":
        raise ChmError("directory header (ITSP) missing")
    (itsp_len,) = struct.unpack_from("<I", data, off1 + 8)
    (chunk_size,) = struct.unpack_from("<I", data, off1 + 0x10)
    (nchunks,) = struct.unpack_from("<I", data, off1 + 0x2C)
    if not 0x20 <= chunk_size <= 1 << 20 or nchunks > MAX_CHUNKS:
        raise ChmError(f"implausible directory ({nchunks} chunks of {chunk_size} bytes)")
    entries = []
    base = off1 + itsp_len
    for c in range(nchunks):
        cs = base + c * chunk_size
        chunk = data[cs : cs + chunk_size]
        if len(chunk) < chunk_size:
            raise ChmError("truncated directory chunk")
        if chunk[:4] != b"PMGL":
            continue  # PMGI index chunks only speed up lookups
        (free,) = struct.unpack_from("<I", chunk, 4)
        end = chunk_size - min(free, chunk_size - 20)
        pos = 20
        while pos < end:
            nlen, pos = _encint(chunk, pos, end)
            if pos + nlen > end:
                raise ChmError("directory entry name past its chunk")
            name = chunk[pos : pos + nlen].decode("utf-8", "replace")
            pos += nlen
            section, pos = _encint(chunk, pos, end)
            offset, pos = _encint(chunk, pos, end)
            length, pos = _encint(chunk, pos, end)
            entries.append((name, section, offset, length))
    return entries, content


def walk(data: bytes, name: str, budget: ScanBudget) -> Iterator[Member]:
    try:
        entries, content = directory(data)
    except (ChmError, struct.error) as exc:
        yield Member("(chm)", None, error=f"malformed CHM: {exc}")
        return
    if len(entries) > budget.limits.max_files:
        raise LimitExceeded("max_files", f"CHM lists {len(entries)} files")
    uniq = unique_names()
    lzx = 0
    for ename, section, offset, length in entries:
        budget.check_time()
        # "::DataSpace/..." and "#..." / "$..." are the file's own structures, not content.
        if ename.endswith("/") or length == 0 or ename.startswith("::"):
            continue
        mname = uniq(sanitize_name(ename, "chm-file"))
        if section != 0:
            lzx += 1
            continue
        if length > member_cap(budget):
            raise LimitExceeded("max_file_size", f"CHM file {mname!r} of {length} bytes")
        body = data[content + offset : content + offset + length]
        yield Member(mname, body, error=None if len(body) == length else "truncated CHM content")
    if lzx:
        yield Member(
            "(chm-lzx)",
            None,
            error=f"{lzx} LZX-compressed file(s) not decompressed (no LZX decoder)",
        )
