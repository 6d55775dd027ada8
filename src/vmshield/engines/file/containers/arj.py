"""ARJ archives (libarchive has no ARJ reader). Headers are parsed here; stored members (method 0)
and method 4 ("fastest") are extracted; methods 1-3 use ARJ's LZ/Huffman coder (see `_arj_lzh`)."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

from ..limits import LimitExceeded, ScanBudget
from ._base import Member, check_declared, sanitize_name, unique_names

MAGIC = b"\x60\xea"
MAX_HEADER = 2600  # ARJ's own limit on a basic header
MIN_HEADER = 30  # the fixed part of a basic header (first_hdr_size), before the names


def _headers(data: bytes, pos: int) -> tuple[bytes | None, int, str | None]:
    """Read one basic header at pos; return (header, position after its extended headers, error)."""
    if data[pos : pos + 2] != MAGIC:
        return None, pos, f"bad ARJ header magic at offset {pos}"
    if pos + 4 > len(data):
        return None, pos, "truncated ARJ header"
    size = struct.unpack_from("<H", data, pos + 2)[0]
    if size == 0:
        return b"", pos + 4, None  # end of archive
    if size > MAX_HEADER:
        return None, pos, f"ARJ header of {size} bytes"
    if size < MIN_HEADER or data[pos + 4] < MIN_HEADER or data[pos + 4] > size:
        return None, pos, f"malformed ARJ header at offset {pos} ({size} bytes)"
    hdr = data[pos + 4 : pos + 4 + size]
    if len(hdr) < size or pos + 8 + size > len(data):
        return None, pos, "truncated ARJ header"
    if zlib.crc32(hdr) != struct.unpack_from("<I", data, pos + 4 + size)[0]:
        return None, pos, f"ARJ header CRC mismatch at offset {pos}"
    p = pos + 8 + size
    while True:  # extended headers: size, body, CRC; a zero size ends them
        if p + 2 > len(data):
            return None, p, "truncated ARJ extended header"
        esize = struct.unpack_from("<H", data, p)[0]
        p += 2
        if esize == 0:
            break
        p += esize + 4
    return hdr, p, None


def walk(data: bytes, name: str, budget: ScanBudget) -> Iterator[Member]:
    main, pos, err = _headers(data, 0)
    if main is None:
        yield Member("(arj)", None, error=err or "bad ARJ main header")
        return
    uniq = unique_names()
    n = 0
    while pos < len(data):
        budget.check_time()
        hdr, after, err = _headers(data, pos)
        if hdr is None:
            yield Member("(arj)", None, error=err)
            return
        if hdr == b"":
            return
        n += 1
        if n > budget.limits.max_files:
            raise LimitExceeded("max_files", f"ARJ has more than {budget.limits.max_files} members")
        first = hdr[0]
        flags, method, ftype = hdr[4], hdr[5], hdr[6]
        comp, orig, crc = struct.unpack_from("<III", hdr, 12)
        fname = hdr[first:].split(b"\x00", 1)[0].decode("cp437", "replace")
        mname = uniq(sanitize_name(fname, f"member{n}"))
        body = data[after : after + comp]
        pos = after + comp
        if ftype not in (0, 1):  # 0 binary, 1 text; others are directories, labels
            continue
        if flags & 0x01:  # GARBLED: password-protected
            yield Member(mname, None, encrypted=True)
            continue
        if len(body) < comp:
            yield Member(mname, None, error="truncated ARJ member")
            return
        check_declared(budget, comp, orig)
        if method == 0:
            out, e2 = body, None
        elif method in (1, 2, 3):
            from ._arj_lzh import decode

            out, e2 = decode(body, orig, budget)
        elif method == 4:
            from ._arj_lzh import decode_fastest

            out, e2 = decode_fastest(body, orig, budget)
        else:
            yield Member(mname, None, error=f"unsupported ARJ method {method}")
            continue
        if e2 is None and zlib.crc32(out) != crc:
            e2 = "ARJ member CRC mismatch"
        yield Member(mname, out, error=e2)
