"""The network engine: decode → defrag → flow → stream → app layer → detect → verdict + events.

Sans-IO: `Engine.process(frame, ts)` takes one frame and its capture time and returns what to do
with it and what happened; time only ever comes from the packets (and `flush(ts)`), so the same
object runs from a pcap file, NFQUEUE or an AF_PACKET mirror, and replays are deterministic.

Detectors plug in through narrow interfaces:
- rules (`vmshield.engines.net.rules.RuleSet`): `match(InspectContext) -> list[Alert]`;
- URLs (`vmshield.engines.net.urls.UrlDatabase`): `check_http`, `check_host`;
- network attacks (`vmshield.engines.net.attacks`): any object with
  `process(packet, ts) -> list[...]` returning events/findings (see `_run_attacks`).
All are optional: without them the engine still decodes, tracks and logs.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from vmshield.engines.net import eve
from vmshield.engines.net.app import detect_tcp, detect_udp
from vmshield.engines.net.app.dns import DnsError, DnsMessage, DnsTcpParser, parse_message
from vmshield.engines.net.app.http import HttpParser, HttpTx
from vmshield.engines.net.app.ssh import SshState
from vmshield.engines.net.app.tls import TlsState
from vmshield.engines.net.attacks import AttackDetector, AttackVerdict, may_block
from vmshield.engines.net.config import EngineConfig
from vmshield.engines.net.decode import SUPPORTED_LINKTYPES, decode
from vmshield.engines.net.defrag import Defragmenter
from vmshield.engines.net.flow import (
    PROTO_ICMP,
    STATE_CLOSED,
    STATE_ESTABLISHED,
    TCP_CLOSED,
    Flow,
    FlowTable,
)
from vmshield.engines.net.packet import PROTO_TCP, PROTO_UDP, Packet
from vmshield.engines.net.pcap import CaptureRecord

# Imported by module, not from the package: typed names let the compiled build (mypyc) call
# them directly.
from vmshield.engines.net.rules.model import FlowDetectState, InspectContext
from vmshield.engines.net.rules.ruleset import RuleSet
from vmshield.engines.net.stream import EV_RETRANS, StreamMemory, TcpStreams
from vmshield.event_stamps import format_timestamp
from vmshield.events import Event


class Action(enum.IntEnum):
    """What to do with the packet; higher wins when several detectors disagree."""

    ACCEPT = 0
    BYPASS = 1  # accept, and the flow needs no more inspection (the kernel may stop queueing)
    DROP = 2
    RESET = 3  # drop and terminate the TCP connection both ways
    BLOCK_SOURCE = 4  # drop and block the source address for `block_minutes`


@dataclass(slots=True, frozen=True)
class BlockPage:
    """Intent: answer the client's HTTP request with this page instead of the real response."""

    status: int
    body: bytes
    url: str
    reason: str

    def http_response(self) -> bytes:
        head = (
            f"HTTP/1.1 {self.status} Forbidden\r\nContent-Type: text/html; charset=utf-8\r\n"
            f"Content-Length: {len(self.body)}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n"
        )
        return head.encode() + self.body


@dataclass(slots=True, init=False, unsafe_hash=True)
class Verdict:
    # Immutable (Final: mypy refuses an assignment; ACCEPT and BYPASS are shared). Not a frozen
    # dataclass: its generated __init__ would run interpreted in the compiled build, and verdicts
    # are made per packet under attack.
    action: Final[Action]
    block_minutes: Final[int]
    block_address: Final[str]
    block_page: Final[BlockPage | None]
    reason: Final[str]

    def __init__(
        self,
        action: Action = Action.ACCEPT,
        block_minutes: int = 0,
        block_address: str = "",
        block_page: BlockPage | None = None,
        reason: str = "",
    ) -> None:
        self.action = action
        self.block_minutes = block_minutes
        self.block_address = block_address
        self.block_page = block_page
        self.reason = reason


ACCEPT: Final = Verdict()
BYPASS: Final = Verdict(Action.BYPASS)
DROP_FLOW: Final = Verdict(Action.DROP, reason="flow dropped earlier")


@dataclass(slots=True, init=False)
class PacketResult:
    verdict: Verdict
    events: Sequence[Event] = field(default_factory=tuple)

    def __init__(
        self,
        verdict: Verdict,
        events: Sequence[Event] | None = None,
    ) -> None:
        # Written out for the compiled build: see Packet.__init__.
        self.verdict = verdict
        self.events = () if events is None else events


_ACCEPT_RESULT: Final = PacketResult(ACCEPT, ())
_BYPASS_RESULT: Final = PacketResult(BYPASS, ())

# Stream inspection: each packet's rules see the new in-order bytes of its direction preceded
# by the last INSPECT_OVERLAP bytes (so content split over segments matches); a signature is
# reported once per INSPECT_WINDOW bytes of a direction (the overlap must not repeat a match).
INSPECT_WINDOW: Final = 4096
INSPECT_OVERLAP: Final = 512
PROBE_MAX: Final = 512  # bytes of a direction kept while its protocol is not yet recognised

_BLOCK_HTML: Final = (
    "<!doctype html><html><head><title>Blocked</title></head><body>"
    "<h1>Access blocked</h1><p>vmshield blocked this address: {reason}.</p>"
    "<p><code>{url}</code></p></body></html>"
)


_NONE: Final[frozenset[int]] = frozenset()
_NO_BUFFERS: Final[dict[str, Any]] = {}  # shared, never mutated
# One app-layer inspection of a packet: (buffers, tx_id, the transaction for the alert's EVE).
_Ctx = tuple[dict[str, Any] | None, int | None, Any]


class _DirInspect:
    """Per-direction stream inspection window and the sids already reported from it."""

    __slots__ = ("window", "gen_bytes", "alerted", "prev_alerted", "probe")

    def __init__(self) -> None:
        self.window = b""  # the last INSPECT_OVERLAP bytes inspected
        self.gen_bytes = 0  # bytes inspected in this generation of the "already alerted" set
        self.alerted: set[int] | frozenset[int] = _NONE
        self.prev_alerted: set[int] | frozenset[int] = _NONE
        self.probe = b""  # first bytes kept until the protocol is recognised


class _FlowApp:
    """App-layer and detection state attached to a flow."""

    __slots__ = ("parser", "ts", "tc", "detect", "dns_tx", "dns_tcp_ts", "dns_tcp_tc", "tls_tx")

    def __init__(self) -> None:
        self.parser: Any = None  # HttpParser | TlsState
        self.ts = _DirInspect()
        self.tc = _DirInspect()
        self.detect: FlowDetectState | None = None  # made on first use
        self.dns_tx = 0
        self.dns_tcp_ts: DnsTcpParser | None = None
        self.dns_tcp_tc: DnsTcpParser | None = None
        self.tls_tx = 0


class Engine:
    def __init__(
        self,
        config: EngineConfig | None = None,
        *,
        rules: RuleSet | None = None,
        url_db: Any = None,
        attacks: Any = None,
    ) -> None:
        self.config = cfg = config or EngineConfig()
        self.rules = rules
        self.url_db = url_db
        self.attacks = attacks
        # The built-in detector, typed: the compiled build calls it directly (any other object
        # with `process(packet)` goes through `attacks`).
        self._detector: AttackDetector | None = (
            attacks if isinstance(attacks, AttackDetector) else None
        )
        self.ips = cfg.mode == "ips"
        self._bypass_ok = cfg.bypass and self.ips
        self._tls_bypass = cfg.tls_encryption_handling == "bypass"
        self._sevents: list[str] = []
        # Stream and app-layer event names raised by the current packet (stream-event and
        # app-layer-event rules); an empty tuple for most packets.
        self._evnames: list[str] | tuple[()] = ()
        timeouts: dict[int, tuple[float, float, float]] = {}
        for name, vals in cfg.flow_timeouts.items():
            proto = {"tcp": PROTO_TCP, "udp": PROTO_UDP, "icmp": PROTO_ICMP, "default": 0}[name]
            timeouts[proto] = (float(vals[0]), float(vals[1]), float(vals[2]))
        self.flows = FlowTable(max_flows=cfg.flow_max, timeouts=timeouts)
        self.defrag = Defragmenter(
            timeout=cfg.defrag_timeout,
            memcap=cfg.defrag_memcap,
            max_trackers=cfg.defrag_max_trackers,
            max_frags=cfg.defrag_max_frags,
        )
        self.stream_mem = StreamMemory(cfg.stream_memcap)
        self._next_housekeeping = 0.0
        self._pending: list[Event] = []  # flow events produced by housekeeping
        self.n_packets = 0  # plain attributes: updated for every packet
        self.n_bytes = 0
        self.counters: dict[str, int] = {
            "decoder_anomalies": 0,
            "invalid_linktype": 0,
            "alerts": 0,
            "drops": 0,
            "resets": 0,
            "blocks": 0,
            "bypassed_flows": 0,
            "passed": 0,
            "silent_drops": 0,
            "internal_errors": 0,
            "url_hits": 0,
            "attack_events": 0,
            "events_capped": 0,
            "retransmissions": 0,
            "stream_anomalies": 0,
            "app_http_tx": 0,
            "app_dns_msgs": 0,
            "app_tls_hellos": 0,
        }
        self.app_flows: dict[str, int] = {}
        self.last_ts = 0.0
        self.last_internal_error = ""

    # -- public API ------------------------------------------------------------------------

    def report_bypass(self) -> None:
        """Give BYPASS verdicts (and stop inspecting those flows) outside IPS mode too, for a
        host that can act on them for a copy of the traffic: the monitoring reader's kernel-side
        filter stops copying flows the engine is done with. Needs `config.bypass`."""
        self._bypass_ok = self.config.bypass

    def process(
        self, frame: bytes, ts: float, *, linktype: int = 1, iface: str = "", vlan: int = 0
    ) -> PacketResult:
        """Inspect one frame. Never raises on packet content.

        A fault inside a stage or detector (a bug, not bad input) must not take the engine down
        with it: it is counted, reported as an `anomaly` event (`engine.internal_error`) and the
        packet gets the configured exception policy (accept, or drop).
        """
        try:
            return self._process(frame, ts, linktype, iface, vlan)
        except Exception as exc:  # noqa: BLE001 - the engine outlives a faulty stage
            return self._internal_error(exc, frame, ts, linktype, iface, vlan)

    def process_capture(
        self,
        records: Iterable[CaptureRecord],
        on_event: Callable[[Event], object],
        actions: list[int],
    ) -> None:
        """`process` every record of a capture, in order; each event goes to `on_event` as it
        comes, and `actions[a]` counts the packets that got action `a` (kept up to date, so the
        counts stand when the capture ends in error). The loop lives here to be compiled with
        the engine: an interpreted per-packet loop in the caller costs about as much as
        decoding the packet."""
        pcap_cnt = 0
        for rec in records:
            # A counter, not enumerate(): compiled, enumerate over an iterator makes a tuple
            # per packet (~300 instructions).
            pcap_cnt += 1  # noqa: SIM113
            r = self.process(rec.data, rec.ts, linktype=rec.linktype, iface=rec.iface)
            actions[int(r.verdict.action)] += 1
            events = r.events
            if events:
                for ev in events:
                    if ev.event_type != "flow":
                        # Suricata's `pcap_cnt`: which packet of the capture (from 1) the event
                        # came with; flow records end with no packet of their own.
                        ev.data["pcap_cnt"] = pcap_cnt
                    on_event(ev)

    def _internal_error(
        self, exc: Exception, frame: bytes, ts: float, linktype: int, iface: str, vlan: int
    ) -> PacketResult:
        self.counters["internal_errors"] += 1
        self.last_internal_error = f"{type(exc).__name__}: {exc}"[:300]
        self._pending_verdict = None
        p = decode(frame, ts, linktype, iface, vlan)
        d = eve.packet_base(p, None, False)
        d["anomaly"] = {
            "type": "engine",
            "event": "engine.internal_error",
            "error": self.last_internal_error,
        }
        ev = Event(event_type="anomaly", timestamp=format_timestamp(ts), severity=2, data=d)
        verdict = (
            Verdict(Action.DROP, reason="internal error")
            if (self.ips and self.config.exception_policy == "drop")
            else ACCEPT
        )
        return PacketResult(verdict, [ev])

    def _process(
        self, frame: bytes, ts: float, linktype: int, iface: str, vlan: int
    ) -> PacketResult:
        c = self.counters
        self.n_packets += 1
        self.n_bytes += len(frame)
        if ts > self.last_ts:
            self.last_ts = ts
        if ts >= self._next_housekeeping:
            self._housekeeping(ts)
        if linktype != 1 and linktype not in SUPPORTED_LINKTYPES:
            c["invalid_linktype"] += 1
        p = decode(frame, ts, linktype, iface, vlan)
        events: list[Event] | None = None
        verdict = ACCEPT
        self._evnames = ()

        if p.is_fragment:
            r = self.defrag.add(p)
            # Attack detection sees each fragment (overlaps, oversize are anomalies on it).
            verdict, events = self._attacks_and_anomalies(p, None, verdict, events)
            if r is None:
                return self._result(verdict, events)
            p = r
            if p.anomalies:
                verdict, events = self._anomalies(p, None, verdict, events)
        if p.proto == 0 or not p.src_bytes or p.ip_version == 0:
            if not p.is_fragment:
                verdict, events = self._attacks_and_anomalies(p, None, verdict, events)
            return self._result(verdict, events)

        f, toserver = self.flows.get_or_create(p)
        if self.flows.pending_ended:
            # Flows evicted to make room (table full): release them now, not at the next
            # housekeeping pass, so that a flood cannot pile them up in memory.
            ended, self.flows.pending_ended = self.flows.pending_ended, []
            for old in ended:
                self._pending = self._end_flow(old, self._pending)
        if p.tcp_flags & 0x12 == 0x02 and f.tcp_state == TCP_CLOSED and f.pkts_toserver:
            # TCP port reuse: a new SYN on a closed connection starts a new flow (otherwise
            # its data would be placed by the old sequence numbers and never inspected).
            self.flows.remove(f)
            f.end_reason = "shutdown"
            events = self._end_flow(f, events if events is not None else [])
            f, toserver = self.flows.get_or_create(p)
        f.update(p, toserver)
        if not p.is_fragment:
            if p.anomalies:
                verdict, events = self._anomalies(p, f, verdict, events)
            if self.attacks is not None:
                # Called directly: this runs for every packet, and most find nothing.
                det = self._detector
                found = det.process(p) if det is not None else self.attacks.process(p)
                if found:
                    verdict, events = self._attack_findings(p, f, found, verdict, events)
        if f.bypassed and verdict.action <= Action.BYPASS:
            # Nothing more to inspect; the kernel is told so only when bypass is enabled.
            return self._result(BYPASS if self._bypass_ok else ACCEPT, events)
        if f.action and self.ips:
            return self._result(self._merge(verdict, DROP_FLOW), events)

        app: _FlowApp | None = f.app  # typed: the compiled build then reads it natively
        if app is None:
            app = f.app = _FlowApp()
        chunk = b""
        if p.proto == PROTO_TCP:
            streams = f.streams
            if streams is None:
                streams = f.streams = TcpStreams(
                    self.config.stream_depth, self.stream_mem, self.config.stream_max_segments
                )
            sd = streams.ts if toserver else streams.tc
            sevents = self._sevents  # reused: most packets add nothing to it
            chunk = sd.add(p.tcp_seq, p.tcp_flags, p.payload, sevents)
            if sevents:
                names = list(sevents)
                sevents.clear()
                self._evnames = names  # for stream-event rules
                for name in names:
                    if name == EV_RETRANS:
                        c["retransmissions"] += 1
                    else:
                        c["stream_anomalies"] += 1
                        if self.config.out_anomaly:
                            events = events or []
                            events.append(eve.anomaly_event(p, f, name, self.config.community_id))
        # App layer, then detection.
        ctxs: list[_Ctx] = []
        if p.proto == PROTO_TCP and chunk:
            events = self._tcp_app(p, f, app, toserver, chunk, ctxs, events)
        if p.tcp_flags & 0x05 and not toserver and isinstance(app.parser, HttpParser):
            # FIN/RST from the server ends a response delimited by close: inspect and log it.
            tx = app.parser.end_of_response_stream()
            if tx is not None:
                if self.rules is not None:
                    ctxs.append((tx.buffers(False), tx.tx_id, tx))
                events = self._http_finished(p, f, app.parser, events)
        elif p.proto == PROTO_UDP and p.payload:
            events = self._udp_app(p, f, app, toserver, ctxs, events)

        if self.rules is not None or self._pending_verdict is not None:
            verdict, events = self._detect(p, f, app, toserver, chunk, ctxs, verdict, events)

        if f.state == STATE_CLOSED:
            events = self._close_app(f, events)
        if self._bypass_ok and verdict is ACCEPT and f.streams is not None and self._done(f):
            f.bypassed = True
            c["bypassed_flows"] += 1
            verdict = BYPASS
        return self._result(verdict, events)

    def flush(self, ts: float | None = None) -> list[Event]:
        """Expire idle flows at `ts`; with `ts` None, end every flow (end of capture)."""
        out = self._pending
        self._pending = []
        if ts is None:
            ended = self.flows.expire(self.last_ts, force=True)
            for f in ended:
                if f.end_reason == "timeout":
                    f.end_reason = "shutdown" if f.state == STATE_CLOSED else "timeout"
        else:
            ended = self.flows.expire(ts)
            self.defrag.expire(ts)
        for f in ended:
            out = self._end_flow(f, out)
        return out

    def stats(self) -> dict[str, Any]:
        s: dict[str, Any] = {"packets": self.n_packets, "bytes": self.n_bytes}
        s.update(self.counters)
        if self.last_internal_error:
            s["last_internal_error"] = self.last_internal_error
        s["flows_active"] = len(self.flows)
        s["flows_created"] = self.flows.created
        s["flows_evicted"] = self.flows.evicted
        s["flows_timed_out"] = self.flows.timed_out
        s["flow_emergency"] = self.flows.emergency
        s["flow_emergency_entered"] = self.flows.emergency_entered
        s["stream_memuse"] = self.stream_mem.used
        s["stream_memcap_drops"] = self.stream_mem.drops
        s["defrag"] = dict(self.defrag.stats)
        s["defrag_trackers"] = len(self.defrag)
        s["app_proto"] = dict(self.app_flows)
        if self.rules is not None:
            st = getattr(self.rules, "stats", None)
            if st is not None:
                s["rules_loaded"] = getattr(st, "loaded", 0)
                s["rules_rejected"] = getattr(st, "rejected", 0)
        return s

    # -- pipeline stages ---------------------------------------------------------------------

    def _result(self, verdict: Verdict, events: list[Event] | None) -> PacketResult:
        if events:
            # Bound what one packet can make the engine emit (the excess is counted).
            cap = self.config.max_events_per_packet
            if len(events) > cap:
                self.counters["events_capped"] += len(events) - cap
                events = events[:cap]
        if self._pending:
            # Flow events (expiry, eviction) leave with this packet's result, uncapped: one
            # per flow that ended. Taken here, at the end, so that a fault while processing
            # the packet cannot lose them.
            events = self._pending + events if events else self._pending
            self._pending = []
        if not events:
            if verdict is ACCEPT:
                return _ACCEPT_RESULT
            if verdict is BYPASS:
                return _BYPASS_RESULT
            return PacketResult(verdict, ())
        return PacketResult(verdict, events)

    @staticmethod
    def _merge(a: Verdict, b: Verdict) -> Verdict:
        return b if b.action > a.action else a

    def _anomalies(
        self, p: Packet, f: Flow | None, verdict: Verdict, events: list[Event] | None
    ) -> tuple[Verdict, list[Event] | None]:
        self.counters["decoder_anomalies"] += len(p.anomalies)
        if self.config.out_anomaly:
            events = events or []
            for name in p.anomalies:
                events.append(eve.anomaly_event(p, f, name, self.config.community_id))
        return verdict, events

    def _attacks_and_anomalies(
        self, p: Packet, f: Flow | None, verdict: Verdict, events: list[Event] | None
    ) -> tuple[Verdict, list[Event] | None]:
        if p.anomalies:
            verdict, events = self._anomalies(p, f, verdict, events)
        if self.attacks is not None:
            verdict, events = self._run_attacks(p, f, verdict, events)
        return verdict, events

    def _run_attacks(
        self, p: Packet, f: Flow | None, verdict: Verdict, events: list[Event] | None
    ) -> tuple[Verdict, list[Event] | None]:
        found = self.attacks.process(p)
        if not found:
            return verdict, events
        return self._attack_findings(p, f, found, verdict, events)

    def _attack_findings(
        self,
        p: Packet,
        f: Flow | None,
        found: Sequence[Any],
        verdict: Verdict,
        events: list[Event] | None,
    ) -> tuple[Verdict, list[Event] | None]:
        for item in found:
            if isinstance(item, AttackVerdict):
                # The built-in detector's findings, read natively (most packets of an attack
                # after its first carry no event, only the verdict). Its action and minutes are
                # always set (the event's copy of them is for the log).
                ev = item.event
                action: Any = item.action
                minutes = item.block_minutes
                address: Any = item.source or p.src
            else:
                ev = item if isinstance(item, Event) else getattr(item, "event", None)
                if ev is None and hasattr(item, "to_event"):
                    ev = item.to_event()
                action = getattr(item, "action", None) or (
                    ev.data.get("attack", {}).get("action") if ev is not None else None
                )
                minutes = int(
                    getattr(item, "block_minutes", 0)
                    or (ev.data.get("attack", {}).get("block_minutes", 0) if ev is not None else 0)
                    or 0
                )
                address = getattr(item, "source", "") or p.src
            if ev is not None:
                self.counters["attack_events"] += 1
                if f is not None and "flow_id" not in ev.data:
                    ev.data["flow_id"] = f.flow_id
                if self.config.out_attack:
                    events = events or []
                    events.append(ev)
            if not self.ips:
                continue
            if action in ("block", "block_source", "block-source") and minutes > 0:
                verdict = self._merge(verdict, self._block(str(address), minutes, "attack"))
            elif action in ("drop", "block", "blocked", "terminate"):
                # "terminate": drop the attack's packets without blocking the (spoofed) source.
                verdict = self._merge(verdict, Verdict(Action.DROP, reason="attack"))
        return verdict, events

    def _block(self, address: str, minutes: int, reason: str) -> Verdict:
        """Drop, and block `address` for `minutes` (the host enforces it: the filter's block
        set). The caller has checked that the address may be blocked."""
        self.counters["blocks"] += 1
        return Verdict(
            Action.BLOCK_SOURCE, block_minutes=minutes, block_address=address, reason=reason
        )

    def _may_block(self, address: str) -> bool:
        # The built-in detector holds the "do not block" exclusions; without it, only the
        # addresses that are never blocked are refused.
        det = self._detector
        return det.may_block(address) if det is not None else may_block(address)

    def _tcp_app(
        self,
        p: Packet,
        f: Flow,
        app: _FlowApp,
        toserver: bool,
        chunk: bytes,
        ctxs: list[_Ctx],
        events: list[Event] | None,
    ) -> list[Event] | None:
        cfg = self.config
        if not f.app_proto:
            if (f.app_proto_ts if toserver else f.app_proto_tc) == "failed":
                return events  # this direction already said "not ours": no guessing mid-stream
            d = app.ts if toserver else app.tc
            full = d.probe + chunk
            proto = detect_tcp(full[:PROBE_MAX], toserver)
            if proto == "" and len(full) < PROBE_MAX:
                d.probe = full  # wait for more bytes (bounded by PROBE_MAX)
                return events
            d.probe = b""
            if proto in ("", "unknown"):
                # Let the other direction try (server-speaks-first protocols) before giving up.
                other = f.app_proto_tc if toserver else f.app_proto_ts
                if toserver:
                    f.app_proto_ts = "failed"
                else:
                    f.app_proto_tc = "failed"
                if other == "failed":
                    f.app_proto = "failed"
                return events
            f.app_proto = proto
            self.app_flows[proto] = self.app_flows.get(proto, 0) + 1
            if proto == "http":
                app.parser = HttpParser(
                    request_body_limit=cfg.http_request_body_limit,
                    response_body_limit=cfg.http_response_body_limit,
                    max_header=cfg.http_max_header,
                    max_tx=cfg.http_max_tx,
                )
            elif proto == "tls":
                app.parser = TlsState(cfg.tls_max_handshake)
            elif proto == "ssh":
                app.parser = SshState()
            chunk = full
            # Bytes the other direction sent while undetermined came first: parse them first.
            od = app.tc if toserver else app.ts
            if od.probe:
                early, od.probe = od.probe, b""
                events = self._tcp_app(p, f, app, not toserver, early, ctxs, events)
        proto = f.app_proto
        if proto == "http":
            parser: HttpParser = app.parser
            nev = len(parser.events)
            want = self.rules is not None
            for tx in parser.feed(chunk, toserver):
                if want:
                    ctxs.append((tx.buffers(toserver), tx.tx_id, tx))
                if toserver and tx.inspected == 0:
                    tx.inspected = 1
                    self.counters["app_http_tx"] += 1
                    events = self._url_http(p, f, tx, events)
            if len(parser.events) > nev:
                events = self._app_anomalies(p, f, parser.events[nev:], events)
            events = self._http_finished(p, f, parser, events)
        elif proto == "tls":
            tls: TlsState = app.parser
            had_cert = tls.server.cert is not None
            hello = tls.feed(chunk, toserver)
            new_cert = not had_cert and tls.server.cert is not None
            if hello is not None or new_cert:
                if hello is not None:
                    self.counters["app_tls_hellos"] += 1
                if self.rules is not None:
                    ctxs.append((tls.buffers(), 0, None))
                if toserver and hello is not None and hello.sni:
                    events = self._url_host(p, f, hello.sni, "tls.sni", events)
            sh = tls.server.hello
            if (
                not tls.logged
                and sh is not None
                # Log once the server's certificate is known (TLS <= 1.2) or cannot be seen.
                and (
                    tls.server.cert is not None
                    or sh.negotiated_version >= 0x0304
                    or tls.server.encrypted
                    or tls.server.error
                )
            ):
                tls.logged = True
                if cfg.out_tls:
                    events = events or []
                    events.append(eve.app_event("tls", p.ts, f, tls.eve(), cfg.community_id))
        elif proto == "ssh":
            ssh: SshState = app.parser
            if ssh.feed(chunk, toserver):
                if self.rules is not None:
                    ctxs.append((ssh.buffers(toserver), 0, None))
                if ssh.client and ssh.server and not ssh.logged:
                    ssh.logged = True
                    if cfg.out_ssh:
                        events = events or []
                        events.append(eve.app_event("ssh", p.ts, f, ssh.eve(), cfg.community_id))
        elif proto == "dns":
            if toserver:
                app.dns_tcp_ts = app.dns_tcp_ts or DnsTcpParser()
                msgs = app.dns_tcp_ts.feed(chunk)
            else:
                app.dns_tcp_tc = app.dns_tcp_tc or DnsTcpParser()
                msgs = app.dns_tcp_tc.feed(chunk)
            for m in msgs:
                events = self._dns_msg(p, f, app, m, toserver, ctxs, events)
        return events

    def _http_finished(
        self, p: Packet, f: Flow, parser: HttpParser, events: list[Event] | None
    ) -> list[Event] | None:
        """Log the transactions that are complete (or were given up by the parser)."""
        if parser.overflow:
            finished = parser.overflow + parser.pop_finished()
            parser.overflow = []
        else:
            finished = parser.pop_finished()
        for tx in finished:
            tx.logged = True
            if self.config.out_http:
                events = events or []
                events.append(
                    eve.app_event(
                        "http", p.ts, f, tx.eve(), self.config.community_id, tx_id=tx.tx_id
                    )
                )
        return events

    def _udp_app(
        self,
        p: Packet,
        f: Flow,
        app: _FlowApp,
        toserver: bool,
        ctxs: list[_Ctx],
        events: list[Event] | None,
    ) -> list[Event] | None:
        if not f.app_proto:
            proto = detect_udp(p.payload, p.sport, p.dport)
            if not proto:
                if p.sport == 53 or p.dport == 53:
                    events = self._app_anomalies(p, f, ["dns.malformed_data"], events)
                f.app_proto = "failed"
                return events
            f.app_proto = proto
            self.app_flows[proto] = self.app_flows.get(proto, 0) + 1
        if f.app_proto == "dns":
            try:
                m = parse_message(p.payload)
            except DnsError:
                return self._app_anomalies(p, f, ["dns.malformed_data"], events)
            events = self._dns_msg(p, f, app, m, toserver, ctxs, events)
        return events

    def _dns_msg(
        self,
        p: Packet,
        f: Flow,
        app: _FlowApp,
        m: DnsMessage,
        toserver: bool,
        ctxs: list[_Ctx],
        events: list[Event] | None,
    ) -> list[Event] | None:
        self.counters["app_dns_msgs"] += 1
        tx_id = app.dns_tx
        if not m.is_response:
            app.dns_tx += 1
        else:
            tx_id = max(0, app.dns_tx - 1)
        # dns.query is the request's buffer (Suricata): answers repeat the question, and must
        # not make a rule fire a second time.
        names = [q.rrname.encode() for q in m.queries] if not m.is_response else []
        ctxs.append(({"dns.query": names} if names else {}, tx_id, m))
        if not m.is_response:
            for q in m.queries:
                events = self._url_host(p, f, q.rrname, "dns", events)
        if self.config.out_dns:
            events = events or []
            events.append(
                eve.app_event(
                    "dns",
                    p.ts,
                    f,
                    m.eve(tx_id),
                    self.config.community_id,
                    reverse=not toserver,
                )
            )
        return events

    def _app_anomalies(
        self, p: Packet, f: Flow, names: list[str], events: list[Event] | None
    ) -> list[Event] | None:
        if self._evnames:
            self._evnames = [*self._evnames, *names]
        else:
            self._evnames = list(names)
        if self.config.out_anomaly:
            events = events or []
            for n in names:
                events.append(eve.anomaly_event(p, f, n, self.config.community_id))
        return events

    # -- URLs ------------------------------------------------------------------------------

    def _url_http(
        self, p: Packet, f: Flow, tx: HttpTx, events: list[Event] | None
    ) -> list[Event] | None:
        db = self.url_db
        if db is None or not tx.host and not tx.uri_raw.startswith(b"http"):
            return events
        try:
            v = db.check_http(tx.host_raw or tx.host, tx.uri_raw)
        except ValueError:
            return events
        if v is None:
            return events
        policy = self._url_hit_policy(v, False)
        if policy == "allow":
            return events
        act = self.config.url_action if self.ips and policy == "block" else "alert"
        events = events or []
        events.append(self._url_event(v, p, f, "http", act != "alert", tx.host.decode("latin-1")))
        if act == "block-page":
            f.action = "drop"
            page = BlockPage(
                403,
                _BLOCK_HTML.format(
                    reason=_html(", ".join(v.categories)), url=_html(v.target)
                ).encode(),
                v.target,
                ",".join(v.categories),
            )
            self._pending_verdict = Verdict(Action.RESET, block_page=page, reason="url")
        elif act == "drop":
            f.action = "drop"
            self._pending_verdict = Verdict(Action.DROP, reason="url")
        return events

    def _url_host(
        self, p: Packet, f: Flow, host: str, source: str, events: list[Event] | None
    ) -> list[Event] | None:
        db = self.url_db
        if db is None or not host:
            return events
        try:
            v = db.check_host(host)
        except ValueError:
            return events
        if v is None:
            return events
        policy = self._url_hit_policy(v, True)
        if policy == "allow":
            return events
        act = self.config.url_tls_action if source == "tls.sni" else self.config.url_dns_action
        if not self.ips or policy != "block":
            act = "alert"
        events = events or []
        events.append(self._url_event(v, p, f, source, act != "alert", host))
        if act == "reset":
            f.action = "drop"
            self._pending_verdict = Verdict(Action.RESET, reason="url")
        elif act == "drop":
            if p.proto == PROTO_TCP:
                f.action = "drop"
            self._pending_verdict = Verdict(Action.DROP, reason="url")
        return events

    def _url_hit_policy(self, v: Any, host_only: bool) -> str:
        """Count a database hit and say what the policy makes of it: "block", "alert", or
        "allow" (trusted, or only in allowed categories: passes without an event, counted)."""
        c = self.counters
        c["url_hits"] += 1
        policy: str = self.config.url_policy(v.categories, v.target, host_only)
        if policy == "allow":
            c["url_allowed"] = c.get("url_allowed", 0) + 1
        return policy

    def _url_event(
        self, v: Any, p: Packet, f: Flow, source: str, blocked: bool, host: str
    ) -> Event:
        from vmshield.engines.net.urls import url_event

        return url_event(
            v,
            ts=p.ts,
            source=source,
            action="blocked" if blocked else "allowed",
            src_ip=p.src,
            src_port=p.sport,
            dest_ip=p.dst,
            dest_port=p.dport,
            proto=eve.proto_name(p.proto),
            app_proto=f.app_proto,
            flow_id=f.flow_id,
            hostname=host,
        )

    # -- rules -----------------------------------------------------------------------------

    _pending_verdict: Verdict | None = None

    def _detect(
        self,
        p: Packet,
        f: Flow,
        app: _FlowApp,
        toserver: bool,
        chunk: bytes,
        ctxs: list[_Ctx],
        verdict: Verdict,
        events: list[Event] | None,
    ) -> tuple[Verdict, list[Event] | None]:
        if self._pending_verdict is not None:
            verdict = self._merge(verdict, self._pending_verdict)
            self._pending_verdict = None
        rules = self.rules
        if rules is None:
            return verdict, events
        d = app.ts if toserver else app.tc
        # TCP payload rules see the reassembled stream, never the raw segment (an out-of-order
        # or retransmitted segment is inspected when it lands in order): b"" = nothing new.
        stream: bytes | None = b"" if p.proto == PROTO_TCP else None
        if chunk:
            # Inspect the last INSPECT_OVERLAP bytes already seen plus the new ones, so content
            # split over segments matches; only that tail is kept per direction (memory).
            stream = d.window + chunk if d.window else chunk
            d.window = stream[-INSPECT_OVERLAP:]
            d.gen_bytes += len(chunk)
            if d.gen_bytes > INSPECT_WINDOW:
                d.gen_bytes = 0
                d.prev_alerted = d.alerted
                d.alerted = _NONE
        direction = "to_server" if toserver else "to_client"
        if (
            not stream
            and not ctxs
            and not p.payload
            and not self._evnames
            and not rules.header_candidates(p, app.detect, direction)
        ):
            # Nothing to inspect (a bare ACK) and no rule without a fast pattern applies to
            # this packet's protocol and ports: most packets of a connection end here.
            return verdict, events
        cands: list[int] | None = None
        if not ctxs:
            cands = rules.packet_candidates(p, stream)
            if cands is not None and not cands:
                # No fast pattern in the payload or stream (most data packets): nothing to
                # verify, so no context (nor per-flow rule state) is built for it.
                return verdict, events
        streams = f.streams
        if app.detect is None:
            app.detect = FlowDetectState()
        state = f.state
        established = state == STATE_ESTABLISHED or (state == STATE_CLOSED and f.tcp_state > 0)
        ap = f.app_proto
        app_proto = ap if ap and ap != "unknown" else None
        sb_ts = streams.ts.delivered if streams else 0
        sb_tc = streams.tc.delivered if streams else 0
        # Positional construction: this runs for every packet. The flow counters (flow.pkts,
        # flow.bytes, flow.age) and this packet's stream / app-layer event names come along.
        evnames = self._evnames
        found: list[tuple[Any, int | None, Any]]
        if not ctxs:
            alerts = rules.match_candidates(
                InspectContext(
                    p, direction, established, app.detect, stream, _NO_BUFFERS, app_proto,
                    None, sb_ts, sb_tc, f.pkts_toserver, f.pkts_toclient, f.bytes_toserver,
                    f.bytes_toclient, f.start, evnames,
                ),
                cands,
            )  # fmt: skip
            if not alerts:
                return verdict, events
            found = [(a, None, None) for a in alerts]
        else:
            found = []
            for buffers, tx_id, obj in ctxs:
                for a in rules.match(
                    InspectContext(
                        p, direction, established, app.detect, stream, buffers or _NO_BUFFERS,
                        app_proto, tx_id, sb_ts, sb_tc, f.pkts_toserver, f.pkts_toclient,
                        f.bytes_toserver, f.bytes_toclient, f.start, evnames,
                    )
                ):  # fmt: skip
                    found.append((a, tx_id, obj))
                    if a.action == "pass":
                        break
                # The stream bytes are inspected once, with the first transaction.
                if stream:
                    stream = b""
        if not found:
            return verdict, events
        seen: set[int] = set()
        for a, tx_id, obj in found:
            sid = a.sid
            if a.action == "pass":
                # Suricata: a matching pass rule ends inspection of the packet (it comes back
                # alone, first) and passes the whole flow (TCP and UDP): nothing more of it is
                # inspected, and inline the kernel may stop queueing it.
                self.counters["passed"] += 1
                if p.proto in (PROTO_TCP, PROTO_UDP) and not f.action:
                    f.bypassed = True
                    if self._bypass_ok:
                        self.counters["bypassed_flows"] += 1
                        verdict = self._merge(verdict, BYPASS)
                break
            if a.tx_id is None and chunk:
                # One report per signature per inspection window of the stream (the overlap
                # must not repeat a match). App-layer alerts are already once per transaction
                # in the rule engine: two identical requests give two alerts, as Suricata.
                if sid in d.alerted or sid in d.prev_alerted or sid in seen:
                    continue
                if d.alerted is _NONE:
                    d.alerted = set()
                d.alerted.add(sid)  # type: ignore[union-attr]
            seen.add(sid)
            act = a.action if self.ips else "alert"
            blocked = 0
            not_blocked = ""
            if act in ("drop", "reject"):
                f.action = "drop"
                minutes = self.config.ids_block_minutes
                if minutes and self._may_block(p.src):
                    # "Terminate and block" (ids.block-minutes): the source is blocked as an
                    # attacker is; the block drops this packet (a blocked source gets no reset).
                    blocked = minutes
                    verdict = self._merge(verdict, self._block(p.src, minutes, f"sid {sid}"))
                else:
                    if minutes:
                        not_blocked = "source may not be blocked"
                    if act == "reject" and p.proto == PROTO_TCP:
                        self.counters["resets"] += 1
                        verdict = self._merge(verdict, Verdict(Action.RESET, reason=f"sid {sid}"))
                    else:
                        self.counters["drops"] += 1
                        verdict = self._merge(verdict, Verdict(Action.DROP, reason=f"sid {sid}"))
            if a.silent:
                # Past its threshold, or a noalert drop: the verdict applies, no alert is logged.
                self.counters["silent_drops"] += 1
                continue
            self.counters["alerts"] += 1
            f.alerted = True
            if self.config.out_alert:
                events = events or []
                events.append(
                    self._alert_event(p, f, app, a, act, tx_id, obj, blocked, not_blocked)
                )
        return verdict, events

    def _alert_event(
        self,
        p: Packet,
        f: Flow,
        app: _FlowApp,
        a: Any,
        act: str,
        tx_id: int | None = None,
        obj: Any = None,
        block_minutes: int = 0,
        not_blocked: str = "",
    ) -> Event:
        d = eve.packet_base(p, f, self.config.community_id)
        d["direction"] = (
            "to_server" if p.src_bytes == f.src_bytes and p.sport == f.sport else ("to_client")
        )
        al = a.eve_alert()
        if act not in ("drop", "reject"):
            al["action"] = "allowed"
        if block_minutes:
            al["block_minutes"] = block_minutes  # the source (src_ip) is blocked
        elif not_blocked:
            al["not_blocked"] = not_blocked
        d["alert"] = al
        if tx_id is not None:
            d["tx_id"] = tx_id
        parser = app.parser
        if isinstance(obj, HttpTx):
            d["http"] = obj.eve()  # the transaction that matched (pipelining)
        elif isinstance(obj, DnsMessage):
            d["dns"] = obj.eve(tx_id or 0)
        elif isinstance(parser, HttpParser) and parser.txs:
            d["http"] = parser.txs[-1].eve()
        elif isinstance(parser, TlsState) and parser.client.hello:
            d["tls"] = parser.eve()
        elif isinstance(parser, SshState) and (parser.client or parser.server):
            d["ssh"] = parser.eve()
        d["flow"] = {
            "pkts_toserver": f.pkts_toserver,
            "pkts_toclient": f.pkts_toclient,
            "bytes_toserver": f.bytes_toserver,
            "bytes_toclient": f.bytes_toclient,
            "start": format_timestamp(f.start),
        }
        # Suricata 7 adds the flow's own direction (the initiator is the source) to the alert's
        # flow object, the top-level addresses being the packet's.
        eve.add_flow_ends(d["flow"], f)
        return Event(
            event_type="alert",
            timestamp=format_timestamp(p.ts),
            severity=max(1, min(4, int(a.severity or 3))),
            data=d,
        )

    # -- flow end --------------------------------------------------------------------------

    def _done(self, f: Flow) -> bool:
        """Nothing more to inspect on this flow (TCP, streams set up)."""
        if f.action:
            return False
        s = f.streams
        if s is None:
            return False
        ts_done = s.ts.done
        tc_done = s.tc.done
        if ts_done and tc_done:
            return True
        if ts_done or tc_done:
            # Suricata's stream.bypass: the first direction to reach the reassembly depth
            # triggers the bypass (one-way bulk transfers: uploads, downloads, iperf). Every
            # byte of the other direction received so far has been inspected; we hold back
            # only while that other side still has something to deliver: out-of-order data
            # waiting for a gap, or an HTTP request whose response has not been seen yet.
            other = s.tc if ts_done else s.ts
            if other.pending:
                return False
            parser = f.app.parser
            if ts_done and isinstance(parser, HttpParser):
                txs = parser.txs
                if txs and not txs[-1].response_done:
                    return False
            return True
        if f.app_proto == "tls" and self._tls_bypass:
            parser = f.app.parser
            return isinstance(parser, TlsState) and parser.encrypted
        return False

    def _close_app(self, f: Flow, events: list[Event] | None) -> list[Event] | None:
        app: _FlowApp = f.app
        cfg = self.config
        if isinstance(app.parser, HttpParser):
            for tx in app.parser.close():
                if tx.logged:
                    continue
                tx.logged = True
                if cfg.out_http and tx.method:
                    events = events or []
                    events.append(
                        eve.app_event("http", f.last, f, tx.eve(), cfg.community_id, tx_id=tx.tx_id)
                    )
            app.parser.txs.clear()
        elif isinstance(app.parser, SshState) and not app.parser.logged:
            app.parser.logged = True
            if cfg.out_ssh and (app.parser.client or app.parser.server):
                events = events or []
                events.append(eve.app_event("ssh", f.last, f, app.parser.eve(), cfg.community_id))
        elif isinstance(app.parser, TlsState) and not app.parser.logged:
            app.parser.logged = True
            if cfg.out_tls and app.parser.client.hello:
                events = events or []
                events.append(eve.app_event("tls", f.last, f, app.parser.eve(), cfg.community_id))
        return events

    def _end_flow(self, f: Flow, out: list[Event]) -> list[Event]:
        if f.app is not None:
            extra = self._close_app(f, None)
            if extra:
                out.extend(extra)
        if f.streams is not None:
            f.streams.release()
        if self.config.out_flow:
            out.append(eve.flow_event(f, self.config.community_id))
        return out

    def _housekeeping(self, ts: float) -> None:
        self._next_housekeeping = ts + self.config.flow_housekeeping_interval
        if self._next_housekeeping == ts:
            self._next_housekeeping = ts + 1.0
        ended = self.flows.expire(ts)
        self.defrag.expire(ts)
        for f in ended:
            self._pending = self._end_flow(f, self._pending)


def load_rules(
    paths: Sequence[str], config: EngineConfig, classification: str | None = None
) -> Any:
    """A RuleSet from rule files with the address and port variables of `config`.

    HOME_NET comes from `config.home_net` and EXTERNAL_NET is `!$HOME_NET` (Suricata's default);
    `config.address_vars` / `port_vars` add or override groups. Rejected rules are in
    `.rejected` (file, line, sid, keyword, reason); the caller reports them.
    """
    from vmshield.engines.net.rules import Classification, RuleSet, Variables

    variables = Variables.default()
    variables.set_address("HOME_NET", "[" + ",".join(config.home_net) + "]")
    variables.set_address("EXTERNAL_NET", "!$HOME_NET")
    for k, v in config.address_vars.items():
        variables.set_address(k, v)
    for k, v in config.port_vars.items():
        variables.set_port(k, v)
    cls = Classification.load(classification) if classification else Classification.default()
    return RuleSet.load(paths=list(paths), variables=variables, classification=cls)


def _html(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


__all__ = [
    "ACCEPT",
    "Action",
    "BlockPage",
    "Engine",
    "PacketResult",
    "Verdict",
    "load_rules",
]
