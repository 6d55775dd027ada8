"""Microsoft Compiled HTML Help (CHM, "ITSF"): directory parsed here; files stored uncompressed
(section 0) are extracted as they are, files in the LZX-compressed section ("MSCompressed") are
decompressed with `lzx` (window and reset interval from its ControlData, stream length from its
ResetTable), as far as the last file needs and no further than the scan budget allows."""

from __future__ import annotations

import struct
from collections.abc import Iterator

from ..limits import LimitExceeded, ScanBudget
from ._base import Member, member_cap, sanitize_name, unique_names
from .lzx import FRAME, LzxError, decompress

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
    lzx = [e for e in entries if e[1] == 1 and e[3] > 0 and not e[0].endswith("/")]
    lzx = [e for e in lzx if not e[0].startswith("::")]
    stream: bytes | None = None
    stream_error = None
    if lzx:
        try:
            stream = _lzx_stream(data, entries, content, max(o + n for _, _, o, n in lzx), budget)
        except (ChmError, LzxError, struct.error) as exc:
            stream_error = str(exc)
    for ename, section, offset, length in entries:
        budget.check_time()
        # "::DataSpace/..." and "#..." / "$..." are the file's own structures, not content.
        if ename.endswith("/") or length == 0 or ename.startswith("::"):
            continue
        mname = uniq(sanitize_name(ename, "chm-file"))
        if section not in (0, 1):
            yield Member(mname, None, error=f"CHM section {section} does not exist")
            continue
        if length > member_cap(budget):
            raise LimitExceeded("max_file_size", f"CHM file {mname!r} of {length} bytes")
        if section == 1:
            if stream is None:
                yield Member(mname, None, error=f"LZX section unreadable: {stream_error}")
                continue
            body = stream[offset : offset + length]
        else:
            body = data[content + offset : content + offset + length]
        yield Member(mname, body, error=None if len(body) == length else "truncated CHM content")


_MSC = "::DataSpace/Storage/MSCompressed/"
_RESET_TABLE = _MSC + "Transform/{7FC28940-9D31-11D0-9B27-00A0C91E9C7C}/InstanceData/ResetTable"
_WINDOWS = {1 << b: b for b in range(15, 22)}


def _lzx_stream(
    data: bytes,
    entries: list[tuple[str, int, int, int]],
    content: int,
    needed: int,
    budget: ScanBudget,
) -> bytes:
    """The first `needed` bytes of the decompressed section 1."""
    sec0 = {name: (off, n) for name, section, off, n in entries if section == 0}

    def part(name: str) -> bytes:
        if name not in sec0:
            raise ChmError(f"{name} missing")
        off, n = sec0[name]
        body = data[content + off : content + off + n]
        if len(body) != n:
            raise ChmError(f"{name} truncated")
        return body

    ctl = part(_MSC + "ControlData")
    if len(ctl) < 24 or ctl[4:8] != b"LZXC":
        raise ChmError("ControlData is not LZXC")
    version, reset, window = struct.unpack_from("<III", ctl, 8)
    if version == 2:  # version 2 counts in 32 KiB frames, version 1 in bytes
        reset, window = reset * FRAME, window * FRAME
    if window not in _WINDOWS:
        raise ChmError(f"LZX window of {window} bytes")
    if reset == 0 or reset % FRAME:
        raise ChmError(f"LZX reset interval of {reset} bytes")
    table = part(_RESET_TABLE)
    if len(table) < 0x28:
        raise ChmError("ResetTable too short")
    total, comp = struct.unpack_from("<QQ", table, 0x10)
    if needed > total:
        raise ChmError(f"files reach byte {needed} of a {total}-byte LZX section")
    if needed > budget.remaining_member_size():
        raise LimitExceeded("max_file_size", f"CHM LZX section of {needed} bytes")
    stream = part(_MSC + "Content")
    budget.check_ratio(len(stream), needed)
    # Whole frames, as the encoder made them (the E8 translation looks at each whole frame).
    upto = min(total, -(-needed // FRAME) * FRAME)
    out = decompress(stream, upto, _WINDOWS[window], reset // FRAME, budget.check_time)
    return out[:needed]
