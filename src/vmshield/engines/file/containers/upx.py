"""UPX-packed executables: find UPX's pack header, decompress the packed image (NRV2B/2D/2E), and
hand the unpacked bytes to the scanner.

What is done: Win32/64 PE files packed by UPX (sections UPX0/UPX1, pack header "UPX!" in the
header area, compressed image at the start of UPX1), methods NRV2B, NRV2D, NRV2E (LE32) and LZMA.
Not done: undoing the CALL/JMP filters (so code-relative body signatures may not
match the unpacked image; strings and data do), rebuilding a runnable PE, ELF/Mach-O layouts.
"""

from __future__ import annotations

import struct
import zlib

from ..limits import LimitExceeded, ScanBudget
from ._base import member_cap
from ._nrv import METHODS, NrvError

PACKHEADER = b"UPX!"
M_LZMA = 14


def _lzma(src: bytes, u_len: int, budget: ScanBudget) -> tuple[bytes, str | None]:
    """UPX's LZMA: two header bytes, then a raw LZMA1 stream with lc=3, lp=0, pb=2 (UPX's
    settings for executables; ClamAV's upx.c decodes it the same way)."""
    import lzma

    dict_size = min(max(1 << max(u_len - 1, 1).bit_length(), 1 << 12), 1 << 26)
    filt = {"id": lzma.FILTER_LZMA1, "dict_size": dict_size, "lc": 3, "lp": 0, "pb": 2}
    try:
        d = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[filt])
        out = d.decompress(src[2:], u_len)
    except lzma.LZMAError as exc:
        return b"", f"corrupt UPX LZMA data: {exc}"
    budget.check_time()
    return out, None


def _pe_sections(data: bytes) -> list[tuple[bytes, int, int]] | None:
    if data[:2] != b"MZ" or len(data) < 0x40:
        return None
    pe = struct.unpack_from("<I", data, 0x3C)[0]
    if data[pe : pe + 4] != b"PE\x00\x00" or pe + 24 > len(data):
        return None
    (nsec,) = struct.unpack_from("<H", data, pe + 6)
    (optsize,) = struct.unpack_from("<H", data, pe + 20)
    sec = pe + 24 + optsize
    out = []
    for i in range(min(nsec, 96)):
        off = sec + 40 * i
        if off + 40 > len(data):
            break
        name = data[off : off + 8].rstrip(b"\x00")
        raw_size, raw_ptr = struct.unpack_from("<II", data, off + 16)
        out.append((name, raw_ptr, raw_size))
    return out


def unpack(data: bytes, budget: ScanBudget) -> tuple[bytes, str | None] | None:
    """(unpacked image, error) for a UPX-packed PE, or None when the file is not one."""
    secs = _pe_sections(data)
    if not secs:
        return None
    names = [s[0] for s in secs]
    if b"UPX1" not in names and not any(n.startswith(b"UPX") for n in names):
        return None
    hdr_end = min((s[1] for s in secs if s[1]), default=0x400)
    ph = data.find(PACKHEADER, 0, max(hdr_end, 0x400) + 0x100)
    if ph < 0 or ph + 32 > len(data):
        return b"", "UPX sections but no pack header (modified or scrambled UPX)"
    version, _fmt, method, _level = data[ph + 4 : ph + 8]
    u_adler, c_adler, u_len, c_len = struct.unpack_from("<IIII", data, ph + 8)
    if version < 10:
        return b"", f"UPX pack header version {version} not supported"
    upx1 = next((s for s in secs if s[0] == b"UPX1"), None)
    if upx1 is None:
        return b"", "no UPX1 section"
    cap = member_cap(budget)
    if u_len > cap:
        raise LimitExceeded("max_file_size", f"UPX image of {u_len} bytes > {cap}")
    budget.check_ratio(c_len, u_len)
    src = data[upx1[1] : upx1[1] + c_len]
    if len(src) < c_len:
        return b"", "truncated UPX data"
    if zlib.adler32(src) != c_adler:
        return b"", "UPX compressed data checksum mismatch"
    if method == M_LZMA:
        out, err = _lzma(src, u_len, budget)
        if err:
            return out, err
    else:
        decomp = METHODS.get(method)
        if decomp is None:
            return b"", f"UPX method {method} not supported (NRV2B/2D/2E and LZMA only)"
        try:
            out = decomp(src, u_len, budget.check_time)
        except NrvError as exc:
            return b"", f"corrupt UPX data: {exc}"
    if len(out) != u_len or zlib.adler32(out) != u_adler:
        return out, "UPX unpacked image checksum mismatch"
    return out, None
