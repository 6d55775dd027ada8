"""Network attack detection (the vendor's "network attack blocker"): scans, floods, malformed
and spoofed packets, from decoded packets and the defragmenter's anomalies.

Pure and sans-IO: `AttackDetector(config).process(packet)` (alias `inspect`) returns a list of
`AttackVerdict`s; time comes only from `Packet.ts`. One `attack` event per attack episode (the
same attack from the same source, until it has been quiet for `episode_timeout` seconds): the
packet that starts it gets a verdict with the event, later packets of the episode get a verdict
with the same action and `event=None` (so they are dropped too) and increase its counters.

Every table is bounded (`max_sources`, `max_flows`) and expires idle entries, so a flood with
random source addresses costs a fixed amount of memory: the oldest entries are evicted first.

Which sources may be blocked is decided here and nowhere else (`may_block`, which the engine
also asks before an IDS rule blocks a source): `action="block"` is only ever returned for a
source that may be blocked. Never blocked: addresses in `never_block` (the operator's "do not
block" exclusions), loopback, unspecified, multicast and broadcast sources, and sources that are
spoofed by definition (martians, land); for those the action is downgraded to "terminate"
(drop the packets) and the event says why.

Detectors and their names (vendor style):
- Scan.Generic.PortScan.TCP   distinct destination ports of one target, any scan style (SYN,
                              FIN, NULL, Xmas, ACK without a known connection); ports that
                              accept the connection (SYN+ACK) stop counting
- Scan.Generic.PortScan.UDP   distinct destination ports, unsolicited datagrams only; ports
                              that answer stop counting
- Scan.Generic.PortSweep.TCP  one port on distinct hosts (a worm looking for a service);
                              hosts that accept stop counting
- Scan.Generic.PortSweep.UDP  the same for unsolicited datagrams; hosts that answer stop counting
- Scan.Generic.HostSweep.ICMP distinct destinations of echo (and timestamp/address) requests
- Scan.Generic.HostSweep.ARP  distinct addresses asked for by ARP requests
- DoS.Generic.SYNFlood        half-open connection attempts from one source to one target; and
                              from many (spoofed) sources to one target (`distributed`, one
                              episode per target, reported but not blocked by default)
- DoS.Generic.UDPFlood        unsolicited datagrams from one source to one target
- DoS.Generic.ICMPFlood       ICMP (requests, errors, IPv6 router advertisements: all but echo
                              replies) from one source to one target
- DoS.Generic.Land            source address equals destination address
- DoS.Generic.PingOfDeath     ICMP datagram reassembling past 65 535 bytes
- DoS.Generic.OversizedFragment  the same, any other protocol
- DoS.Generic.Teardrop        overlapping fragments
- DoS.Generic.Smurf           ICMP echo request to a broadcast address
- DoS.Generic.Fraggle         UDP echo/chargen to a broadcast address
- Scan.Generic.InvalidFlags.TCP  SYN+FIN, SYN+RST, FIN+RST, or flags without ACK that no stack
                              sends (the probes of OS fingerprinting)
- Spoofing.Generic.MartianSource  loopback, unspecified, multicast or broadcast source address
- Anomaly.Generic.SYNWithData  SYN carrying data without a TCP Fast Open option
- Spoofing.Generic.ARP        an IP address claimed by a second MAC address while the first
                              binding is fresh (ARP cache poisoning)
- Spoofing.Generic.NDP        the same for IPv6 neighbour advertisements
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Final

from vmshield.engines.net.packet import (
    ACK,
    FIN,
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    PSH,
    RST,
    SYN,
    URG,
    Packet,
)
from vmshield.event_stamps import format_timestamp
from vmshield.events import SEVERITY_HIGH, SEVERITY_MEDIUM, Event

ACTIONS: Final = ("block", "terminate", "ignore")
ETH_ARP: Final = 0x0806
_PROTO_NAMES: Final = {
    PROTO_ICMP: "ICMP",
    PROTO_TCP: "TCP",
    PROTO_UDP: "UDP",
    PROTO_ICMPV6: "IPv6-ICMP",
}
# ICMP types that ask for an answer (echo, timestamp, information, address mask) / IPv6 echo.
_ICMP4_REQUESTS: Final = frozenset({8, 13, 15, 17})
_ICMP6_REQUESTS: Final = frozenset({128})
_TFO_OPTION: Final = 34
_BROADCAST_MAC: Final = b"\xff\xff\xff\xff\xff\xff"


@dataclass(slots=True)
class DetectorConfig:
    """One detector: `threshold` events within `window` seconds trigger it."""

    enabled: bool = True
    threshold: int = 1
    window: float = 1.0
    action: str = "block"  # block (terminate + block the source) | terminate | ignore
    block_minutes: int = 60


MAX_BLOCK_MINUTES: Final = 32768  # the most a block lasts (about 22 days)


def _d(threshold: int = 1, window: float = 1.0, action: str = "block") -> Any:
    return field(default_factory=lambda: DetectorConfig(True, threshold, window, action, 60))


@dataclass(slots=True)
class AttackConfig:
    """Thresholds per detector. Defaults chosen so that browsing bursts, busy DNS clients, bulk
    transfers and monitoring pings stay well below them (see tests/unit/net/test_attacks.py)."""

    tcp_port_scan: DetectorConfig = _d(20, 5.0)  # distinct ports of one target
    udp_port_scan: DetectorConfig = _d(20, 5.0)
    tcp_port_sweep: DetectorConfig = _d(30, 5.0)  # distinct hosts on one port, not answered
    udp_port_sweep: DetectorConfig = _d(30, 5.0)
    icmp_host_sweep: DetectorConfig = _d(20, 5.0)  # distinct destinations
    arp_host_sweep: DetectorConfig = _d(64, 5.0, "ignore")  # cannot block by IP: report
    syn_flood: DetectorConfig = _d(500, 1.0)  # half-open attempts per window
    # Many (spoofed) sources against one target: no single source to block, so report only.
    syn_flood_distributed: DetectorConfig = _d(2000, 1.0, "ignore")
    udp_flood: DetectorConfig = _d(5000, 1.0)  # unsolicited datagrams per window
    icmp_flood: DetectorConfig = _d(500, 1.0)  # requests per window
    land: DetectorConfig = _d(1, 1.0, "terminate")  # spoofed by definition: never blocked
    ping_of_death: DetectorConfig = _d()
    oversized_fragment: DetectorConfig = _d()
    teardrop: DetectorConfig = _d()
    smurf: DetectorConfig = _d(1, 1.0, "terminate")  # the source is the spoofed victim
    fraggle: DetectorConfig = _d(1, 1.0, "terminate")
    invalid_tcp_flags: DetectorConfig = _d()
    martian_source: DetectorConfig = _d(1, 1.0, "terminate")
    syn_with_data: DetectorConfig = _d(1, 1.0, "ignore")
    arp_spoofing: DetectorConfig = _d(1, 1.0, "terminate")
    ndp_spoofing: DetectorConfig = _d(1, 1.0, "terminate")  # IPv6 neighbour advertisements
    episode_timeout: float = 60.0  # quiet seconds that end an attack episode
    episode_summary: bool = False  # also an event when an episode ends, with its totals
    arp_binding_age: float = 300.0  # a binding younger than this is "fresh"
    max_sources: int = 65536  # per table: scan and flood state, episodes
    max_flows: int = 131072  # remembered connections/datagram pairs (responses are not attacks)
    never_block: tuple[str, ...] = ()  # networks: "do not block" exclusions
    broadcast: tuple[str, ...] = ()  # networks whose broadcast addresses are protected segments

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AttackConfig:
        """From a parsed config section; unknown keys and bad values raise ValueError naming them."""
        cfg = cls()
        names = {f.name for f in fields(cls)}
        for key, value in data.items():
            if key not in names:
                raise ValueError(f"attacks: unknown setting {key!r}")
            current = getattr(cfg, key)
            if isinstance(current, DetectorConfig):
                if not isinstance(value, Mapping):
                    raise ValueError(f"attacks.{key}: expected a table of settings")
                det = replace(current)
                for k, v in value.items():
                    if k not in ("enabled", "threshold", "window", "action", "block_minutes"):
                        raise ValueError(f"attacks.{key}: unknown setting {k!r}")
                    setattr(det, k, v)
                setattr(cfg, key, det)
            elif key in ("never_block", "broadcast"):
                if isinstance(value, str) or not isinstance(value, Iterable):
                    raise ValueError(f"attacks.{key}: expected a list of networks")
                setattr(cfg, key, tuple(str(v) for v in value))
            else:
                setattr(cfg, key, value)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, DetectorConfig):
                if not isinstance(v.enabled, bool):
                    raise ValueError(f"attacks.{f.name}.enabled: expected true or false")
                if not isinstance(v.threshold, int) or v.threshold < 1:
                    raise ValueError(f"attacks.{f.name}.threshold: expected an integer >= 1")
                if not isinstance(v.window, int | float) or not 0 < v.window <= 3600:
                    raise ValueError(f"attacks.{f.name}.window: expected 0 < seconds <= 3600")
                if v.action not in ACTIONS:
                    raise ValueError(
                        f"attacks.{f.name}.action: {v.action!r} is not one of {', '.join(ACTIONS)}"
                    )
                m = v.block_minutes
                if not isinstance(m, int) or not 1 <= m <= MAX_BLOCK_MINUTES:
                    raise ValueError(
                        f"attacks.{f.name}.block_minutes: expected 1..{MAX_BLOCK_MINUTES}"
                    )
        for key in ("max_sources", "max_flows"):
            v = getattr(self, key)
            if not isinstance(v, int) or not 16 <= v <= 1 << 24:
                raise ValueError(f"attacks.{key}: expected an integer 16..16777216")
        if not isinstance(self.episode_summary, bool):
            raise ValueError("attacks.episode_summary: expected true or false")
        for key in ("episode_timeout", "arp_binding_age"):
            v = getattr(self, key)
            if not isinstance(v, int | float) or not 0 < v <= 86400:
                raise ValueError(f"attacks.{key}: expected 0 < seconds <= 86400")
        for key in ("never_block", "broadcast"):
            for net in getattr(self, key):
                try:
                    ipaddress.ip_network(net, strict=False)
                except ValueError:
                    raise ValueError(
                        f"attacks.{key}: {net!r} is not an address or network"
                    ) from None


@dataclass(slots=True, init=False)
class AttackVerdict:
    """What was detected and what to do. `block_minutes` is 0 unless `action == "block"`."""

    name: str
    source: str  # attacker address (text)
    target: str  # victim address, or "" for several
    action: str  # block | terminate | ignore
    block_minutes: int
    event: Event | None  # only on the packet that starts the episode; None on later packets
    vlan: int = 0  # blocking is scoped to the VLAN the attack was seen on
    iface: str = ""

    def __init__(
        self,
        name: str,
        source: str,
        target: str,
        action: str,
        block_minutes: int,
        event: Event | None,
        vlan: int = 0,
        iface: str = "",
    ) -> None:
        # Written out for the compiled build: see Packet.__init__.
        self.name = name
        self.source = source
        self.target = target
        self.action = action
        self.block_minutes = block_minutes
        self.event = event
        self.vlan = vlan
        self.iface = iface

    def to_event(self) -> Event | None:
        return self.event


class _Bounded:
    """Table with a size cap, least recently used first: a plain dict kept in recency order
    (a touch moves its key to the end). An OrderedDict did the same with method calls that
    were a third of the detector's time; a plain dict's get, delete and insert are direct.

    When full, the least recently used `cap // 64` entries go at once: finding the oldest key
    walks over the slots that earlier deletions left at the front of the dict (until it is
    resized), and that walk is paid once per batch rather than for every new key. Holds the
    dict rather than being one: a native (compiled) subclass of dict crashes the garbage
    collector, and a Python one makes every `touch` a slow dynamic call."""

    def __init__(self, cap: int) -> None:
        self.d: dict[Any, Any] = {}
        self.cap = cap
        self.batch = max(1, cap // 64)
        self.evicted = 0

    def touch(self, key: Any, factory: Any) -> Any:
        """The value of `key`, made by `factory()` if absent; it becomes the most recent."""
        d = self.d
        v = d.get(key)
        if v is None:
            if len(d) >= self.cap:
                self._evict()
            v = factory()
        else:
            del d[key]
        d[key] = v
        return v

    def _evict(self) -> None:
        d = self.d
        oldest = list(itertools.islice(d, self.batch))
        for k in oldest:
            del d[k]
        self.evicted += len(oldest)

    def get(self, key: Any) -> Any:
        return self.d.get(key)

    def move_to_end(self, key: Any) -> None:
        d = self.d
        v = d[key]
        del d[key]
        d[key] = v

    def pop_oldest_while(self, stale: Callable[[Any], bool]) -> list[tuple[Any, Any]]:
        """Remove entries from the least recent on while `stale(value)`; returns them. One
        walk over the dict, however many go (a walk per entry would be quadratic)."""
        gone: list[tuple[Any, Any]] = []
        for k, v in self.d.items():
            if not stale(v):
                break
            gone.append((k, v))
        for k, _v in gone:
            del self.d[k]
        return gone

    def __contains__(self, key: Any) -> bool:
        return key in self.d

    def __len__(self) -> int:
        return len(self.d)

    def __getitem__(self, key: Any) -> Any:
        return self.d[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self.d[key] = value

    def __delitem__(self, key: Any) -> None:
        del self.d[key]

    def values(self) -> Any:
        return self.d.values()

    def items(self) -> Any:
        return self.d.items()

    def clear(self) -> None:
        self.d.clear()


class _Distinct:
    """Distinct values (ports, addresses) seen within a sliding window, at most `cap` kept."""

    __slots__ = ("seen", "last", "packets")

    def __init__(self) -> None:
        self.seen: dict[Any, float] = {}
        self.last = 0.0
        self.packets = 0

    def add(self, value: Any, ts: float, window: float, cap: int) -> int:
        self.last = ts
        self.packets += 1
        seen = self.seen
        if value in seen:
            seen[value] = ts
            return len(seen)
        if len(seen) + 1 >= cap:
            # About to reach the threshold: count only what is inside the window.
            horizon = ts - window
            for k in [k for k, t in seen.items() if t < horizon]:
                del seen[k]
            if len(seen) >= cap:
                return len(seen)  # at the threshold already: the caller has triggered
        seen[value] = ts
        return len(seen)


class _Rate:
    """Count within a window (fixed windows that restart when the previous one is over)."""

    __slots__ = ("start", "count", "credit", "last")

    def __init__(self) -> None:
        self.start = -1.0
        self.count = 0
        self.credit = 0  # e.g. handshakes completed, subtracted from SYNs
        self.last = 0.0

    def add(self, ts: float, window: float, n: int = 1) -> int:
        if ts - self.start > window:
            self.start = ts
            self.count = 0
            self.credit = 0
        self.count += n
        self.last = ts
        return self.count - min(self.credit, self.count)


@dataclass(slots=True)
class _Episode:
    name: str
    source: str
    first: float
    last: float
    count: int = 1
    targets: set[str] = field(default_factory=set)
    action: str = "ignore"
    minutes: int = 0
    start: dict[str, Any] = field(default_factory=dict)  # the data of the episode's event
    vlan: int = 0
    iface: str = ""


class AttackDetector:
    """Feed every packet (fragments included, and reassembled datagrams) in capture order."""

    def __init__(self, config: AttackConfig | None = None) -> None:
        self.config = cfg = config or AttackConfig()
        cfg.validate()
        self._never_block = [ipaddress.ip_network(n, strict=False) for n in cfg.never_block]
        self._broadcast: set[bytes] = {b"\xff\xff\xff\xff"}
        for n in cfg.broadcast:
            net = ipaddress.ip_network(n, strict=False)
            if net.version == 4:
                self._broadcast.add(net.broadcast_address.packed)
        cap, fcap = cfg.max_sources, cfg.max_flows
        self._tcp_ports = _Bounded(cap)  # (src, dst) -> _Distinct of ports
        self._tcp_sweep = _Bounded(cap)  # (src, dport) -> _Distinct of destinations
        self._udp_sweep = _Bounded(cap)
        self._udp_ports = _Bounded(cap)
        self._icmp_hosts = _Bounded(cap)  # src -> _Distinct of destinations
        self._arp_hosts = _Bounded(cap)
        self._syn = _Bounded(cap)  # (src, dst) -> _Rate
        self._syn_target = _Bounded(cap)  # dst -> _Rate (distributed floods)
        self._udp = _Bounded(cap)
        self._icmp = _Bounded(cap)
        self._conns = _Bounded(fcap)  # TCP connections seen opening (_conn_key)
        self._udp_pairs = _Bounded(fcap)  # UDP 4-tuples sent (their reverse is a response)
        self._arp = _Bounded(cap)  # IP -> (mac, ts)
        self._episodes = _Bounded(cap)  # (name, src) -> _Episode
        self.now = 0.0
        self._next_sweep = 0.0
        self._summaries: list[AttackVerdict] = []
        # Counters as attributes (one per packet: a dict update cost as much as a lookup).
        self.n_packets = 0
        self.n_verdicts = 0
        self.n_episodes = 0
        self.n_suppressed = 0

    # -- public ----------------------------------------------------------------------------------

    @property
    def stats(self) -> dict[str, int]:
        return {
            "packets": self.n_packets,
            "verdicts": self.n_verdicts,
            "episodes": self.n_episodes,
            "suppressed": self.n_suppressed,
        }

    def process(self, p: Packet) -> list[AttackVerdict]:
        """Inspect one packet; returns the attacks it starts (most packets: none)."""
        ts = p.ts
        if ts > self.now:
            self.now = ts
        if self.now >= self._next_sweep:
            self._sweep()
        self.n_packets += 1
        out: list[AttackVerdict] = []
        if self._summaries:
            out, self._summaries = self._summaries, []
        if (
            p.proto == PROTO_TCP
            and p.dsize
            and p.tcp_flags & 0x3F in _DATA_FLAGS
            and not p.anomalies
            and not p.is_fragment
            and p.src_bytes
            and p.src_bytes != p.dst_bytes
            and p.dst_bytes
            and not _martian(p)
        ):
            # Fast path: data on a connection (ACK or PSH+ACK with payload) is neither a probe
            # nor a handshake step, and changes no detector state; most packets are this.
            return out
        if p.anomalies:
            self._anomalies(p, out)
        if p.eth_type == ETH_ARP and p.ip_version == 0:
            self._arp_packet(p, out)
            return out
        if not p.ip_version or not p.src_bytes or not p.dst_bytes:
            return out  # not IP, or the decoder could not read the addresses
        self._addresses(p, out)
        if p.is_fragment:
            # Scans and floods are counted on the reassembled datagram, which comes next.
            self._fragment(p, out)
            return out
        proto = p.proto
        if proto == PROTO_TCP:
            self._tcp(p, out)
        elif proto == PROTO_UDP:
            self._udp_packet(p, out)
        elif proto in (PROTO_ICMP, PROTO_ICMPV6):
            self._icmp_packet(p, out)
        return out

    def inspect(self, p: Packet) -> list[AttackVerdict]:
        return self.process(p)

    def flush(self) -> list[AttackVerdict]:
        """End every open episode (end of a capture, shutdown): their summaries when
        `episode_summary` is on, else nothing. State is kept."""
        out, self._summaries = self._summaries, []
        if self.config.episode_summary:
            out += [self._summary(ep) for ep in self._episodes.values()]
        self._episodes.clear()
        return out

    def may_block(self, address: str) -> bool:
        """False for "do not block" exclusions and for addresses that must never be blocked."""
        return may_block(address, self._never_block)

    def active_episodes(self) -> list[dict[str, Any]]:
        return [
            {
                "name": e.name,
                "source": e.source,
                "first": e.first,
                "last": e.last,
                "count": e.count,
                "targets": sorted(e.targets),
            }
            for e in self._episodes.values()
        ]

    def memory_entries(self) -> int:
        """Entries held in every table (for tests and stats: it stays bounded)."""
        return sum(
            len(t)
            for t in (
                *self._windowed_tables(),
                self._conns,
                self._udp_pairs,
                self._arp,
                self._episodes,
            )
        )

    def _windowed_tables(self) -> tuple[_Bounded, ...]:
        """The detectors' per-window counters, oldest entry first: what the sweep expires."""
        return (
            self._tcp_ports,
            self._tcp_sweep,
            self._udp_sweep,
            self._udp_ports,
            self._icmp_hosts,
            self._arp_hosts,
            self._syn,
            self._syn_target,
            self._udp,
            self._icmp,
        )

    # -- detectors -------------------------------------------------------------------------------

    def _anomalies(self, p: Packet, out: list[AttackVerdict]) -> None:
        for a in p.anomalies:
            if a.endswith("frag_overlap"):
                self._hit("teardrop", "DoS.Generic.Teardrop", p, out, {"anomaly": a})
            elif a.endswith("frag_pkt_too_large"):
                self._oversize(p, out, a)

    def _oversize(self, p: Packet, out: list[AttackVerdict], why: str) -> None:
        if p.proto in (PROTO_ICMP, PROTO_ICMPV6):
            self._hit("ping_of_death", "DoS.Generic.PingOfDeath", p, out, {"anomaly": why})
        else:
            self._hit(
                "oversized_fragment", "DoS.Generic.OversizedFragment", p, out, {"anomaly": why}
            )

    def _fragment(self, p: Packet, out: list[AttackVerdict]) -> None:
        # The defragmenter names oversize; this also catches it when fragments arrive alone
        # (e.g. only the last fragment of a ping of death is sent).
        if (
            p.ip_version == 4
            and p.ip_hdr
            and p.frag_offset + p.ip_len > 65535  # offset + header + fragment data
            and "frag_pkt_too_large" not in " ".join(p.anomalies)
        ):
            self._oversize(p, out, "fragment ends past 65535 bytes")

    def _addresses(self, p: Packet, out: list[AttackVerdict]) -> None:
        src, dst = p.src_bytes, p.dst_bytes
        if src == dst and src:
            self._hit(
                "land",
                "DoS.Generic.Land",
                p,
                out,
                {"same_port": p.sport == p.dport and p.proto in (PROTO_TCP, PROTO_UDP)},
                blockable=False,
            )
            return
        if _martian(p):
            self._hit("martian_source", "Spoofing.Generic.MartianSource", p, out, blockable=False)

    def _tcp(self, p: Packet, out: list[AttackVerdict]) -> None:
        flags = p.tcp_flags & 0x3F  # ECE/CWR play no part here
        src, dst = _scoped(p)
        sport, dport = p.sport, p.dport
        cfg = self.config
        bad = _invalid_flags(flags)
        if bad:
            self._hit(
                "invalid_tcp_flags",
                "Scan.Generic.InvalidFlags.TCP",
                p,
                out,
                {"flags": f"{p.tcp_flags:02x}", "reason": bad},
            )
        syn = flags & (SYN | ACK | RST) == SYN
        if syn:
            self._conns.touch(_conn_key(src, sport, dst, dport), float)
            if p.dsize and _TFO_OPTION not in p.tcp_options:
                self._hit(
                    "syn_with_data", "Anomaly.Generic.SYNWithData", p, out, {"dsize": p.dsize}
                )
            d = cfg.syn_flood
            if d.enabled:
                r: _Rate = self._syn.touch((src, dst), _Rate)
                half_open = r.add(p.ts, d.window)
                if half_open >= d.threshold:
                    self._hit("syn_flood", "DoS.Generic.SYNFlood", p, out, {"half_open": half_open})
            d = cfg.syn_flood_distributed
            if d.enabled:
                target: _Rate = self._syn_target.touch(dst, _Rate)
                half_open = target.add(p.ts, d.window)
                if half_open >= d.threshold:
                    self._hit(
                        "syn_flood_distributed",
                        "DoS.Generic.SYNFlood",
                        p,
                        out,
                        {"half_open": half_open, "distributed": True},
                        episode_source="*",
                        blockable=False,
                    )
        elif flags & (SYN | ACK) == SYN | ACK:
            self._conns.touch(_conn_key(src, sport, dst, dport), float)
            # An accepted connection is not a probe: FTP passive transfers and the like open
            # many ports on one server, successfully. Scans mostly hit closed or filtered ports.
            probes: _Distinct | None = self._tcp_ports.get((dst, src))
            if probes is not None:
                probes.seen.pop(sport, None)
            probes = self._tcp_sweep.get((dst, sport))
            if probes is not None:
                probes.seen.pop(src, None)
        elif flags == ACK and not p.dsize:
            rate: _Rate | None = self._syn.get((src, dst))
            if rate is not None:
                rate.credit += 1  # a handshake (or the connection) progressed: not half-open
            rate = self._syn_target.get(dst)
            if rate is not None:
                rate.credit += 1
        d = cfg.tcp_port_sweep
        if syn and d.enabled:
            # A worm looking for one service across the segment: hosts that do not accept.
            sweep: _Distinct = self._tcp_sweep.touch((src, dport), _Distinct)
            n = sweep.add(dst, p.ts, d.window, d.threshold)
            if n >= d.threshold:
                self._hit(
                    "tcp_port_sweep",
                    "Scan.Generic.PortSweep.TCP",
                    p,
                    out,
                    {"hosts": n, "port": dport},
                    target="",
                )
        # Scan: a probe is a connection attempt, or a stealth packet outside any connection.
        d = cfg.tcp_port_scan
        if not d.enabled:
            return
        if syn:
            style = "SYN"
        elif flags & ~(FIN | PSH | URG) == 0:
            style = "NULL" if flags == 0 else "FIN" if flags == FIN else "Xmas"
        elif flags in (ACK, ACK | RST) or flags == RST:
            if _conn_key(src, sport, dst, dport) in self._conns:
                return
            if flags != ACK or p.dsize:
                return  # resets to unknown connections are answers, not probes
            style = "ACK"
        else:
            return
        dist: _Distinct = self._tcp_ports.touch((src, dst), _Distinct)
        n = dist.add(dport, p.ts, d.window, d.threshold)
        if n >= d.threshold:
            self._hit(
                "tcp_port_scan",
                "Scan.Generic.PortScan.TCP",
                p,
                out,
                {"ports": n, "style": style},
            )

    def _udp_packet(self, p: Packet, out: list[AttackVerdict]) -> None:
        src, dst = _scoped(p)
        sport, dport = p.sport, p.dport
        cfg = self.config
        to_broadcast = p.dst_bytes in self._broadcast or (
            p.eth_dst == _BROADCAST_MAC and p.ip_version == 4
        )
        if to_broadcast and dport in (7, 19) and cfg.fraggle.enabled:
            # The source of a reflection attack is the spoofed victim: never blocked.
            self._hit(
                "fraggle", "DoS.Generic.Fraggle", p, out, {"dest_port": dport}, blockable=False
            )
        if (dst, dport, src, sport) in self._udp_pairs:
            self._udp_pairs.move_to_end((dst, dport, src, sport))
            probes: _Distinct | None = self._udp_ports.get((dst, src))
            if probes is not None:
                probes.seen.pop(sport, None)  # the port answered: a service, not a probe
            probes = self._udp_sweep.get((dst, sport))
            if probes is not None:
                probes.seen.pop(src, None)
            return  # a response to a datagram the other side sent: not an attack
        self._udp_pairs.touch((src, sport, dst, dport), float)
        d = cfg.udp_flood
        if d.enabled:
            rate: _Rate = self._udp.touch((src, dst), _Rate)
            n = rate.add(p.ts, d.window)
            if n >= d.threshold:
                self._hit("udp_flood", "DoS.Generic.UDPFlood", p, out, {"packets": n})
        d = cfg.udp_port_scan
        if d.enabled:
            dist: _Distinct = self._udp_ports.touch((src, dst), _Distinct)
            n = dist.add(dport, p.ts, d.window, d.threshold)
            if n >= d.threshold:
                self._hit("udp_port_scan", "Scan.Generic.PortScan.UDP", p, out, {"ports": n})
        d = cfg.udp_port_sweep
        multicast = p.dst_bytes[0] >= 224 if p.ip_version == 4 else p.dst_bytes[0] == 0xFF
        if d.enabled and not to_broadcast and not multicast:
            sweep: _Distinct = self._udp_sweep.touch((src, dport), _Distinct)
            n = sweep.add(dst, p.ts, d.window, d.threshold)
            if n >= d.threshold:
                self._hit(
                    "udp_port_sweep",
                    "Scan.Generic.PortSweep.UDP",
                    p,
                    out,
                    {"hosts": n, "port": dport},
                    target="",
                )

    def _icmp_packet(self, p: Packet, out: list[AttackVerdict]) -> None:
        v4 = p.proto == PROTO_ICMP
        cfg = self.config
        src, dst = _scoped(p)
        if not v4 and p.icmp_type == 136 and cfg.ndp_spoofing.enabled:
            self._neighbour_advert(p, out)
        if p.icmp_type != (0 if v4 else 129):
            # Floods count everything but echo replies: request floods, error floods
            # ("BlackNurse": port-unreachable), IPv6 router-advertisement floods.
            d = cfg.icmp_flood
            if d.enabled:
                rate: _Rate = self._icmp.touch((src, dst), _Rate)
                n = rate.add(p.ts, d.window)
                if n >= d.threshold:
                    self._hit(
                        "icmp_flood",
                        "DoS.Generic.ICMPFlood",
                        p,
                        out,
                        {"packets": n, "icmp_type": p.icmp_type},
                    )
        if p.icmp_type not in (_ICMP4_REQUESTS if v4 else _ICMP6_REQUESTS):
            return  # sweeps and smurf are about requests; replies and errors answer something
        if p.ip_version == 4 and (p.dst_bytes in self._broadcast or p.eth_dst == _BROADCAST_MAC):
            self._hit(
                "smurf", "DoS.Generic.Smurf", p, out, {"icmp_type": p.icmp_type}, blockable=False
            )
        d = cfg.icmp_host_sweep
        if d.enabled:
            dist: _Distinct = self._icmp_hosts.touch(src, _Distinct)
            n = dist.add(dst, p.ts, d.window, d.threshold)
            if n >= d.threshold:
                self._hit(
                    "icmp_host_sweep",
                    "Scan.Generic.HostSweep.ICMP",
                    p,
                    out,
                    {"hosts": n},
                    target="",
                )

    def _arp_packet(self, p: Packet, out: list[AttackVerdict]) -> None:
        arp = bytes(p.payload)
        if len(arp) < 28:
            return
        op = int.from_bytes(arp[6:8], "big")
        sender_mac, sender_ip = arp[8:14], arp[14:18]
        if p.vlan:
            sender_ip = p.vlan.to_bytes(2, "big") + sender_ip
        cfg = self.config
        if arp[14:18] != b"\0\0\0\0":  # ARP probes (RFC 5227) claim nothing
            self._claim(
                p, sender_ip, p.src, sender_mac, "arp_spoofing", "Spoofing.Generic.ARP", out
            )
        d = cfg.arp_host_sweep
        if op == 1 and d.enabled:
            dist: _Distinct = self._arp_hosts.touch((p.vlan, sender_mac), _Distinct)
            n = dist.add(p.dst_bytes, p.ts, d.window, d.threshold)
            if n >= d.threshold:
                self._hit(
                    "arp_host_sweep",
                    "Scan.Generic.HostSweep.ARP",
                    p,
                    out,
                    {"hosts": n, "mac": sender_mac.hex(":")},
                    target="",
                )

    def _claim(
        self,
        p: Packet,
        addr_key: bytes,
        addr: str,
        mac: bytes,
        key: str,
        name: str,
        out: list[AttackVerdict],
    ) -> None:
        """An address claimed by a MAC (ARP, IPv6 neighbour advertisement): a second MAC while
        the first binding is fresh is cache poisoning."""
        cfg = self.config
        prev = self._arp.get(addr_key)
        if prev is not None and prev[0] != mac and p.ts - prev[1] < cfg.arp_binding_age:
            self._hit(
                key,
                name,
                p,
                out,
                {"ip": addr, "mac": mac.hex(":"), "previous_mac": prev[0].hex(":")},
                target="",
                blockable=False,
            )
            # Keep the first binding while it is fresh: the newcomer is the suspect.
            self._arp.move_to_end(addr_key)
        else:
            self._arp.touch(addr_key, float)
            self._arp[addr_key] = (mac, p.ts)

    def _neighbour_advert(self, p: Packet, out: list[AttackVerdict]) -> None:
        body = bytes(p.payload)
        if len(body) < 20:
            return
        target = body[4:20]
        mac = p.eth_src
        i = 20
        while i + 8 <= len(body):  # options: type, length in units of 8 bytes
            otype, olen = body[i], body[i + 1] * 8
            if olen == 0:
                break
            if otype == 2 and olen >= 8:  # target link-layer address
                mac = body[i + 2 : i + 8]
                break
            i += olen
        if not mac or target[0] == 0xFF:
            return
        key = p.vlan.to_bytes(2, "big") + target if p.vlan else target
        addr = str(ipaddress.IPv6Address(target))
        self._claim(p, key, addr, mac, "ndp_spoofing", "Spoofing.Generic.NDP", out)

    # -- episodes and verdicts -------------------------------------------------------------------

    def _hit(
        self,
        key: str,
        name: str,
        p: Packet,
        out: list[AttackVerdict],
        extra: dict[str, Any] | None = None,
        *,
        target: str | None = None,
        blockable: bool = True,
        episode_source: str | None = None,
    ) -> None:
        """`episode_source` "*" makes one episode per target (attacks from many sources)."""
        d: DetectorConfig = getattr(self.config, key)
        if not d.enabled:
            return
        source = p.src if episode_source is None else episode_source
        tgt = p.dst if target is None else target
        ep_key = (name, source, p.vlan) if episode_source is None else (name, tgt, p.vlan, "*")
        ep: _Episode | None = self._episodes.get(ep_key)
        if ep is not None and p.ts - ep.last <= self.config.episode_timeout:
            ep.last = max(ep.last, p.ts)
            ep.count += 1
            if tgt and len(ep.targets) < 64:
                ep.targets.add(tgt)
            self._episodes.move_to_end(ep_key)
            self.n_suppressed += 1
            if ep.action != "ignore":
                # No new event, but the packet belongs to the attack: drop it (and keep the
                # source blocked) as the first one was.
                out.append(
                    AttackVerdict(name, source, tgt, ep.action, ep.minutes, None, p.vlan, p.iface)
                )
            return
        ep = self._episodes.touch(ep_key, lambda: _Episode(name, source, p.ts, p.ts))
        ep.first = ep.last = p.ts
        ep.count = 1
        ep.targets = {tgt} if tgt else set()
        action = d.action
        reason = ""
        if action == "block":
            if not blockable:
                action, reason = "terminate", "source address is spoofed"
            elif not self.may_block(source):
                action, reason = "terminate", "source may not be blocked"
        minutes = d.block_minutes if action == "block" else 0
        ep.action, ep.minutes, ep.vlan, ep.iface = action, minutes, p.vlan, p.iface
        self.n_episodes += 1
        self.n_verdicts += 1
        event = self._event(name, key, p, tgt, action, minutes, d, reason, extra)
        ep.start = dict(event.data)
        out.append(
            AttackVerdict(
                name=name,
                source="" if episode_source == "*" else source,
                target=tgt,
                action=action,
                block_minutes=minutes,
                event=event,
                vlan=p.vlan,
                iface=p.iface,
            )
        )

    def _event(
        self,
        name: str,
        key: str,
        p: Packet,
        target: str,
        action: str,
        minutes: int,
        d: DetectorConfig,
        reason: str,
        extra: dict[str, Any] | None,
    ) -> Event:
        attack: dict[str, Any] = {
            "name": name,
            "detector": key,
            "action": action,
            "threshold": d.threshold,
            "window": d.window,
        }
        if minutes:
            attack["block_minutes"] = minutes
        if reason:
            attack["not_blocked"] = reason
        if extra:
            attack.update(extra)
        data: dict[str, Any] = {"src_ip": p.src, "dest_ip": target or p.dst}
        if p.ip_version:
            data["proto"] = _PROTO_NAMES.get(p.proto, str(p.proto))
        else:
            data["proto"] = "ARP"
        if p.proto in (PROTO_TCP, PROTO_UDP) and not p.frag_offset:
            data["src_port"] = p.sport
            data["dest_port"] = p.dport
        if p.vlan:
            data["vlan"] = [p.vlan]
        if p.iface:
            data["in_iface"] = p.iface
        data["attack"] = attack
        severity = SEVERITY_HIGH if name.startswith(("DoS.", "Spoofing.")) else SEVERITY_MEDIUM
        return Event(
            event_type="attack", timestamp=format_timestamp(p.ts), severity=severity, data=data
        )

    def _summary(self, ep: _Episode) -> AttackVerdict:
        data = {k: v for k, v in ep.start.items() if k != "attack"}
        attack = ep.start.get("attack", {})
        data["attack"] = {
            "name": ep.name,
            "detector": attack.get("detector", ""),
            "action": ep.action,
            "state": "ended",
            "count": ep.count,
            "first_seen": format_timestamp(ep.first),
            "last_seen": format_timestamp(ep.last),
            "duration": round(ep.last - ep.first, 6),
            "targets": len(ep.targets),
        }
        if ep.minutes:
            data["attack"]["block_minutes"] = ep.minutes
        severity = SEVERITY_HIGH if ep.name.startswith(("DoS.", "Spoofing.")) else SEVERITY_MEDIUM
        ev = Event(
            event_type="attack", timestamp=format_timestamp(ep.last), severity=severity, data=data
        )
        # "ignore": the summary reports; it never drops the packet it travels with.
        return AttackVerdict(ep.name, "", "", "ignore", 0, ev, ep.vlan, ep.iface)

    def _sweep(self) -> None:
        """Drop state idle for longer than its window (and episodes quiet past the timeout)."""
        now = self.now
        cfg = self.config
        self._next_sweep = now + 1.0
        horizon = max(
            d.window
            for d in (getattr(cfg, f.name) for f in fields(cfg))
            if isinstance(d, DetectorConfig)
        )
        for table in self._windowed_tables():
            table.pop_oldest_while(lambda v: now - v.last > horizon)
        timeout = cfg.episode_timeout
        for _k, ep in self._episodes.pop_oldest_while(lambda e: now - e.last > timeout):
            if cfg.episode_summary:
                self._summaries.append(self._summary(ep))
        # Connections and datagram pairs: the LRU cap bounds them; ARP bindings age out.
        age = cfg.arp_binding_age
        self._arp.pop_oldest_while(lambda b: now - b[1] > age)


_BCAST4: Final = ipaddress.IPv4Address("255.255.255.255")


def may_block(
    address: str, never_block: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] = ()
) -> bool:
    """Whether `address` may be blocked: never one in `never_block` (the "do not block"
    exclusions), nor loopback, unspecified, multicast or broadcast, nor a non-address. Every
    block the engine decides (attacks, IDS rules) asks this."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback or ip.is_unspecified or ip.is_multicast or ip == _BCAST4:
        return False
    return not any(ip.version == n.version and ip in n for n in never_block)


_DATA_FLAGS: Final = frozenset((ACK, ACK | PSH))


def _scoped(p: Packet) -> tuple[bytes, bytes]:
    """Addresses as state keys: the same address on two VLANs is two hosts."""
    if not p.vlan:
        return p.src_bytes, p.dst_bytes
    v = p.vlan.to_bytes(2, "big")
    return v + p.src_bytes, v + p.dst_bytes


def _conn_key(src: bytes, sport: int, dst: bytes, dport: int) -> tuple[bytes, int, bytes, int]:
    """One key for both directions of a TCP connection: one lookup answers "seen opening"."""
    if src < dst or (src == dst and sport <= dport):
        return (src, sport, dst, dport)
    return (dst, dport, src, sport)


def _invalid_flags(flags: int) -> str:
    if flags & (SYN | FIN) == SYN | FIN:
        return "SYN+FIN"
    if flags & (SYN | RST) == SYN | RST:
        return "SYN+RST"
    if flags & (FIN | RST) == FIN | RST:
        return "FIN+RST"
    if not flags & ACK and flags & (PSH | URG) and not flags & SYN:
        return "PSH/URG without ACK"
    return ""


def _martian(p: Packet) -> bool:
    s = p.src_bytes
    if p.ip_version == 4:
        first = s[0]
        if first == 127 or first >= 224:
            return True
        if first == 0:
            # DHCP clients legitimately send from 0.0.0.0 before they have an address.
            return not (s == b"\0\0\0\0" and p.proto == PROTO_UDP and p.sport == 68)
        return False
    if p.ip_version == 6:
        if s[0] == 0xFF:
            return True  # multicast source
        return s == b"\0" * 15 + b"\x01"  # ::1 off the host
    return False
