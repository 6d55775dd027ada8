"""Capture file reader: classic pcap (both byte orders, micro- and nanosecond) and pcapng.

Pure: parses a binary file object (or bytes) it is given. `read_packets` yields
`CaptureRecord`s; a capture that ends mid-record raises `CaptureTruncated` *after* every complete
record has been yielded, so a caller processes what was read and then reports the truncation.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Final

PCAP_MAGIC_US: Final = 0xA1B2C3D4
PCAP_MAGIC_NS: Final = 0xA1B23C4D
PCAPNG_SHB: Final = 0x0A0D0D0A
PCAPNG_IDB: Final = 0x00000001
PCAPNG_PB: Final = 0x00000002  # obsolete Packet Block
PCAPNG_SPB: Final = 0x00000003
PCAPNG_EPB: Final = 0x00000006
BYTE_ORDER_MAGIC: Final = 0x1A2B3C4D

# A record larger than this is corrupt, not a packet (jumbo frames and TSO stay well below).
MAX_RECORD: Final = 256 * 1024
MAX_BLOCK: Final = MAX_RECORD + 4096


class CaptureError(ValueError):
    """The capture cannot be read (not a capture, corrupt header)."""


class CaptureTruncated(CaptureError):
    """The capture ends in the middle of a record; the records before it were delivered."""


@dataclass(slots=True, init=False)
class CaptureRecord:
    ts: float
    data: bytes
    linktype: int
    iface: str = ""
    orig_len: int = 0

    def __init__(
        self,
        ts: float,
        data: bytes,
        linktype: int,
        iface: str = "",
        orig_len: int = 0,
    ) -> None:
        # Written out for the compiled build: see Packet.__init__.
        self.ts = ts
        self.data = data
        self.linktype = linktype
        self.iface = iface
        self.orig_len = orig_len


def read_packets(src: BinaryIO | bytes, *, name: str = "capture") -> Iterator[CaptureRecord]:
    """Yield every packet of a pcap or pcapng capture."""
    f: BinaryIO = io.BytesIO(src) if isinstance(src, bytes | bytearray) else src
    head = _read_exact(f, 4)
    if len(head) < 4:
        raise CaptureError(f"{name}: empty or too short to be a capture ({len(head)} bytes)")
    magic_le = struct.unpack("<I", head)[0]
    if magic_le == PCAPNG_SHB:
        yield from _read_pcapng(f, head, name)
        return
    for endian in ("<", ">"):
        m = struct.unpack(endian + "I", head)[0]
        if m in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
            yield from _read_pcap(f, endian, m == PCAP_MAGIC_NS, name)
            return
    raise CaptureError(f"{name}: not a pcap or pcapng capture (magic {head.hex()})")


def _read_pcap(f: BinaryIO, e: str, nano: bool, name: str) -> Iterator[CaptureRecord]:
    hdr = _read_exact(f, 20)
    if len(hdr) < 20:
        raise CaptureTruncated(f"{name}: pcap global header truncated")
    _vmaj, _vmin, _tz, _sig, snaplen, linktype = struct.unpack(e + "HHiIII", hdr)
    linktype &= 0xFFFF  # upper bits carry FCS information
    little = e == "<"
    div = 1e9 if nano else 1e6
    # Records are cut out of large reads, their headers read byte by byte: two file reads, a
    # struct tuple and five integer objects per packet cost more than the engine's decoding.
    buf = b""
    pos = 0
    count = 0
    while True:
        if len(buf) - pos < 16:
            buf = buf[pos:]
            pos = 0
            while len(buf) < 16:
                more = f.read(_READ_CHUNK)
                if not more:
                    if not buf:
                        return
                    raise CaptureTruncated(f"{name}: truncated record header after {count} packets")
                buf += more
        sec = _u32(buf, pos, little)
        frac = _u32(buf, pos + 4, little)
        incl = _u32(buf, pos + 8, little)
        orig = _u32(buf, pos + 12, little)
        if incl > MAX_RECORD:
            raise CaptureError(f"{name}: record {count + 1} claims {incl} bytes (corrupt capture)")
        end = pos + 16 + incl
        while end > len(buf):
            more = f.read(max(_READ_CHUNK, incl + 16))
            if not more:
                raise CaptureTruncated(
                    f"{name}: truncated packet data in record {count + 1} "
                    f"({len(buf) - pos - 16} of {incl} bytes) after {count} packets"
                )
            buf = buf[pos:] + more
            pos = 0
            end = 16 + incl
        data = buf[pos + 16 : end]
        pos = end
        count += 1
        yield CaptureRecord(sec + frac / div, data, linktype, "", orig)


_READ_CHUNK: Final = 1 << 20


def _read_exact(f: BinaryIO, n: int) -> bytes:
    """`n` bytes, fewer only at the end of the file: a pipe or socket may give less per read."""
    data = f.read(n)
    if len(data) >= n or not data:
        return data
    parts = [data]
    got = len(data)
    while got < n:
        more = f.read(n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _u32(b: bytes, i: int, little: bool) -> int:
    if little:
        return b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24)
    return (b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]


@dataclass(slots=True)
class _Iface:
    linktype: int
    snaplen: int
    tsdiv: float
    name: str


def _read_pcapng(f: BinaryIO, first: bytes, name: str) -> Iterator[CaptureRecord]:
    e = "<"
    ifaces: list[_Iface] = []
    count = 0
    pending = first
    while True:
        bt_raw = pending if pending else _read_exact(f, 4)
        pending = b""
        if not bt_raw:
            return
        if len(bt_raw) < 4:
            raise CaptureTruncated(f"{name}: truncated block header after {count} packets")
        if struct.unpack("<I", bt_raw)[0] == PCAPNG_SHB:
            # A new section: learn its byte order from the byte-order magic.
            rest = _read_exact(f, 8)
            if len(rest) < 8:
                raise CaptureTruncated(f"{name}: truncated section header after {count} packets")
            bom = rest[4:8]
            if struct.unpack("<I", bom)[0] == BYTE_ORDER_MAGIC:
                e = "<"
            elif struct.unpack(">I", bom)[0] == BYTE_ORDER_MAGIC:
                e = ">"
            else:
                raise CaptureError(f"{name}: bad pcapng byte-order magic {bom.hex()}")
            blen = struct.unpack(e + "I", rest[:4])[0]
            if blen < 28 or blen % 4 or blen > MAX_BLOCK:
                raise CaptureError(f"{name}: bad section header length {blen}")
            body = _read_exact(f, blen - 12)
            if len(body) < blen - 12:
                raise CaptureTruncated(f"{name}: truncated section header after {count} packets")
            ifaces = []  # interface ids are per section
            continue
        btype = struct.unpack(e + "I", bt_raw)[0]
        lraw = _read_exact(f, 4)
        if len(lraw) < 4:
            raise CaptureTruncated(f"{name}: truncated block header after {count} packets")
        blen = struct.unpack(e + "I", lraw)[0]
        if blen < 12 or blen % 4 or blen > MAX_BLOCK:
            raise CaptureError(f"{name}: block of type {btype} has invalid length {blen}")
        body = _read_exact(f, blen - 8)
        if len(body) < blen - 8:
            raise CaptureTruncated(f"{name}: truncated block (type {btype}) after {count} packets")
        body = body[:-4]  # trailing copy of the length
        if btype == PCAPNG_IDB:
            if len(body) < 8:
                raise CaptureError(f"{name}: interface description block too short")
            lt, _res, snap = struct.unpack(e + "HHI", body[:8])
            tsdiv, ifname = _idb_options(body[8:], e)
            ifaces.append(_Iface(lt, snap, tsdiv, ifname or f"if{len(ifaces)}"))
        elif btype in (PCAPNG_EPB, PCAPNG_PB):
            if len(body) < 20:
                raise CaptureError(f"{name}: packet block too short")
            if btype == PCAPNG_EPB:
                iid, tsh, tsl, cap, orig = struct.unpack(e + "IIIII", body[:20])
            else:
                iid, _drops, tsh, tsl, cap, orig = struct.unpack(e + "HHIIII", body[:20])
            if iid >= len(ifaces):
                raise CaptureError(f"{name}: packet refers to unknown interface {iid}")
            if cap > len(body) - 20:
                raise CaptureError(f"{name}: packet block length {cap} exceeds its block")
            ifc = ifaces[iid]
            count += 1
            yield CaptureRecord(
                ((tsh << 32) | tsl) / ifc.tsdiv, body[20 : 20 + cap], ifc.linktype, ifc.name, orig
            )
        elif btype == PCAPNG_SPB:
            if not ifaces:
                raise CaptureError(f"{name}: simple packet block before any interface")
            if len(body) < 4:
                raise CaptureError(f"{name}: simple packet block too short")
            orig = struct.unpack(e + "I", body[:4])[0]
            ifc = ifaces[0]
            cap = min(orig, len(body) - 4, ifc.snaplen or orig)
            count += 1
            # SPB carries no timestamp.
            yield CaptureRecord(0.0, body[4 : 4 + cap], ifc.linktype, ifc.name, orig)
        # Other blocks (name resolution, statistics, custom) carry no packets.


def _idb_options(opts: bytes, e: str) -> tuple[float, str]:
    tsdiv = 1e6
    ifname = ""
    i = 0
    while i + 4 <= len(opts):
        code, olen = struct.unpack(e + "HH", opts[i : i + 4])
        val = opts[i + 4 : i + 4 + olen]
        if code == 0:
            break
        if code == 2:
            ifname = val.decode("utf-8", "replace")
        elif code == 9 and val:
            r = val[0]
            tsdiv = float(2 ** (r & 0x7F)) if r & 0x80 else float(10 ** (r & 0x7F))
        i += 4 + ((olen + 3) & ~3)
    return tsdiv, ifname
