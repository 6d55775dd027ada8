"""Executables that carry something: self-extracting archives and installers (found by carving
for archive signatures past the executable's own header), and UPX-packed programs."""

from __future__ import annotations

import struct
from collections.abc import Iterator

from ..limits import ScanBudget
from ._base import Member

MAX_CARVED = 16

# Signature, format, a check that rules out chance matches inside code or data.
_SIGS: list[tuple[bytes, str]] = [
    (b"PK\x03\x04", "zip"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"Rar!\x1a\x07\x00", "rar"),
    (b"Rar!\x1a\x07\x01\x00", "rar"),
    (b"MSCF\x00\x00\x00\x00", "cab"),
]


def _plausible(data: bytes, pos: int, kind: str) -> bool:
    rest = len(data) - pos
    if kind == "zip":
        # A real archive ends with a central directory after this local header.
        return data.rfind(b"PK\x05\x06", pos) > pos and rest >= 30
    if kind == "7z":
        # Start header: version 0.x, then a CRC'd next-header offset within the file.
        if rest < 32 or data[pos + 6] != 0:
            return False
        nh_off, nh_size = struct.unpack_from("<QQ", data, pos + 12)
        return 32 + nh_off + nh_size <= rest
    if kind == "cab":
        if rest < 36:
            return False
        cb = struct.unpack_from("<I", data, pos + 8)[0]
        return 36 <= cb <= rest and data[pos + 24 : pos + 26] == b"\x03\x01"
    return rest > 20


def _header_end(data: bytes) -> int:
    """Where the executable's own header ends: carving starts past it."""
    if data[:2] == b"MZ" and len(data) >= 0x40:
        pe = struct.unpack_from("<I", data, 0x3C)[0]
        return min(len(data), max(0x40, pe + 0x18))
    return 0x40


def walk(data: bytes, name: str, budget: ScanBudget) -> Iterator[Member]:
    from . import upx

    unpacked = upx.unpack(data, budget)
    if unpacked is not None:
        body, err = unpacked
        yield Member("upx-unpacked", body, error=err)
    start = _header_end(data)
    found: list[tuple[int, str]] = []
    for sig, kind in _SIGS:
        pos = data.find(sig, start)
        while pos >= 0 and len(found) < MAX_CARVED:
            if _plausible(data, pos, kind):
                found.append((pos, kind))
                if kind == "zip":
                    break  # later local headers belong to the same archive
                nxt = pos + len(sig)
            else:
                nxt = pos + 1
            budget.check_time()
            pos = data.find(sig, nxt)
    for pos, kind in sorted(found):
        yield Member(f"sfx@0x{pos:x}.{kind}", data[pos:])
