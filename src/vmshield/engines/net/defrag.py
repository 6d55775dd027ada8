"""IPv4 and IPv6 fragment reassembly, with overlap (teardrop) and oversize (ping of death) checks.

Overlapping data is resolved first-wins (the BSD policy Suricata defaults to): bytes already held
are kept, the newcomer's copy of them is discarded, and the fragment that overlapped carries the
anomaly `decoder.ipv4.frag_overlap` / `decoder.ipv6.frag_overlap`. A datagram whose fragments
reach past 65 535 bytes gets `decoder.ipv4.frag_pkt_too_large` / `decoder.ipv6.frag_pkt_too_large`
and is never reassembled. The attack detector reads these names from `Packet.anomalies`.
Memory is bounded by `memcap` bytes and `max_trackers`; trackers idle past `timeout` are dropped.
"""

from __future__ import annotations

import struct
from typing import Any, Final

from vmshield.engines.net.decode import LINKTYPE_RAW, decode
from vmshield.engines.net.packet import Packet

ANOMALY_FRAG_OVERLAP: Final = {4: "decoder.ipv4.frag_overlap", 6: "decoder.ipv6.frag_overlap"}
ANOMALY_FRAG_TOO_LARGE: Final = {
    4: "decoder.ipv4.frag_pkt_too_large",
    6: "decoder.ipv6.frag_pkt_too_large",
}
ANOMALY_FRAG_IGNORED: Final = {4: "decoder.ipv4.frag_ignored", 6: "decoder.ipv6.frag_ignored"}
MAX_DATAGRAM: Final = 65535


class _Tracker:
    __slots__ = ("frags", "first_hdr", "total", "held", "last", "start", "bad", "proto", "overlap")

    def __init__(self, ts: float, proto: int) -> None:
        self.frags: list[tuple[int, bytes]] = []  # (offset, data), non-overlapping
        self.first_hdr = b""  # IP header of the offset-0 fragment
        self.total = -1  # payload length, known once the last fragment (MF=0) arrived
        self.held = 0
        self.start = self.last = ts
        self.bad = False  # oversize: drop every later fragment of this datagram
        self.proto = proto
        self.overlap = False


class Defragmenter:
    def __init__(
        self,
        *,
        timeout: float = 60.0,
        memcap: int = 32 * 1024 * 1024,
        max_trackers: int = 65535,
        max_frags: int = 256,
    ) -> None:
        self.timeout = timeout
        self.memcap = memcap
        self.max_trackers = max_trackers
        self.max_frags = max_frags
        self.trackers: dict[tuple[Any, ...], _Tracker] = {}
        self.held = 0
        self.stats = {
            "fragments": 0,
            "reassembled": 0,
            "overlaps": 0,
            "too_large": 0,
            "timeouts": 0,
            "memcap_drops": 0,
            "max_frags_drops": 0,
        }

    def add(self, p: Packet) -> Packet | None:
        """Take one fragment; return the reassembled datagram when it completes."""
        st = self.stats
        st["fragments"] += 1
        v = p.ip_version
        key = (v, p.vlan, p.src_bytes, p.dst_bytes, p.ip_id, p.proto)
        t = self.trackers.get(key)
        if t is None:
            if len(self.trackers) >= self.max_trackers:
                self._evict_oldest()
            t = self.trackers[key] = _Tracker(p.ts, p.proto)
        t.last = p.ts
        if t.bad:
            return None
        data = bytes(p.payload)
        off = p.frag_offset
        hdr_len = len(p.ip_hdr) if v == 4 else 0
        if off + len(data) + hdr_len > MAX_DATAGRAM:
            # Ping of death: the reassembled datagram would exceed the IP maximum.
            p.add_anomaly(ANOMALY_FRAG_TOO_LARGE[v])
            st["too_large"] += 1
            self._drop(key, t)
            t.bad = True
            self.trackers[key] = t  # remember, so the rest of it is dropped silently
            return None
        if len(t.frags) >= self.max_frags:
            p.add_anomaly(ANOMALY_FRAG_IGNORED[v])
            st["max_frags_drops"] += 1
            self._drop(key, t)
            return None
        if not p.more_fragments:
            end = off + len(data)
            if t.total >= 0 and t.total != end:
                p.add_anomaly(ANOMALY_FRAG_OVERLAP[v])  # two different "last" fragments
                st["overlaps"] += 1
            elif t.total < 0:
                t.total = end
        if off == 0 and not t.first_hdr:
            t.first_hdr = p.ip_hdr
        pieces = self._uncovered(t, off, data)
        if pieces is None:
            p.add_anomaly(ANOMALY_FRAG_OVERLAP[v])
            st["overlaps"] += 1
            t.overlap = True
            pieces = self._uncovered_pieces(t, off, data)
        for o, d in pieces:
            t.frags.append((o, d))
            t.held += len(d)
            self.held += len(d)
        if self.held > self.memcap:
            st["memcap_drops"] += 1
            self._evict_oldest()
            if key not in self.trackers:
                return None
        if t.total >= 0 and t.first_hdr:
            return self._try_complete(key, t, p)
        return None

    @staticmethod
    def _uncovered(t: _Tracker, off: int, data: bytes) -> list[tuple[int, bytes]] | None:
        """[(off, data)] when nothing overlaps, None when something does."""
        end = off + len(data)
        for o, d in t.frags:
            if o < end and off < o + len(d):
                return None
        return [(off, data)] if data else []

    @staticmethod
    def _uncovered_pieces(t: _Tracker, off: int, data: bytes) -> list[tuple[int, bytes]]:
        # First wins: keep only the byte ranges no earlier fragment covers.
        ranges = [(off, off + len(data))]
        for o, d in t.frags:
            e = o + len(d)
            nxt = []
            for a, b in ranges:
                if e <= a or o >= b:
                    nxt.append((a, b))
                    continue
                if a < o:
                    nxt.append((a, o))
                if e < b:
                    nxt.append((e, b))
            ranges = nxt
        return [(a, data[a - off : b - off]) for a, b in ranges if b > a]

    def _try_complete(self, key: tuple[Any, ...], t: _Tracker, p: Packet) -> Packet | None:
        t.frags.sort()
        pos = 0
        for o, d in t.frags:
            if o > pos:
                return None  # a hole
            pos = max(pos, o + len(d))
        if pos < t.total:
            return None
        buf = bytearray(t.total)
        for o, d in t.frags:
            buf[o : o + len(d)] = d[: max(0, t.total - o)]
        self._drop(key, t)
        self.stats["reassembled"] += 1
        if p.ip_version == 4:
            hdr = bytearray(t.first_hdr)
            struct.pack_into("!H", hdr, 2, len(hdr) + len(buf))
            struct.pack_into("!H", hdr, 6, 0)  # no MF, offset 0
            datagram = bytes(hdr) + bytes(buf)
        else:
            fixed = bytearray(t.first_hdr[:40])
            struct.pack_into("!H", fixed, 4, len(buf))
            fixed[6] = t.proto  # the upper layer follows directly
            datagram = bytes(fixed) + bytes(buf)
        r = decode(datagram, p.ts, LINKTYPE_RAW, p.iface, p.vlan)
        r.eth_src, r.eth_dst, r.eth_type = p.eth_src, p.eth_dst, p.eth_type
        r.linktype = LINKTYPE_RAW
        r.ip_id = p.ip_id
        r.reassembled = True  # flow:only_frag / no_frag
        return r

    def _drop(self, key: tuple[Any, ...], t: _Tracker) -> None:
        self.held -= t.held
        t.held = 0
        t.frags = []
        self.trackers.pop(key, None)

    def _evict_oldest(self) -> None:
        if not self.trackers:
            return
        key = next(iter(self.trackers))
        self._drop(key, self.trackers[key])

    def expire(self, now: float) -> int:
        """Drop trackers idle past the timeout; returns how many."""
        old = [k for k, t in self.trackers.items() if now - t.last >= self.timeout]
        for k in old:
            self._drop(k, self.trackers[k])
        self.stats["timeouts"] += len(old)
        return len(old)

    def __len__(self) -> int:
        return len(self.trackers)
