"""TCP stream reassembly, one `StreamDir` per direction of a flow.

Segments are placed by sequence number relative to the stream's start; out-of-order segments wait
in a bounded map until the gap fills; overlapping data is first-wins (what was received first is
kept, the later copy is dropped; a later copy with *different* bytes is reported, as Suricata's
`stream.reassembly_overlap_different_data`). Data beyond `depth` bytes of a direction is not
reassembled: the direction is then "done" and the engine may bypass the flow.
"""

from __future__ import annotations

from typing import Final

from vmshield.engines.net.packet import FIN, RST, SYN

SEQ_MOD: Final = 1 << 32
HALF: Final = 1 << 31

EV_OVERLAP_DIFF: Final = "stream.reassembly_overlap_different_data"
EV_RETRANS: Final = "stream.pkt_retransmission"
EV_SEG_LIMIT: Final = "stream.reassembly_segment_limit"
EV_MEMCAP: Final = "stream.reassembly_memcap"


class StreamMemory:
    """Shared accounting of bytes held out of order, over all streams (stream.memcap)."""

    __slots__ = ("cap", "used", "drops")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.used = 0
        self.drops = 0


class StreamDir:
    """One direction of a TCP connection."""

    __slots__ = (
        "base",
        "next_rel",
        "pending",
        "pending_bytes",
        "depth",
        "max_segments",
        "done",
        "fin",
        "rst",
        "retransmissions",
        "mem",
        "delivered",
        "gap",
    )

    def __init__(self, depth: int, mem: StreamMemory, max_segments: int = 1024) -> None:
        self.base = -1  # sequence number of relative offset 0; -1 until known
        self.next_rel = 0  # next in-order byte (relative)
        self.pending: dict[int, bytes] = {}  # rel offset -> data, non-overlapping, >= next_rel
        self.pending_bytes = 0
        self.depth = depth
        self.max_segments = max_segments
        self.done = False  # depth reached
        self.fin = False
        self.rst = False
        self.retransmissions = 0
        self.mem = mem
        self.delivered = 0  # bytes handed on (== next_rel until depth)
        self.gap = False

    def add(self, seq: int, flags: int, data: bytes, events: list[str]) -> bytes:
        """Place one segment; return the newly in-order bytes (maybe empty)."""
        if flags & RST:
            self.rst = True
        if self.base < 0:
            # SYN consumes one sequence number; without a SYN (mid-stream pickup) start here.
            self.base = (seq + 1) % SEQ_MOD if flags & SYN else seq
            if not data:
                return b""
        if flags & SYN:
            seq = (seq + 1) % SEQ_MOD
        if flags & FIN:
            self.fin = True
        if not data or self.done:
            return b""
        rel = (seq - self.base) % SEQ_MOD
        if rel >= HALF:
            rel -= SEQ_MOD  # before the start: (mostly) an old retransmission
        end = rel + len(data)
        if end <= self.next_rel:
            self.retransmissions += 1
            events.append(EV_RETRANS)
            return b""
        if rel < self.next_rel:
            # Partly old: the delivered part wins; keep only the new tail.
            data = data[self.next_rel - rel :]
            rel = self.next_rel
        if end > self.depth:
            data = data[: max(0, self.depth - rel)]
            end = rel + len(data)
            if not data:
                self._reach_depth()
                return b""
        if rel == self.next_rel and not self.pending:
            # The common case: in order, nothing waiting.
            self.next_rel = end
            self.delivered = end
            if end >= self.depth:
                self._reach_depth()
            return data
        self._insert(rel, data, events)
        out = []
        nxt = self.next_rel
        pend = self.pending
        while nxt in pend:
            d = pend.pop(nxt)
            self.pending_bytes -= len(d)
            self.mem.used -= len(d)
            out.append(d)
            nxt += len(d)
        self.next_rel = self.delivered = nxt
        if nxt >= self.depth:
            self._reach_depth()
        return b"".join(out)

    def _insert(self, rel: int, data: bytes, events: list[str]) -> None:
        end = rel + len(data)
        pieces = [(rel, end)]
        for o, d in self.pending.items():
            e = o + len(d)
            if e <= rel or o >= end:
                continue
            # Compare the overlapping bytes: first-wins, but different data is an evasion sign.
            a, b = max(o, rel), min(e, end)
            if d[a - o : b - o] != data[a - rel : b - rel]:
                events.append(EV_OVERLAP_DIFF)
            nxt = []
            for pa, pb in pieces:
                if e <= pa or o >= pb:
                    nxt.append((pa, pb))
                    continue
                if pa < o:
                    nxt.append((pa, o))
                if e < pb:
                    nxt.append((e, pb))
            pieces = nxt
        if not pieces and self.pending:
            self.retransmissions += 1
            events.append(EV_RETRANS)
            return
        for pa, pb in pieces:
            if len(self.pending) >= self.max_segments:
                events.append(EV_SEG_LIMIT)
                self.mem.drops += 1
                return
            if self.mem.used + (pb - pa) > self.mem.cap:
                events.append(EV_MEMCAP)
                self.mem.drops += 1
                return
            # Out-of-order data is split at the boundaries of what is already held.
            self._split_insert(pa, data[pa - rel : pb - rel])

    def _split_insert(self, rel: int, data: bytes) -> None:
        # Pieces may abut existing segments; keep each as its own key so `while nxt in pend`
        # walks across them.
        self.pending[rel] = data
        self.pending_bytes += len(data)
        self.mem.used += len(data)

    def _reach_depth(self) -> None:
        self.done = True
        if self.pending:
            self.mem.used -= self.pending_bytes
            self.pending.clear()
            self.pending_bytes = 0

    def release(self) -> None:
        """Give back the memory of waiting segments (flow end)."""
        self.mem.used -= self.pending_bytes
        self.pending.clear()
        self.pending_bytes = 0


class TcpStreams:
    """Both directions of one connection."""

    __slots__ = ("ts", "tc")

    def __init__(self, depth: int, mem: StreamMemory, max_segments: int = 1024) -> None:
        self.ts = StreamDir(depth, mem, max_segments)
        self.tc = StreamDir(depth, mem, max_segments)

    def release(self) -> None:
        self.ts.release()
        self.tc.release()
