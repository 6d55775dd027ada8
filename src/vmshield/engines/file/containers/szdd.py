"""SZDD and KWAJ: the formats of Microsoft's COMPRESS.EXE (files named like SETUP.EX_)."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

from ..limits import LimitExceeded, ScanBudget
from ._base import Member, member_cap, sanitize_name, zlib_like


def lzss(src: bytes, out_len: int | None, cap: int, budget: ScanBudget) -> tuple[bytes, str | None]:
    """SZDD's LZSS: 4 KiB window of spaces, write position 4096-16; control byte bits LSB first,
    1 = literal, 0 = (offset 12 bits, length 4 bits + 3)."""
    window = bytearray(b" " * 4096)
    wpos = 4096 - 16
    out = bytearray()
    i = 0
    limit = cap if out_len is None else min(cap, out_len)
    while i < len(src):
        ctrl = src[i]
        i += 1
        for bit in range(8):
            if i >= len(src) or len(out) >= limit:
                break
            if ctrl & (1 << bit):
                c = src[i]
                i += 1
                out.append(c)
                window[wpos] = c
                wpos = (wpos + 1) & 0xFFF
            else:
                if i + 1 >= len(src):
                    return bytes(out), "truncated SZDD stream"
                mpos = src[i] | ((src[i + 1] & 0xF0) << 4)
                mlen = (src[i + 1] & 0x0F) + 3
                i += 2
                for k in range(mlen):
                    c = window[(mpos + k) & 0xFFF]
                    out.append(c)
                    window[wpos] = c
                    wpos = (wpos + 1) & 0xFFF
        if len(out) >= limit:
            break
        if (i & 0xFFFF) < 9:
            budget.check_time()
    if out_len is not None and len(out) < out_len:
        if out_len > cap:
            raise LimitExceeded("max_file_size", f"SZDD member of {out_len} bytes > {cap}")
        return bytes(out), f"truncated: {len(out)} of {out_len} bytes"
    return bytes(out[:limit]), None


def walk(data: bytes, name: str, budget: ScanBudget) -> Iterator[Member]:
    cap = member_cap(budget)
    base = name.rsplit("/", 1)[-1] or "data"
    if data[:4] == b"SZDD":
        if len(data) < 14:
            yield Member("(szdd)", None, error="truncated SZDD header")
            return
        missing = chr(data[9]) if 32 < data[9] < 127 else ""
        size = struct.unpack_from("<I", data, 10)[0]
        # COMPRESS.EXE names SETUP.EX_ and keeps the replaced character; others append "_".
        inner = sanitize_name(base[:-1] + missing if base.endswith("_") else base + ".unpacked")
        if size > (len(data) - 14) * 9:
            # LZSS expands at most 144 bytes from 17: a larger size is a corrupt or cut header.
            out, _ = lzss(data[14:], None, min(cap, (len(data) - 14) * 9), budget)
            yield Member(
                inner, out, error=f"SZDD declares {size} bytes, impossible for {len(data)} bytes"
            )
            return
        if size > cap:
            raise LimitExceeded("max_file_size", f"SZDD declares {size} bytes > {cap}")
        budget.check_ratio(len(data), size)
        out, err = lzss(data[14:], size, cap, budget)
        yield Member(inner, out, error=err)
        return
    # KWAJ: method 0 stored, 1 XOR 0xFF, 2 SZDD-LZSS, 4 MSZIP (deflate blocks prefixed "CK").
    if len(data) < 14:
        yield Member("(kwaj)", None, error="truncated KWAJ header")
        return
    method, offset, flags = struct.unpack_from("<HHH", data, 8)
    body = data[offset:]
    if method == 0:
        out, err = body[:cap], None
    elif method == 1:
        out, err = bytes(b ^ 0xFF for b in body[:cap]), None
    elif method == 2:
        out, err = lzss(body, None, cap, budget)
    elif method == 4:
        out, err = b"", None
        pieces = bytearray()
        p = 0
        while p + 4 <= len(body):
            blen = struct.unpack_from("<H", body, p)[0]
            blk = body[p + 2 : p + 2 + blen]
            if blk[:2] != b"CK":
                err = "bad MSZIP block"
                break
            chunk, e2 = zlib_like(lambda: zlib.decompressobj(-15), blk[2:], budget)
            pieces += chunk
            if len(pieces) > cap:
                raise LimitExceeded("max_file_size", f"KWAJ member expands past {cap}")
            if e2:
                err = e2
                break
            p += 2 + blen
        out = bytes(pieces)
    else:
        yield Member(base + ".unpacked", None, error=f"unsupported KWAJ method {method}")
        return
    if len(out) >= cap:
        raise LimitExceeded("max_file_size", f"KWAJ member expands past {cap}")
    budget.check_ratio(len(data), len(out))
    yield Member(base + ".unpacked", out, error=err)
