"""Zip and its family (OOXML, ODF, JAR, APK), read from the central directory with our own parser.

Our own walker, not zipfile: it sees every entry's byte range (to refuse overlapping entries, the
trick of non-recursive zip bombs), checks the declared ratio before inflating anything, bounds the
output while inflating, and gives disinfection the raw compressed bytes to copy unchanged.
"""

from __future__ import annotations

import bz2
import lzma
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from ..limits import LimitExceeded, ScanBudget
from ._base import Member, check_declared, member_cap, sanitize_name, unique_names, zlib_like

EOCD_SIG = b"PK\x05\x06"
Z64_LOC_SIG = b"PK\x06\x07"
Z64_EOCD_SIG = b"PK\x06\x06"
CEN_SIG = b"PK\x01\x02"
LOC_SIG = b"PK\x03\x04"

STORED, DEFLATE, BZIP2, DEFLATE64, LZMA, AES = 0, 8, 12, 9, 14, 99
# Limits that concern one member only; the others (files, total size, time) end the whole walk.
PER_MEMBER_LIMITS = frozenset({"max_file_size", "bomb_ratio"})


class ZipFormatError(Exception):
    pass


@dataclass
class ZipEntry:
    raw_name: bytes
    name: str
    method: int
    flags: int
    crc: int
    comp_size: int
    size: int
    local_offset: int  # offset of the local header, relative to the archive start
    data_offset: int  # offset of the compressed data
    cen_offset: int  # offset of this entry's central record
    cen_len: int
    local_len: int  # local header + name + extra

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & 0x41) or self.method == AES

    @property
    def is_dir(self) -> bool:
        return self.name.endswith("/") or self.raw_name.endswith(b"/")


@dataclass
class ZipDirectory:
    entries: list[ZipEntry]
    base: int  # bytes prepended before the archive (self-extractors): offsets are shifted by this
    cd_offset: int
    cd_size: int
    eocd_offset: int
    comment: bytes


def _find_eocd(data: bytes) -> int:
    start = max(0, len(data) - (65535 + 22))
    pos = data.rfind(EOCD_SIG, start)
    while pos >= 0:
        if pos + 22 <= len(data):
            clen = struct.unpack_from("<H", data, pos + 20)[0]
            if pos + 22 + clen <= len(data):
                return pos
        pos = data.rfind(EOCD_SIG, start, pos)
    return -1


def _zip64_extra(extra: bytes, size: int, comp: int, off: int) -> tuple[int, int, int]:
    i = 0
    while i + 4 <= len(extra):
        hid, hlen = struct.unpack_from("<HH", extra, i)
        body = extra[i + 4 : i + 4 + hlen]
        if hid == 1:
            j = 0
            if size == 0xFFFFFFFF and j + 8 <= len(body):
                size = struct.unpack_from("<Q", body, j)[0]
                j += 8
            if comp == 0xFFFFFFFF and j + 8 <= len(body):
                comp = struct.unpack_from("<Q", body, j)[0]
                j += 8
            if off == 0xFFFFFFFF and j + 8 <= len(body):
                off = struct.unpack_from("<Q", body, j)[0]
            break
        i += 4 + hlen
    return size, comp, off


def read_directory(data: bytes, max_entries: int = 1_000_000) -> ZipDirectory:
    """Parse the central directory. Raises ZipFormatError when there is none."""
    eocd = _find_eocd(data)
    if eocd < 0:
        raise ZipFormatError("no end of central directory record")
    (_, _disk, _cd_disk, _n_disk, total, cd_size, cd_off, clen) = struct.unpack_from(
        "<4sHHHHIIH", data, eocd
    )
    comment = data[eocd + 22 : eocd + 22 + clen]
    z64 = eocd - 20
    if z64 >= 0 and data[z64 : z64 + 4] == Z64_LOC_SIG:
        z64_off = struct.unpack_from("<Q", data, z64 + 8)[0]
        cand = [z64_off]
        # A prefixed (self-extracting) zip64 has offsets shifted; look just before the locator too.
        back = data.rfind(Z64_EOCD_SIG, max(0, z64 - 4096), z64)
        if back >= 0:
            cand.append(back)
        for c in cand:
            if c >= 0 and c + 56 <= len(data) and data[c : c + 4] == Z64_EOCD_SIG:
                total, cd_size, cd_off = struct.unpack_from("<QQQ", data, c + 32)
                eocd = c
                break
    # Bytes before the archive (self-extractors): where the directory really is vs where it says.
    base = eocd - cd_size - cd_off
    if base < 0 or data[cd_off + base : cd_off + base + 4] not in (CEN_SIG, EOCD_SIG, Z64_EOCD_SIG):
        base = 0
    if total > max_entries:
        raise LimitExceeded("max_files", f"zip declares {total} entries")
    entries: list[ZipEntry] = []
    pos = cd_off + base
    end = min(len(data), pos + cd_size)
    while pos + 46 <= end and data[pos : pos + 4] == CEN_SIG:
        (
            _sig,
            _vm,
            _vn,
            flags,
            method,
            _t,
            _d,
            crc,
            comp,
            size,
            nlen,
            xlen,
            klen,
            _dn,
            _ia,
            _ea,
            off,
        ) = struct.unpack_from("<4sHHHHHHIIIHHHHHII", data, pos)
        raw_name = data[pos + 46 : pos + 46 + nlen]
        extra = data[pos + 46 + nlen : pos + 46 + nlen + xlen]
        size, comp, off = _zip64_extra(extra, size, comp, off)
        name = raw_name.decode("utf-8" if flags & 0x800 else "cp437", "replace")
        rec_len = 46 + nlen + xlen + klen
        if pos + rec_len > len(data):
            break  # a record cut by the end of the file: its name and extra are not all there
        loc = off + base
        local_len = 0
        data_off = -1
        if loc >= 0 and loc + 30 <= len(data) and data[loc : loc + 4] == LOC_SIG:
            lnlen, lxlen = struct.unpack_from("<HH", data, loc + 26)
            local_len = 30 + lnlen + lxlen
            data_off = loc + local_len
        entries.append(
            ZipEntry(
                raw_name,
                name,
                method,
                flags,
                crc,
                comp,
                size,
                off,
                data_off,
                pos,
                rec_len,
                local_len,
            )
        )
        if len(entries) > max_entries:
            raise LimitExceeded("max_files", f"zip has more than {max_entries} entries")
        pos += rec_len
    if not entries and total:
        raise ZipFormatError("central directory unreadable")
    return ZipDirectory(entries, base, cd_off, cd_size, eocd, comment)


def check_overlap(directory: ZipDirectory) -> None:
    """Refuse entries whose byte ranges overlap: each file must own its bytes (Fifield's bombs)."""
    spans = sorted(
        (e.local_offset + directory.base, e.data_offset + e.comp_size, e.name)
        for e in directory.entries
        if e.data_offset >= 0
    )
    max_end, owner = -1, ""
    for start, end, name in spans:
        if start < max_end:
            raise LimitExceeded("zip_overlap", f"entries {owner!r} and {name!r} share bytes")
        if end > max_end:
            max_end, owner = end, name


def _lzma_member(raw: bytes, budget: ScanBudget) -> tuple[bytes, str | None]:
    # Zip's LZMA: version (2), properties size (2), LZMA1 properties (5), then the raw stream.
    if len(raw) < 9:
        return b"", "truncated LZMA header"
    psize = struct.unpack_from("<H", raw, 2)[0]
    props = raw[4 : 4 + psize]
    if psize != 5 or len(props) < 5:
        return b"", "bad LZMA properties"
    d = props[0]
    lc, lp, pb = d % 9, (d // 9) % 5, d // 45
    dict_size = struct.unpack_from("<I", props, 1)[0]
    filt = {
        "id": lzma.FILTER_LZMA1,
        "dict_size": max(dict_size, 4096),
        "lc": lc,
        "lp": lp,
        "pb": pb,
    }
    try:
        return zlib_like(
            lambda: lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[filt]), raw[4 + psize :], budget
        )
    except lzma.LZMAError as exc:
        return b"", f"bad LZMA stream: {exc}"


def _deflate64(raw: bytes, budget: ScanBudget) -> tuple[bytes, str | None]:
    try:
        import inflate64  # py7zr's own dependency
    except ImportError:  # pragma: no cover - installed with py7zr
        return b"", "deflate64 not available"
    cap = member_cap(budget)
    inf = inflate64.Inflater()
    out = bytearray()
    # Deflate64 expands at most ~1032x, so 4 KiB of input bounds each step to ~4 MiB.
    for i in range(0, len(raw), 4096):
        try:
            out += inf.inflate(raw[i : i + 4096])
        except Exception as exc:
            return bytes(out), f"corrupt deflate64 stream: {exc}"
        if len(out) > cap:
            raise LimitExceeded("max_file_size", f"member expands past {cap} bytes")
        budget.check_ratio(i + 4096, len(out))
        budget.check_time()
        if inf.eof:
            break
    return bytes(out), None


def extract(data: bytes, entry: ZipEntry, budget: ScanBudget) -> tuple[bytes | None, str | None]:
    """Decompress one entry, bounded. Returns (bytes, error)."""
    if entry.data_offset < 0:
        return None, "local header missing or out of the file"
    raw = data[entry.data_offset : entry.data_offset + entry.comp_size]
    err: str | None = None
    if len(raw) < entry.comp_size:
        err = "truncated member data"
    if entry.method == STORED:
        cap = member_cap(budget)
        if len(raw) > cap:
            raise LimitExceeded("max_file_size", f"member of {len(raw)} bytes > {cap}")
        out, e2 = raw, None
    elif entry.method == DEFLATE:
        out, e2 = zlib_like(lambda: zlib.decompressobj(-15), raw, budget)
    elif entry.method == BZIP2:
        out, e2 = zlib_like(bz2.BZ2Decompressor, raw, budget)
    elif entry.method == LZMA:
        out, e2 = _lzma_member(raw, budget)
    elif entry.method == DEFLATE64:
        out, e2 = _deflate64(raw, budget)
    else:
        return None, f"unsupported compression method {entry.method}"
    err = err or e2
    if err is None and len(out) != entry.size:
        err = f"size mismatch: header says {entry.size}, got {len(out)}"
    elif err is None and zlib.crc32(out) != entry.crc:
        err = "CRC mismatch"
    return out, err


def walk(data: bytes, budget: ScanBudget) -> Iterator[Member]:
    try:
        directory = read_directory(data, budget.limits.max_files)
    except ZipFormatError:
        yield from _walk_local(data, budget)
        return
    check_overlap(directory)
    uniq = unique_names()
    deferred: LimitExceeded | None = None
    for e in directory.entries:
        budget.check_time()
        if e.is_dir:
            continue
        name = uniq(sanitize_name(e.name))
        if e.encrypted:
            yield Member(name, None, encrypted=True)
            continue
        try:
            if e.data_offset >= 0 and e.data_offset + e.comp_size <= len(data):
                check_declared(budget, e.comp_size, e.size)
            # else: truncated or corrupt header: its declared sizes mean nothing; extraction is bounded
            out, err = extract(data, e, budget)
        except LimitExceeded as exc:
            if exc.limit not in PER_MEMBER_LIMITS:
                raise
            # Zip members are independent: skip this one, scan its siblings (malware hidden
            # next to a bomb is still found), and report the limit once they are done.
            deferred = deferred or LimitExceeded(exc.limit, f"{name}: {exc.detail}")
            continue
        if out is not None and err is None:
            yield Member(name, out)
        else:
            # Show what could be read: a truncated member may still carry the detection.
            yield Member(name, out or None, error=err)
    if deferred is not None:
        raise deferred


def _walk_local(data: bytes, budget: ScanBudget) -> Iterator[Member]:
    """No central directory (truncated archive): follow local headers as far as they go."""
    uniq = unique_names()
    pos = 0
    found = False
    while pos + 30 <= len(data) and data[pos : pos + 4] == LOC_SIG:
        budget.check_time()
        (_s, _v, flags, method, _t, _d, crc, comp, size, nlen, xlen) = struct.unpack_from(
            "<4sHHHHHIIIHH", data, pos
        )
        raw_name = data[pos + 30 : pos + 30 + nlen]
        name = raw_name.decode("utf-8" if flags & 0x800 else "cp437", "replace")
        data_off = pos + 30 + nlen + xlen
        if flags & 0x08 and comp == 0:
            # Sizes are in a trailing descriptor: only deflate can tell its own end.
            mname = uniq(sanitize_name(name))
            if flags & 0x41:
                yield Member(mname, None, encrypted=True)
            elif method != DEFLATE:
                yield Member(mname, None, error="truncated zip: member size unknown")
                break
            else:
                out, err = zlib_like(lambda: zlib.decompressobj(-15), data[data_off:], budget)
                yield Member(mname, out or None, error=err)
            found = True
            nxt = data.find(LOC_SIG, data_off)
            if nxt < 0:
                break
            pos = nxt
            continue
        e = ZipEntry(
            raw_name, name, method, flags, crc, comp, size, pos, data_off, -1, 0, 30 + nlen + xlen
        )
        found = True
        if not e.is_dir:
            mname = uniq(sanitize_name(name))
            if e.encrypted:
                yield Member(mname, None, encrypted=True)
            else:
                if size and data_off + comp <= len(data):
                    check_declared(budget, comp, size)
                body, err = extract(data, e, budget)
                yield Member(mname, body or None, error=err)
        pos = data_off + comp
    yield Member(
        "(zip)",
        None,
        error="truncated zip: no central directory" if found else "not a readable zip",
    )
