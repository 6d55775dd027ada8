"""DNS message parser (RFC 1035) for UDP datagrams and TCP streams (2-byte length framing).

Names are decompressed with a bound on pointer jumps and on the name length, so a crafted message
(pointer loops, 10 000 labels) costs a bounded amount of work and yields `DnsError`.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field
from typing import Any, Final

RRTYPES: Final = {
    1: "A",
    2: "NS",
    5: "CNAME",
    6: "SOA",
    12: "PTR",
    15: "MX",
    16: "TXT",
    28: "AAAA",
    33: "SRV",
    35: "NAPTR",
    41: "OPT",
    43: "DS",
    46: "RRSIG",
    47: "NSEC",
    48: "DNSKEY",
    64: "SVCB",
    65: "HTTPS",
    99: "SPF",
    255: "ANY",
    257: "CAA",
}
RCODES: Final = {
    0: "NOERROR",
    1: "FORMERR",
    2: "SERVFAIL",
    3: "NXDOMAIN",
    4: "NOTIMP",
    5: "REFUSED",
    6: "YXDOMAIN",
    7: "YXRRSET",
    8: "NXRRSET",
    9: "NOTAUTH",
    10: "NOTZONE",
}
MAX_POINTERS: Final = 16
MAX_NAME: Final = 255
MAX_RECORDS: Final = 256  # records per section we look at; more is counted but not decoded
MAX_TCP_MESSAGE: Final = 65535


class DnsError(ValueError):
    pass


@dataclass(slots=True, init=False)
class DnsRecord:
    rrname: str
    rrtype: int
    rrclass: int = 1
    ttl: int = 0
    rdata: str = ""

    def __init__(
        self,
        rrname: str,
        rrtype: int,
        rrclass: int = 1,
        ttl: int = 0,
        rdata: str = "",
    ) -> None:
        # Written out for the compiled build: see Packet.__init__.
        self.rrname = rrname
        self.rrtype = rrtype
        self.rrclass = rrclass
        self.ttl = ttl
        self.rdata = rdata

    @property
    def type_name(self) -> str:
        return RRTYPES.get(self.rrtype, str(self.rrtype))


@dataclass(slots=True, init=False)
class DnsMessage:
    id: int
    flags: int
    queries: list[DnsRecord] = field(default_factory=list)
    answers: list[DnsRecord] = field(default_factory=list)
    authorities: list[DnsRecord] = field(default_factory=list)
    truncated_sections: bool = False

    def __init__(
        self,
        id: int,
        flags: int,
        queries: list[DnsRecord] | None = None,
        answers: list[DnsRecord] | None = None,
        authorities: list[DnsRecord] | None = None,
        truncated_sections: bool = False,
    ) -> None:
        # Written out for the compiled build: see Packet.__init__.
        self.id = id
        self.flags = flags
        self.queries = [] if queries is None else queries
        self.answers = [] if answers is None else answers
        self.authorities = [] if authorities is None else authorities
        self.truncated_sections = truncated_sections

    @property
    def is_response(self) -> bool:
        return bool(self.flags & 0x8000)

    @property
    def rcode(self) -> int:
        return self.flags & 0xF

    @property
    def rcode_name(self) -> str:
        return RCODES.get(self.rcode, str(self.rcode))

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF

    def eve(self, tx_id: int = 0) -> dict[str, Any]:
        """Suricata's EVE `dns` object, version 2 layout."""
        q = self.queries[0] if self.queries else None
        if not self.is_response:
            out: dict[str, Any] = {"version": 2, "type": "query", "id": self.id}
            if q:
                out["rrname"] = q.rrname
                out["rrtype"] = q.type_name
            out["tx_id"] = tx_id
            out["opcode"] = self.opcode
            return out
        out = {
            "version": 2,
            "type": "answer",
            "id": self.id,
            "flags": hex(self.flags)[2:],
            "qr": True,
        }
        for bit, name in ((0x0400, "aa"), (0x0200, "tc"), (0x0100, "rd"), (0x0080, "ra")):
            if self.flags & bit:
                out[name] = True
        out["opcode"] = self.opcode
        if q:
            out["rrname"] = q.rrname
            out["rrtype"] = q.type_name
        out["rcode"] = self.rcode_name
        if self.answers:
            out["answers"] = [
                {"rrname": a.rrname, "rrtype": a.type_name, "ttl": a.ttl, "rdata": a.rdata}
                for a in self.answers
            ]
            grouped: dict[str, list[str]] = {}
            for a in self.answers:
                grouped.setdefault(a.type_name, []).append(a.rdata)
            out["grouped"] = grouped
        if self.authorities:
            out["authorities"] = [
                {"rrname": a.rrname, "rrtype": a.type_name, "ttl": a.ttl} for a in self.authorities
            ]
        return out


def read_name(data: bytes, off: int) -> tuple[str, int]:
    """Decode a (possibly compressed) name at `off`; returns (name, offset after it)."""
    labels: list[str] = []
    jumps = 0
    end = -1
    total = 0
    n = len(data)
    while True:
        if off >= n:
            raise DnsError("name runs past the end of the message")
        ln = data[off]
        if ln == 0:
            off += 1
            break
        if ln & 0xC0 == 0xC0:
            if off + 1 >= n:
                raise DnsError("truncated compression pointer")
            jumps += 1
            if jumps > MAX_POINTERS:
                raise DnsError("too many compression pointers (loop)")
            if end < 0:
                end = off + 2
            off = ((ln & 0x3F) << 8) | data[off + 1]
            continue
        if ln & 0xC0:
            raise DnsError(f"unsupported label type 0x{ln:02x}")
        if off + 1 + ln > n:
            raise DnsError("label runs past the end of the message")
        total += ln + 1
        if total > MAX_NAME:
            raise DnsError("name longer than 255 bytes")
        labels.append(data[off + 1 : off + 1 + ln].decode("ascii", "backslashreplace"))
        off += 1 + ln
    return ".".join(labels), (end if end >= 0 else off)


def _rdata(data: bytes, off: int, rtype: int, rdlen: int) -> str:
    rd = data[off : off + rdlen]
    try:
        if rtype == 1 and rdlen == 4:
            return socket.inet_ntop(socket.AF_INET, rd)
        if rtype == 28 and rdlen == 16:
            return socket.inet_ntop(socket.AF_INET6, rd)
        if rtype in (2, 5, 12):
            return read_name(data, off)[0]
        if rtype == 15 and rdlen >= 3:
            return read_name(data, off + 2)[0]
        if rtype == 16:
            parts = []
            i = 0
            while i < len(rd):
                ln = rd[i]
                parts.append(rd[i + 1 : i + 1 + ln].decode("utf-8", "replace"))
                i += 1 + ln
            return "".join(parts)
    except DnsError:
        return ""
    return rd.hex()


def parse_message(data: bytes) -> DnsMessage:
    if len(data) < 12:
        raise DnsError(f"message of {len(data)} bytes is shorter than the 12-byte header")
    mid, flags, qd, an, ns, _ar = struct.unpack_from("!HHHHHH", data, 0)
    msg = DnsMessage(mid, flags)
    off = 12
    for _ in range(min(qd, MAX_RECORDS)):
        name, off = read_name(data, off)
        if off + 4 > len(data):
            raise DnsError("question truncated")
        qtype, qclass = struct.unpack_from("!HH", data, off)
        off += 4
        msg.queries.append(DnsRecord(name, qtype, qclass))
    for section, count in ((msg.answers, an), (msg.authorities, ns)):
        for i in range(count):
            if i >= MAX_RECORDS:
                msg.truncated_sections = True
                break
            if off >= len(data):
                # Truncated (TC) answers are common over UDP: keep what was there.
                msg.truncated_sections = True
                return msg
            name, off = read_name(data, off)
            if off + 10 > len(data):
                msg.truncated_sections = True
                return msg
            rtype, rclass, ttl, rdlen = struct.unpack_from("!HHIH", data, off)
            off += 10
            if off + rdlen > len(data):
                msg.truncated_sections = True
                return msg
            section.append(DnsRecord(name, rtype, rclass, ttl, _rdata(data, off, rtype, rdlen)))
            off += rdlen
    return msg


class DnsTcpParser:
    """Splits a TCP byte stream into DNS messages (2-byte length prefix)."""

    __slots__ = ("buf", "error")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.error = ""

    def feed(self, data: bytes) -> list[DnsMessage]:
        if self.error:
            return []
        self.buf += data
        out = []
        while len(self.buf) >= 2:
            ln = int.from_bytes(self.buf[:2], "big")
            if ln < 12:
                self.error = f"DNS over TCP message length {ln} too short"
                self.buf.clear()
                break
            if len(self.buf) < 2 + ln:
                break
            msg = bytes(self.buf[2 : 2 + ln])
            del self.buf[: 2 + ln]
            try:
                out.append(parse_message(msg))
            except DnsError as exc:
                self.error = str(exc)
        return out
