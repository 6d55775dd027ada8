"""Data shared between the rule engine and the packet pipeline (see the package docstring)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from ..packet import Packet

# Sticky buffers the pipeline may fill (canonical names; legacy names are mapped onto these).
BUFFER_NAMES: Final = (
    "http.uri",
    "http.uri.raw",
    "http.method",
    "http.host",
    "http.host.raw",
    "http.user_agent",
    "http.header",
    "http.header.raw",
    "http.request_header",
    "http.response_header",
    "http.server",
    "http.protocol",
    "http.request_line",
    "http.response_line",
    "http.request_body",
    "http.response_body",
    "http.stat_code",
    "http.stat_msg",
    "http.cookie",
    "http.content_type",
    "http.content_len",
    "http.referer",
    "http.accept",
    "http.accept_lang",
    "http.accept_enc",
    "http.connection",
    "http.location",
    "http.start",
    "file.data",
    "file.name",
    "dns.query",
    "tls.sni",
    "tls.version",
    "tls.cert_subject",
    "tls.cert_issuer",
    "tls.cert_serial",
    "tls.cert_fingerprint",
    "ja3.hash",
    "ja3.string",
    "ja3s.hash",
    "ja3s.string",
    "ja4.hash",
    "ssh.proto",
    "ssh.software",
)

# Limits on what one rule may ask for, so a hostile or broken rule file cannot exhaust memory.
MAX_RULE_LEN: Final = 65536
MAX_CONTENT_LEN: Final = 4096
MAX_ITEMS_PER_RULE: Final = 256
# Suricata's inspection recursion limit: bounds backtracking over relative content chains.
INSPECTION_RECURSION_LIMIT: Final = 3000


@dataclass(slots=True)
class RuleError:
    """Why a rule was not loaded."""

    file: str
    line: int
    sid: int | None
    keyword: str | None
    reason: str

    def __str__(self) -> str:
        sid = f" sid {self.sid}" if self.sid is not None else ""
        kw = f" keyword '{self.keyword}'" if self.keyword else ""
        return f"{self.file}:{self.line}:{sid}{kw}: {self.reason}"


@dataclass(slots=True)
class LoadStats:
    loaded: int = 0
    rejected: int = 0
    files: int = 0
    duplicates: int = 0
    left_out: int = 0  # parsed, not loaded: a RuleSelection (policy) leaves their classtype out
    report_only: int = 0  # drop/reject rules loaded as alert rules by a RuleSelection


@dataclass(slots=True, init=False)
class Alert:
    """One signature that matched (after thresholds)."""

    sid: int
    gid: int
    rev: int
    msg: str
    action: str  # alert | drop | reject | pass
    classtype: str | None
    category: str  # classification description ("" without classtype)
    severity: int  # the rule's priority (1 is highest)
    metadata: dict[str, list[str]] = field(default_factory=dict)
    references: list[str] = field(default_factory=list)
    target: str | None = None  # "src_ip" | "dest_ip" | None
    rule: str = ""  # the rule text as written (one line)
    # Thresholded past its alert budget: log no alert event, but still apply drop / reject
    # (Suricata applies those to every matching packet).
    silent: bool = False
    # The transaction this alert belongs to (app-layer rules): already reported once per
    # transaction by the rule engine, so stream-level de-duplication must not drop it.
    tx_id: int | None = None

    def __init__(
        self,
        sid: int,
        gid: int,
        rev: int,
        msg: str,
        action: str,
        classtype: str | None,
        category: str,
        severity: int,
        metadata: dict[str, list[str]] | None = None,
        references: list[str] | None = None,
        target: str | None = None,
        rule: str = "",
        silent: bool = False,
        tx_id: int | None = None,
    ) -> None:
        # Written out for the compiled build: see Packet.__init__.
        self.sid = sid
        self.gid = gid
        self.rev = rev
        self.msg = msg
        self.action = action
        self.classtype = classtype
        self.category = category
        self.severity = severity
        self.metadata = {} if metadata is None else metadata
        self.references = [] if references is None else references
        self.target = target
        self.rule = rule
        self.silent = silent
        self.tx_id = tx_id

    def eve_alert(self) -> dict[str, Any]:
        """The EVE `alert` object (Suricata's field names)."""
        out: dict[str, Any] = {
            "action": "blocked" if self.action in ("drop", "reject") else "allowed",
            "gid": self.gid,
            "signature_id": self.sid,
            "rev": self.rev,
            "signature": self.msg,
            "category": self.category,
            "severity": self.severity,
        }
        if self.metadata:
            out["metadata"] = self.metadata
        return out


class FlowDetectState:
    """Per-flow state of the rule engine, stored by the pipeline on its flow object."""

    __slots__ = ("_bits", "_ints", "_tx_alerted", "_iponly_done")

    # Bounds: a flow cannot grow these without limit whatever the rules do.
    MAX_FLOWBITS = 1024
    MAX_TX_MARKS = 4096

    def __init__(self) -> None:
        # Containers are made on first write: most flows never get a flowbit, flowint or
        # transaction mark, and three empty sets and a dict were ~0.9 KB on every flow.
        self._bits: set[str] | None = None
        self._ints: dict[str, int] | None = None
        self._tx_alerted: set[tuple[int, str, int, int]] | None = None
        # directions (DIR_BITS) whose first packet went through the IP-only signatures
        self._iponly_done = 0

    def has_bit(self, name: str) -> bool:
        return self._bits is not None and name in self._bits

    def set_bit(self, name: str) -> None:
        bits = self._bits
        if bits is None:
            bits = self._bits = set()
        if len(bits) < self.MAX_FLOWBITS or name in bits:
            bits.add(name)

    def unset_bit(self, name: str) -> None:
        if self._bits is not None:
            self._bits.discard(name)

    def get_int(self, name: str) -> int | None:
        return self._ints.get(name) if self._ints is not None else None

    def set_int(self, name: str, value: int) -> None:
        ints = self._ints
        if ints is None:
            ints = self._ints = {}
        if len(ints) < self.MAX_FLOWBITS or name in ints:
            ints[name] = value

    def tx_marked(self, key: tuple[int, str, int, int]) -> bool:
        return self._tx_alerted is not None and key in self._tx_alerted

    def mark_tx(self, key: tuple[int, str, int, int]) -> bool:
        """Record an alert for a transaction; False when it was already recorded."""
        marks = self._tx_alerted
        if marks is None:
            marks = self._tx_alerted = set()
        if key in marks:
            return False
        if len(marks) >= self.MAX_TX_MARKS:
            marks.clear()  # very long flow: forget old transactions, keep bounded
        marks.add(key)
        return True

    def iponly_pending(self, direction: str) -> bool:
        """Whether the IP-only signatures are still to be checked for this direction."""
        return not self._iponly_done & DIR_BITS.get(direction, 4)

    def iponly_first(self, direction: str) -> bool:
        """`iponly_pending`, and the direction is marked as checked."""
        bit = DIR_BITS.get(direction, 4)
        first = not self._iponly_done & bit
        self._iponly_done |= bit
        return first


DIR_BITS: Final = {"to_server": 1, "to_client": 2}


@dataclass(slots=True, init=False)
class InspectContext:
    """Everything detection may look at for one packet."""

    packet: Packet
    direction: str | None = None  # "to_server" | "to_client" | None without a flow
    established: bool = False
    flow_state: FlowDetectState | None = None
    stream: bytes | memoryview | None = None
    buffers: Mapping[str, bytes | Sequence[bytes]] = field(default_factory=dict)
    app_proto: str | None = None
    tx_id: int | None = None
    stream_bytes_toserver: int = 0
    stream_bytes_toclient: int = 0
    # Flow counters for flow.pkts / flow.bytes / flow.age (None: not provided, those keywords
    # then never match). Counted up to and including this packet, as Suricata does.
    flow_pkts_toserver: int | None = None
    flow_pkts_toclient: int | None = None
    flow_bytes_toserver: int | None = None
    flow_bytes_toclient: int | None = None
    flow_start: float | None = None  # time of the flow's first packet
    # Stream and app-layer event names raised by this packet, with Suricata's names
    # ("stream.pkt_retransmission", "http.request_field_too_long"), for stream-event and
    # app-layer-event rules. Decoder events come from Packet.anomalies.
    events: Sequence[str] = ()

    def __init__(
        self,
        packet: Packet,
        direction: str | None = None,
        established: bool = False,
        flow_state: FlowDetectState | None = None,
        stream: bytes | memoryview | None = None,
        buffers: Mapping[str, bytes | Sequence[bytes]] | None = None,
        app_proto: str | None = None,
        tx_id: int | None = None,
        stream_bytes_toserver: int = 0,
        stream_bytes_toclient: int = 0,
        flow_pkts_toserver: int | None = None,
        flow_pkts_toclient: int | None = None,
        flow_bytes_toserver: int | None = None,
        flow_bytes_toclient: int | None = None,
        flow_start: float | None = None,
        events: Sequence[str] = (),
    ) -> None:
        # Written out for the compiled build: see Packet.__init__.
        self.packet = packet
        self.direction = direction
        self.established = established
        self.flow_state = flow_state
        self.stream = stream
        self.buffers = {} if buffers is None else buffers
        self.app_proto = app_proto
        self.tx_id = tx_id
        self.stream_bytes_toserver = stream_bytes_toserver
        self.stream_bytes_toclient = stream_bytes_toclient
        self.flow_pkts_toserver = flow_pkts_toserver
        self.flow_pkts_toclient = flow_pkts_toclient
        self.flow_bytes_toserver = flow_bytes_toserver
        self.flow_bytes_toclient = flow_bytes_toclient
        self.flow_start = flow_start
        self.events = events
