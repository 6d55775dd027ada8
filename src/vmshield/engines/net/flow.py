"""Flow table: bidirectional flows keyed by 5-tuple and VLAN, with per-state timeouts and a cap.

`flow_id` is computed the way Suricata computes it (start time bits above a 32-bit flow hash,
reduced to 51 bits so JSON consumers keep it exact); `community_id` is Community ID v1
(github.com/corelight/community-id-spec), the same string Zeek and Suricata print.
"""

from __future__ import annotations

import binascii
import hashlib
import heapq
import itertools
import struct
import zlib
from typing import Any, Final

from vmshield.engines.net.packet import (
    ACK,
    FIN,
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    RST,
    SYN,
    Packet,
)
from vmshield.engines.net.stream import TcpStreams
from vmshield.event_stamps import format_timestamp

# TCP connection states (the subset that matters for timeouts and `flow:established`).
TCP_NONE: Final = 0
TCP_SYN_SENT: Final = 1
TCP_SYN_RECV: Final = 2
TCP_ESTABLISHED: Final = 3
TCP_CLOSING: Final = 4
TCP_CLOSED: Final = 5
TCP_STATE_NAMES: Final = ("none", "syn_sent", "syn_recv", "established", "closing", "closed")

# Generic flow states, as in Suricata's flow timeouts (new / established / closed).
STATE_NEW: Final = 0
STATE_ESTABLISHED: Final = 1
STATE_CLOSED: Final = 2
_STATE_NAMES: Final = ("new", "established", "closed")

PROTO_NAMES: Final = {
    PROTO_TCP: "TCP",
    PROTO_UDP: "UDP",
    PROTO_ICMP: "ICMP",
    PROTO_ICMPV6: "IPv6-ICMP",
}

# Community ID: ICMP type pairs that make a bidirectional conversation.
_ICMP4_PAIRS: Final = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 10: 9, 9: 10, 17: 18, 18: 17}
_ICMP6_PAIRS: Final = {
    128: 129,
    129: 128,
    130: 131,
    131: 130,
    133: 134,
    134: 133,
    135: 136,
    136: 135,
    139: 140,
    140: 139,
    144: 145,
    145: 144,
}


# Bound once: every flow event computes a community id, and module attribute lookups, struct's
# format cache and base64's wrapper cost more than the SHA-1 itself.
_sha1: Final = hashlib.sha1
_b64: Final = binascii.b2a_base64
_CID_SEED: Final = struct.Struct("!H").pack
_CID_TAIL: Final = struct.Struct("!BBHH").pack


def community_id(src: bytes, dst: bytes, proto: int, sport: int, dport: int, seed: int = 0) -> str:
    """Community ID v1 of a flow, from packed addresses."""
    one_way = False
    if proto in (PROTO_ICMP, PROTO_ICMPV6):
        pairs = _ICMP4_PAIRS if proto == PROTO_ICMP else _ICMP6_PAIRS
        itype, icode = sport, dport
        if itype in pairs:
            sport, dport = itype, pairs[itype]
        else:
            sport, dport, one_way = itype, icode, True
    if not (one_way or src < dst or (src == dst and sport < dport)):
        src, dst, sport, dport = dst, src, dport, sport
    digest = _sha1(_CID_SEED(seed) + src + dst + _CID_TAIL(proto, 0, sport, dport)).digest()
    return "1:" + _b64(digest, newline=False).decode()


def flow_key(p: Packet) -> tuple[Any, ...]:
    """Direction-independent key: the lower (address, port) end first."""
    proto = p.proto
    if proto in (PROTO_ICMP, PROTO_ICMPV6):
        # ICMP has no ports; a request and its reply share one flow (ids in the payload vary).
        sp = dp = 0
    else:
        sp, dp = p.sport, p.dport
    s, d = p.src_bytes, p.dst_bytes
    if s < d or (s == d and sp <= dp):
        return (proto, p.vlan, s, sp, d, dp)
    return (proto, p.vlan, d, dp, s, sp)


class Flow:
    """State of one bidirectional conversation. `src*` is the side that sent the first packet."""

    __slots__ = (
        "key",
        "hash",
        "flow_id",
        "proto",
        "vlan",
        "iface",
        "src",
        "dst",
        "src_bytes",
        "dst_bytes",
        "sport",
        "dport",
        "ip_version",
        "start",
        "last",
        "pkts_toserver",
        "pkts_toclient",
        "bytes_toserver",
        "bytes_toclient",
        "state",
        "tcp_state",
        "tcp_flags_ts",
        "tcp_flags_tc",
        "app_proto",
        "app_proto_ts",
        "app_proto_tc",
        "app",
        "streams",
        "alerted",
        "bypassed",
        "action",
        "end_reason",
        "icmp_type",
        "icmp_code",
        "_community_id",
    )

    def __init__(self, key: tuple[Any, ...], fhash: int, p: Packet) -> None:
        self.key = key
        self.hash = fhash
        self.proto = p.proto
        self.vlan = p.vlan
        self.iface = p.iface
        self.src, self.dst = p.src, p.dst
        self.src_bytes, self.dst_bytes = p.src_bytes, p.dst_bytes
        self.sport, self.dport = p.sport, p.dport
        self.ip_version = p.ip_version
        self.icmp_type, self.icmp_code = p.icmp_type, p.icmp_code
        self.start = self.last = p.ts
        secs = int(p.ts)
        usecs = int(round((p.ts - secs) * 1e6)) % 1000000
        # Suricata's FlowGetId: start seconds and microseconds above the flow hash, 51 bits.
        self.flow_id = (
            ((secs & 0xFFFF) << 48) | ((usecs & 0xFFFF) << 32) | fhash
        ) & 0x7FFFFFFFFFFFF
        self.pkts_toserver = self.pkts_toclient = 0
        self.bytes_toserver = self.bytes_toclient = 0
        self.state = STATE_NEW
        self.tcp_state = TCP_NONE
        self.tcp_flags_ts = self.tcp_flags_tc = 0
        self.app_proto = ""  # "http", "dns", "tls", "failed" …, "" while undetermined
        self.app_proto_ts = self.app_proto_tc = ""
        self.app: Any = None  # the app-layer parser state
        self.streams: TcpStreams | None = None  # TCP reassembly, both ways; TCP flows only
        self.alerted = False
        self.bypassed = False
        self.action = ""  # "drop" once a drop rule fired: every later packet is dropped too
        self.end_reason = "timeout"
        self._community_id = ""

    @property
    def community_id(self) -> str:
        if not self._community_id:
            if self.proto in (PROTO_ICMP, PROTO_ICMPV6):
                # A truncated ICMP header has no type/code (-1): hash as 0/0.
                self._community_id = community_id(
                    self.src_bytes,
                    self.dst_bytes,
                    self.proto,
                    max(self.icmp_type, 0),
                    max(self.icmp_code, 0),
                )
            else:
                self._community_id = community_id(
                    self.src_bytes, self.dst_bytes, self.proto, self.sport, self.dport
                )
        return self._community_id

    @property
    def state_name(self) -> str:
        return _STATE_NAMES[self.state]

    def update(self, p: Packet, toserver: bool) -> None:
        """Counters and state machine for one packet of this flow."""
        self.last = p.ts
        n = p.ip_len or len(p.raw)
        if toserver:
            self.pkts_toserver += 1
            self.bytes_toserver += n
        else:
            self.pkts_toclient += 1
            self.bytes_toclient += n
        if self.proto == PROTO_TCP:
            flags = p.tcp_flags
            # The common case (ACK without SYN/FIN/RST on an established connection) stays here.
            if self.tcp_state == TCP_ESTABLISHED and not flags & 0x07:
                if toserver:
                    self.tcp_flags_ts |= flags
                else:
                    self.tcp_flags_tc |= flags
                return
            self._tcp_update(flags, toserver)
        elif self.state == STATE_NEW and self.pkts_toserver and self.pkts_toclient:
            self.state = STATE_ESTABLISHED

    def _tcp_update(self, flags: int, toserver: bool) -> None:
        if toserver:
            self.tcp_flags_ts |= flags
        else:
            self.tcp_flags_tc |= flags
        st = self.tcp_state
        if flags & RST:
            self.tcp_state = TCP_CLOSED
            self.state = STATE_CLOSED
            self.end_reason = "shutdown"
            return
        if st == TCP_NONE:
            if flags & SYN and not flags & ACK and toserver:
                self.tcp_state = TCP_SYN_SENT
            elif flags & ACK:
                # Picked up mid-stream (capture started late): treat as established.
                self.tcp_state = TCP_ESTABLISHED
                self.state = STATE_ESTABLISHED
        elif st == TCP_SYN_SENT:
            if flags & SYN and flags & ACK and not toserver:
                self.tcp_state = TCP_SYN_RECV
        elif st == TCP_SYN_RECV and flags & ACK and toserver and not flags & SYN:
            self.tcp_state = TCP_ESTABLISHED
            self.state = STATE_ESTABLISHED
        if flags & FIN and self.tcp_state >= TCP_ESTABLISHED:
            both = (self.tcp_flags_ts & FIN) and (self.tcp_flags_tc & FIN)
            if both:
                self.tcp_state = TCP_CLOSED
                self.state = STATE_CLOSED
                self.end_reason = "shutdown"
            else:
                self.tcp_state = TCP_CLOSING

    def eve_flow(self) -> dict[str, Any]:
        """The `flow` object of a Suricata flow event."""
        out: dict[str, Any] = {
            "pkts_toserver": self.pkts_toserver,
            "pkts_toclient": self.pkts_toclient,
            "bytes_toserver": self.bytes_toserver,
            "bytes_toclient": self.bytes_toclient,
            "start": format_timestamp(self.start),
            "end": format_timestamp(self.last),
            "age": int(self.last - self.start),
            "state": self.state_name,
            "reason": self.end_reason,
            "alerted": self.alerted,
        }
        if self.bypassed:
            out["bypass"] = "local"
        if self.action:
            out["action"] = self.action
        return out


# Suricata's default timeouts (suricata.yaml: flow-timeouts), seconds: new, established, closed.
DEFAULT_TIMEOUTS: Final[dict[int, tuple[float, float, float]]] = {
    PROTO_TCP: (60.0, 600.0, 60.0),
    PROTO_UDP: (30.0, 300.0, 0.0),
    PROTO_ICMP: (30.0, 300.0, 0.0),
    0: (30.0, 300.0, 0.0),
}
DEFAULT_EMERGENCY_TIMEOUTS: Final[dict[int, tuple[float, float, float]]] = {
    PROTO_TCP: (10.0, 100.0, 5.0),
    PROTO_UDP: (10.0, 100.0, 0.0),
    PROTO_ICMP: (10.0, 100.0, 0.0),
    0: (10.0, 100.0, 0.0),
}


_KEY_TAIL: Final = struct.Struct("!BHHH").pack


def _for_proto(
    table: dict[int, tuple[float, float, float]], proto: int
) -> tuple[float, float, float]:
    """A protocol's (new, established, closed) timeouts: ICMPv6 as ICMP, others as default."""
    t = table.get(proto)
    if t is None:
        t = table[PROTO_ICMP] if proto == PROTO_ICMPV6 else table[0]
    return t


def _soonest_table(
    timeouts: dict[int, tuple[float, float, float]],
) -> dict[int, tuple[float, float, float]]:
    """Per protocol and state, the shortest timeout a flow in that state can still get:
    states only move forward (new, established, closed), and only TCP flows close."""
    out: dict[int, tuple[float, float, float]] = {}
    for proto, (new, est, closed) in timeouts.items():
        if proto == PROTO_TCP:
            out[proto] = (min(new, est, closed), min(est, closed), closed)
        else:
            out[proto] = (min(new, est), est, closed)
    return out


class FlowTable:
    """All live flows, bounded by `max_flows`.

    When full, the table enters emergency mode (Suricata's term): it expires with the short
    emergency timeouts and, if that frees nothing, evicts the oldest flows. Evicted flows are
    returned like expired ones, so nothing disappears without its flow event.

    Expiry does not walk the whole table at every pass (a pass a second over 65 536 flows was
    a tenth of a busy engine's time): each flow is filed under the second when it may first
    time out (`_plan`), and a pass looks only at the flows filed up to now; those still alive
    are filed again. A flow is looked at about once per timeout, not once per second.
    """

    def __init__(
        self,
        max_flows: int = 65536,
        timeouts: dict[int, tuple[float, float, float]] | None = None,
        emergency_timeouts: dict[int, tuple[float, float, float]] | None = None,
        emergency_recovery: float = 0.3,
    ) -> None:
        self.max_flows = max(16, max_flows)
        self.timeouts = dict(DEFAULT_TIMEOUTS)
        if timeouts:
            self.timeouts.update(timeouts)
        self.emergency_timeouts = dict(DEFAULT_EMERGENCY_TIMEOUTS)
        if emergency_timeouts:
            self.emergency_timeouts.update(emergency_timeouts)
        self.emergency_recovery = emergency_recovery
        self.flows: dict[tuple[Any, ...], Flow] = {}
        self.emergency = False
        self.created = 0
        self.evicted = 0
        self.emergency_entered = 0
        self.timed_out = 0
        # Flows pushed out by the cap, waiting for the engine to log them.
        self.pending_ended: list[Flow] = []
        # Expiry plan: second -> flows that may time out then, and a heap of those seconds.
        # A flow ended some other way stays filed until its second comes (then skipped).
        self._due: dict[int, list[Flow]] = {}
        self._due_seconds: list[int] = []
        self._planned = 0  # entries in the plan, live or not: bounded (see get_or_create)
        # Per protocol and state, the shortest timeout the flow can still get, for the normal
        # and the emergency timeouts (the plan follows the mode, see _plan).
        self._soonest = _soonest_table(self.timeouts)
        self._soonest_emergency = _soonest_table(self.emergency_timeouts)

    def __len__(self) -> int:
        return len(self.flows)

    def get_or_create(self, p: Packet) -> tuple[Flow, bool]:
        """The flow of `p` and whether `p` goes to the server (from the flow's initiator)."""
        key = flow_key(p)
        f = self.flows.get(key)
        if f is not None:
            return f, (p.src_bytes == f.src_bytes and p.sport == f.sport)
        if len(self.flows) >= self.max_flows:
            self._make_room(p.ts)
        fhash = zlib.crc32(key[2] + key[4] + _KEY_TAIL(key[0], key[3], key[5], key[1] & 0xFFFF))
        f = Flow(key, fhash, p)
        self.flows[key] = f
        self.created += 1
        self._plan(f, p.ts)
        if self._planned > 2 * self.max_flows:
            # Flows ended early (a flood through a full table) leave their entries behind
            # until their second comes: start over from the live flows.
            self._replan(p.ts)
        return f, True

    def _replan(self, now: float) -> None:
        self._due.clear()
        self._due_seconds.clear()
        self._planned = 0
        for live in self.flows.values():
            self._plan(live, now)

    def _plan(self, f: Flow, now: float) -> None:
        """File `f` under the first second at which it can time out: its deadline in its
        current state, unless a later packet moves it to a state with a shorter timeout (that
        packet comes after `now`, so not before `now` plus the shortest timeout left)."""
        # In emergency mode the short timeouts apply: the flows were planned again with them
        # when it began (_make_room); a plan made with shorter timeouts than those that apply
        # later only looks at a flow early.
        table = self.emergency_timeouts if self.emergency else self.timeouts
        soonest = self._soonest_emergency if self.emergency else self._soonest
        state = f.state
        when = min(
            f.last + _for_proto(table, f.proto)[state],
            max(f.last, now) + _for_proto(soonest, f.proto)[state],
        )
        second = int(when)
        due = self._due.get(second)
        if due is None:
            self._due[second] = [f]
            heapq.heappush(self._due_seconds, second)
        else:
            due.append(f)
        self._planned += 1

    def remove(self, f: Flow) -> None:
        self.flows.pop(f.key, None)

    def _timeout(self, f: Flow, table: dict[int, tuple[float, float, float]]) -> float:
        return _for_proto(table, f.proto)[f.state]

    def expire(self, now: float, *, force: bool = False) -> list[Flow]:
        """Remove and return flows idle past their timeout (all of them when `force`)."""
        out: list[Flow] = []
        if force:
            out = list(self.flows.values())
            self.flows.clear()
            self._due.clear()
            self._due_seconds.clear()
            self._planned = 0
        else:
            table = self.emergency_timeouts if self.emergency else self.timeouts
            flows, due, seconds = self.flows, self._due, self._due_seconds
            alive: list[Flow] = []
            while seconds and seconds[0] <= now:
                batch = due.pop(heapq.heappop(seconds))
                self._planned -= len(batch)
                for f in batch:
                    if flows.get(f.key) is not f:
                        continue  # ended already (evicted, or a new connection took its key)
                    if now - f.last >= self._timeout(f, table):
                        out.append(f)
                        del flows[f.key]
                    else:
                        alive.append(f)
            # Filed again after the loop: a deadline within this second goes under this
            # second, for the next pass to look at.
            for f in alive:
                self._plan(f, now)
            self.timed_out += len(out)
        if self.emergency and len(self.flows) < self.max_flows * self.emergency_recovery:
            self.emergency = False
            self._replan(now)  # with the normal timeouts again
        if self.pending_ended:
            out = self.pending_ended + out
            self.pending_ended = []
        return out

    def _make_room(self, now: float) -> None:
        # Bounded work per call: a scan of the whole table for every new flow made a full table
        # (a busy host, a SYN flood) quadratic. Dict order is creation order, so the oldest
        # flows come first: look at a window of them, free the idle ones and, if that is not
        # enough, the oldest of the window, so that room for a batch of new flows is made at once.
        if not self.emergency:
            self.emergency = True
            self.emergency_entered += 1
            self._replan(now)  # with the emergency timeouts, which are shorter
        table = self.emergency_timeouts
        batch = max(1, self.max_flows // 100)
        window = list(itertools.islice(self.flows.values(), 8 * batch))
        freed = []
        kept = []
        for f in window:
            if now - f.last >= self._timeout(f, table):
                freed.append(f)
                del self.flows[f.key]
            else:
                kept.append(f)
        self.timed_out += len(freed)
        if len(freed) < batch:
            # Nothing idle enough: evict the oldest-created flows.
            forced = kept[: batch - len(freed)]
            for f in forced:
                del self.flows[f.key]
                f.end_reason = "forced"
            self.evicted += len(forced)
            freed.extend(forced)
        self.pending_ended.extend(freed)
