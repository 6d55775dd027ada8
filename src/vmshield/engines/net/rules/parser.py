"""Parse one Suricata rule into a `Rule` (header, options, detection items).

Every problem raises `RuleReject(keyword, reason)`; the loader adds file, line and sid. A rule is
either fully understood or rejected — never loaded with a keyword silently skipped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# The `regex` module: PCRE-like syntax and, unlike `re`, a time limit per search, so hostile
# traffic cannot make a badly written rule backtrack forever (Suricata's pcre match-limit).
import regex as pcre_engine

from . import checks
from .classification import Classification
from .items import (
    Base64Decode,
    BufSize,
    ByteExtract,
    ByteJump,
    ByteMath,
    ByteOpts,
    ByteTest,
    Content,
    DatasetOp,
    IntOrVar,
    IsDataAt,
    Pcre,
    parse_int,
    parse_uint,
)
from .model import MAX_CONTENT_LEN, MAX_ITEMS_PER_RULE, MAX_RULE_LEN
from .transforms import TRANSFORMS, parse_transform
from .variables import AddressSet, GroupError, PortSet, Variables


class RuleReject(Exception):
    def __init__(self, keyword: str | None, reason: str) -> None:
        super().__init__(reason)
        self.keyword = keyword
        self.reason = reason


ACTIONS = {"alert": "alert", "drop": "drop", "reject": "reject", "rejectsrc": "reject",
           "rejectdst": "reject", "rejectboth": "reject", "pass": "pass"}  # fmt: skip

# Transport protocols: name -> set of IP protocol numbers (None: any IP).
L4_PROTOS: dict[str, frozenset[int] | None] = {
    "ip": None, "pkthdr": None, "ipv4": None, "ip4": None, "ipv6": None, "ip6": None,
    "tcp": frozenset({6}), "tcp-pkt": frozenset({6}), "tcp-stream": frozenset({6}),
    "udp": frozenset({17}), "icmp": frozenset({1, 58}), "icmpv4": frozenset({1}),
    "icmpv6": frozenset({58}), "sctp": frozenset({132}),
}  # fmt: skip
# Application protocols a rule header may name; matched against the flow's app_proto.
APP_PROTOS = {
    "http", "http1", "http2", "dns", "tls", "ssh", "ftp", "ftp-data", "smtp", "smb", "dcerpc",
    "dhcp", "imap", "pop3", "krb5", "snmp", "sip", "rdp", "mqtt", "nfs", "ntp", "tftp", "ike",
    "modbus", "dnp3", "enip", "rfb", "quic", "ldap", "websocket", "telnet", "bittorrent-dht",
    "pgsql", "irc",
}  # fmt: skip
_APP_TRANSPORT = {"dns": frozenset({6, 17}), "dhcp": frozenset({17}), "ntp": frozenset({17}),
                  "snmp": frozenset({17}), "tftp": frozenset({17}), "ike": frozenset({17}),
                  "quic": frozenset({17}), "sip": frozenset({6, 17}), "krb5": frozenset({6, 17}),
                  "nfs": frozenset({6, 17}), "dcerpc": frozenset({6, 17}),
                  "bittorrent-dht": frozenset({17}), "enip": frozenset({6, 17})}  # fmt: skip

# Sticky buffer keywords -> canonical buffer name.
STICKY: dict[str, str] = {
    "pkt_data": "pkt",
    "file.data": "file.data", "file_data": "file.data", "file.name": "file.name",
    "dns.query": "dns.query", "dns_query": "dns.query",
    "tls.sni": "tls.sni", "tls_sni": "tls.sni",
    "tls.cert_subject": "tls.cert_subject", "tls.cert_issuer": "tls.cert_issuer",
    "tls.cert_serial": "tls.cert_serial", "tls.cert_fingerprint": "tls.cert_fingerprint",
    "ja3.hash": "ja3.hash", "ja3_hash": "ja3.hash", "ja3.string": "ja3.string",
    "ja3s.hash": "ja3s.hash", "ja3s.string": "ja3s.string", "ja4.hash": "ja4.hash",
    "ssh.proto": "ssh.proto", "ssh_proto": "ssh.proto", "ssh.software": "ssh.software",
    "ssh_software": "ssh.software", "tls_cert_subject": "tls.cert_subject",
    "tls_cert_issuer": "tls.cert_issuer", "tls_cert_serial": "tls.cert_serial",
    "tls_cert_fingerprint": "tls.cert_fingerprint", "ja3s_hash": "ja3s.hash",
    "ja3_string": "ja3.string", "ja3s_string": "ja3s.string",
    "ipv4.hdr": "ipv4.hdr", "ipv6.hdr": "ipv6.hdr", "tcp.hdr": "tcp.hdr",
}  # fmt: skip
for _n in (
    "uri", "uri.raw", "method", "host", "host.raw", "user_agent", "header", "header.raw",
    "request_header", "response_header", "server", "protocol", "request_line", "response_line",
    "request_body", "response_body", "stat_code", "stat_msg", "cookie", "content_type",
    "content_len", "referer", "accept", "accept_lang", "accept_enc", "connection", "location",
    "start", "header_names",
):  # fmt: skip
    STICKY["http." + _n] = "http." + _n
# Legacy spellings that are sticky buffers (Suricata's docs mark them with (*)).
for _n in ("request_line", "response_line", "accept", "accept_lang", "accept_enc", "connection",
           "content_type", "content_len", "referer", "start", "header_names", "protocol",
           "server", "location", "response_body", "request_header", "response_header"):  # fmt: skip
    STICKY["http_" + _n] = "http." + _n
# Legacy content modifiers: move the previous content into a buffer.
LEGACY: dict[str, str] = {
    "http_uri": "http.uri", "http_raw_uri": "http.uri.raw", "http_method": "http.method",
    "http_header": "http.header", "http_raw_header": "http.header.raw",
    "http_cookie": "http.cookie", "http_user_agent": "http.user_agent", "http_host": "http.host",
    "http_raw_host": "http.host.raw", "http_client_body": "http.request_body",
    "http_server_body": "http.response_body", "http_stat_code": "http.stat_code",
    "http_stat_msg": "http.stat_msg",
}  # fmt: skip
# Buffers that belong to the packet (not to an app-layer transaction).
PACKET_BUFFERS = {"pkt", "ipv4.hdr", "ipv6.hdr", "tcp.hdr"}
# Which side of a transaction a buffer belongs to: an app-layer rule is inspected in that
# direction only (as Suricata registers its buffers), so one transaction cannot alert twice.
REQUEST_BUFFERS = {
    "http.uri", "http.uri.raw", "http.method", "http.request_line", "http.request_body",
    "http.user_agent", "http.host", "http.host.raw", "http.request_header", "http.accept",
    "http.accept_lang", "http.accept_enc", "http.referer", "tls.sni", "ja3.hash", "ja3.string",
    "ja4.hash",
}  # fmt: skip
RESPONSE_BUFFERS = {
    "http.stat_code", "http.stat_msg", "http.response_line", "http.response_body", "http.server",
    "http.location", "http.response_header", "ja3s.hash", "ja3s.string", "tls.cert_subject",
    "tls.cert_issuer", "tls.cert_serial", "tls.cert_fingerprint",
}  # fmt: skip
# Buffers Suricata normalises to lower case: patterns with upper case can never match.
_LOWER_BUFFERS = {"http.host"}
# Buffers Suricata 7 registers for one direction only (the certificate buffers and
# http.response_body, which is file.data there, serve both): a rule using both kinds, or a
# flow direction against its buffers, is rejected ("mixes keywords with conflicting directions").
_TOSERVER_ONLY = REQUEST_BUFFERS | {"dns.query"}
_TOCLIENT_ONLY = {"http.stat_code", "http.stat_msg", "http.response_line", "http.server",
                  "http.location", "http.response_header", "ja3s.hash", "ja3s.string"}  # fmt: skip
# Hash buffers whose contents Suricata lower-cases (hex digests), checking the first is a digest.
_HASH_BUFFERS = {"ja3.hash": 32, "ja3s.hash": 32}

# pcre buffer flags -> buffer.
_PCRE_BUF = {"U": "http.uri", "I": "http.uri.raw", "P": "http.request_body",
             "Q": "http.response_body", "H": "http.header", "D": "http.header.raw",
             "M": "http.method", "C": "http.cookie", "S": "http.stat_code",
             "Y": "http.stat_msg", "V": "http.user_agent", "W": "http.host",
             "Z": "http.host.raw"}  # fmt: skip

BufKey = tuple[str, tuple[Any, ...]]  # (buffer name, transforms)
PKT: BufKey = ("pkt", ())
B64_DATA: BufKey = ("base64_data", ())  # inspected from within base64_decode, never alone


@dataclass(slots=True)
class Threshold:
    kind: str  # limit | threshold | both | detection_filter
    track: str  # by_src | by_dst | by_rule | by_both | by_flow
    count: int
    seconds: int


@dataclass(slots=True)
class Rule:
    raw: str
    action: str
    proto: str
    ipprotos: frozenset[int] | None
    app_proto: str | None
    ip_version: int  # 0 any, 4, 6
    src: AddressSet
    sport: PortSet
    dst: AddressSet
    dport: PortSet
    bidir: bool
    sid: int = 0
    gid: int = 1
    rev: int = 0
    msg: str = ""
    classtype: str | None = None
    category: str = ""
    priority: int = 3
    metadata: dict[str, list[str]] = field(default_factory=dict)
    references: list[str] = field(default_factory=list)
    target: str | None = None
    # flow
    flow_dir: str | None = None  # to_server | to_client
    flow_established: bool | None = None
    stream_mode: str | None = None  # only_stream | no_stream
    frag_mode: str | None = None  # only_frag | no_frag
    # per-packet checks (header options), each ctx-> bool
    checks: list[Callable[[Any], bool]] = field(default_factory=list)
    flowbit_tests: list[tuple[str, str, list[str]]] = field(default_factory=list)  # op, join, names
    flowbit_actions: list[tuple[str, list[str]]] = field(default_factory=list)
    flowint_tests: list[tuple[str, str, IntOrVar | None]] = field(default_factory=list)
    flowint_actions: list[tuple[str, str, IntOrVar]] = field(default_factory=list)
    # Suricata's match list, in rule order: ("fb", op, join, names) / ("fi", op, name, value).
    # Evaluated after the payload; flowint = + - modify the flow as they are reached.
    flow_matches: list[tuple[Any, ...]] = field(default_factory=list)
    # hostbits / xbits: (op, name, track, expire seconds); tests and actions
    xbit_tests: list[tuple[str, str, str, int]] = field(default_factory=list)
    xbit_actions: list[tuple[str, str, str, int]] = field(default_factory=list)
    noalert: bool = False
    threshold: Threshold | None = None
    lists: dict[BufKey, list[Any]] = field(default_factory=dict)
    fast: tuple[BufKey, bytes, bool] | None = None  # (buffer, literal, nocase)
    app_layer: bool = False  # inspects a transaction buffer
    datasets: list[tuple[str, str, str | None, str | None]] = field(default_factory=list)
    order: tuple[int, ...] = ()
    prefilter_kw: bool = False
    has_flow_kw: bool = False
    tx_dir: str | None = None  # the transaction side its buffers belong to (None: either)
    itype_eq: int | None = None  # `itype:N` (exact): lets the prefilter bucket ICMP rules
    # Suricata's "IP-only" signature: addresses (and any ports) only; it is checked on the first
    # packet of each direction of a flow, not on every packet.
    ip_only: bool = False


# ---------------------------------------------------------------------------------------------
# Tokenising
def _header_tokens(header: str) -> list[str]:
    """Split the header on white space outside [...] lists (lists may contain spaces)."""
    if "[" not in header and "! " not in header:
        return header.split()
    toks: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in header.strip():
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(0, depth - 1)
        if ch.isspace() and depth == 0:
            if cur:
                toks.append("".join(cur))
                cur = []
            continue
        if not (ch.isspace() and depth > 0):
            cur.append(ch)
    if cur:
        toks.append("".join(cur))
    # "! 1.1.1.1": a negation written apart from its operand
    out: list[str] = []
    for t in toks:
        if out and out[-1] == "!":
            out[-1] = "!" + t
        else:
            out.append(t)
    return out


_OPTION = re.compile(r'((?:[^;"\\]|\\.|"(?:[^"\\]|\\.)*")*);', re.S)


def split_rule(text: str) -> tuple[str, list[tuple[str, str | None]]]:
    """Split into the header and (keyword, value) options. Values keep their escapes."""
    if len(text) > MAX_RULE_LEN:
        raise RuleReject(None, f"rule longer than {MAX_RULE_LEN} characters")
    lp = text.find("(")
    if lp < 0 or not text.rstrip().endswith(")"):
        raise RuleReject(None, "rule has no '( options )' part")
    header = text[:lp]
    body = text[lp + 1 : text.rstrip().rfind(")")]
    opts: list[tuple[str, str | None]] = []
    pos, n = 0, len(body)
    # one option: escaped characters, quoted strings (with escapes) or plain characters, up to ';'
    while pos < n:
        m = _OPTION.match(body, pos)
        if m is None:
            rest = body[pos:].strip()
            if (rest.count('"') - rest.count('\\"')) % 2:
                raise RuleReject(None, "unterminated quoted string in options")
            if rest:
                raise RuleReject(None, f"option not terminated by ';': '{rest[:40]}'")
            break
        _add_opt(opts, m.group(1))
        pos = m.end()
    return header, opts


def _add_opt(opts: list[tuple[str, str | None]], s: str) -> None:
    s = s.strip()
    if not s:
        return
    k, sep, v = s.partition(":")
    opts.append((k.strip().lower(), v.strip() if sep else None))


def unquote(v: str | None, kw: str) -> str:
    if v is None:
        raise RuleReject(kw, "needs a value")
    v = v.strip()
    if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        v = v[1:-1]
    return v


def _unescape(s: str) -> str:
    return re.sub(r"\\(.)", r"\1", s)


def parse_content(v: str, kw: str = "content") -> tuple[bytes, bool]:
    """content value -> (bytes, negated). Handles |hex| and escaped ; \" \\ characters."""
    v = v.strip()
    neg = False
    if v.startswith("!"):
        neg, v = True, v[1:].strip()
    if len(v) < 2 or v[0] != '"' or v[-1] != '"':
        raise RuleReject(kw, "value must be a quoted string")
    s = v[1:-1]
    out = bytearray()
    i, n, hexmode = 0, len(s), False
    hexbuf = ""
    while i < n:
        ch = s[i]
        if ch == "|":
            if hexmode and hexbuf:
                raise RuleReject(kw, "odd number of hex digits")
            hexmode = not hexmode
            i += 1
            continue
        if hexmode:
            if ch in " \t":
                i += 1
                continue
            if ch not in "0123456789abcdefABCDEF":
                raise RuleReject(kw, f"invalid hex character '{ch}'")
            hexbuf += ch
            if len(hexbuf) == 2:
                out.append(int(hexbuf, 16))
                hexbuf = ""
            i += 1
            continue
        if ch == "\\":
            if i + 1 >= n:
                raise RuleReject(kw, "trailing backslash")
            out += s[i + 1].encode("utf-8", "surrogateescape")
            i += 2
            continue
        if ch == '"' or ch == ";":
            raise RuleReject(kw, f"unescaped '{ch}' in content")
        out += ch.encode("utf-8", "surrogateescape")
        i += 1
    if hexmode:
        raise RuleReject(kw, "unterminated |hex| section")
    if not out:
        raise RuleReject(kw, "empty content")
    if len(out) > MAX_CONTENT_LEN:
        raise RuleReject(kw, f"content longer than {MAX_CONTENT_LEN} bytes")
    return bytes(out), neg


# ---------------------------------------------------------------------------------------------
class _Builder:
    def __init__(self, rule: Rule, variables: Variables, classification: Classification,
                 dataset_resolver: Callable[..., None] | None) -> None:  # fmt: skip
        self.r = rule
        self.vars = variables
        self.cls = classification
        self.ds = dataset_resolver
        self.sticky: str | None = None
        self.transforms: list[tuple[Any, ...]] = []
        self.items: list[tuple[BufKey, Any]] = []  # ordered; key of a Content may change (legacy)
        self.last_content: int | None = None  # index into items
        self.last_match: int | None = None  # last item usable by prefilter keyword
        self.names: set[str] = set()  # byte_extract / byte_math variables
        self.seen: set[str] = set()
        self.fast_set = False

    def key(self) -> BufKey:
        if self.sticky is None:
            return PKT
        return (self.sticky, tuple(self.transforms))

    def add(self, item: Any, key: BufKey | None = None) -> None:
        if len(self.items) >= MAX_ITEMS_PER_RULE:
            raise RuleReject(None, f"more than {MAX_ITEMS_PER_RULE} detection keywords")
        self.items.append((key or self.key(), item))

    def content(self, kw: str) -> Content:
        if self.last_content is None:
            raise RuleReject(kw, "needs a preceding content")
        c = self.items[self.last_content][1]
        assert isinstance(c, Content)
        return c

    def num(self, v: str | None, kw: str, allow_neg: bool = False) -> IntOrVar:
        s = unquote(v, kw).strip()
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", s):
            if s not in self.names:
                raise RuleReject(kw, f"unknown variable '{s}' (no byte_extract/byte_math sets it)")
            return s
        n = parse_int(s, kw)
        if (n < 0 and not allow_neg) or abs(n) > 0xFFFFFFFF:
            raise RuleReject(kw, f"value out of range '{s}'")
        return n


def parse_rule(text: str, variables: Variables, classification: Classification,
               dataset_resolver: Callable[..., None] | None = None) -> Rule:  # fmt: skip
    header, opts = split_rule(text)
    toks = _header_tokens(header)
    if len(toks) != 7 or toks[4] not in ("->", "<>"):
        if len(toks) == 7 and toks[4] == "=>":
            raise RuleReject(None, "transactional rules ('=>') are not supported")
        raise RuleReject(None, "bad header: expected 'action proto src sport -> dst dport'")
    action_s, proto, src_a, src_p, dirn, dst_a, dst_p = toks
    action = ACTIONS.get(action_s.lower())
    if action is None:
        raise RuleReject(None, f"unknown action '{action_s}'")
    src_parts, dst_parts = [src_a, src_p], [dst_a, dst_p]
    proto = proto.lower()
    ipprotos: frozenset[int] | None
    app: str | None = None
    if proto in L4_PROTOS:
        ipprotos = L4_PROTOS[proto]
    elif proto in APP_PROTOS:
        app = "http" if proto == "http1" else proto
        ipprotos = _APP_TRANSPORT.get(proto, frozenset({6}))
    else:
        raise RuleReject(None, f"unknown protocol '{proto}'")
    try:
        src = variables.address(src_parts[0])
        sport = variables.port(src_parts[1])
        dst = variables.address(dst_parts[0])
        dport = variables.port(dst_parts[1])
    except GroupError as e:
        raise RuleReject(None, f"header: {e}") from None
    r = Rule(raw=text, action=action, proto=proto, ipprotos=ipprotos, app_proto=app,
             ip_version=4 if proto in ("ipv4", "ip4") else 6 if proto in ("ipv6", "ip6") else 0,
             src=src, sport=sport, dst=dst, dport=dport, bidir=dirn == "<>")  # fmt: skip
    if proto == "tcp-pkt":
        r.stream_mode = "no_stream"
    elif proto == "tcp-stream":
        r.stream_mode = "only_stream"
    b = _Builder(r, variables, classification, dataset_resolver)
    # sid first, so that errors name it
    for k, v in opts:
        if k == "sid":
            try:
                r.sid = int(unquote(v, "sid"))
            except ValueError:
                raise RuleReject("sid", f"bad sid '{v}'") from None
    for k, v in opts:
        handler = KEYWORDS.get(k)
        try:
            if handler is None:
                if k in LEGACY:
                    _legacy(b, k, LEGACY[k])
                    continue
                if k in STICKY:
                    _sticky(b, k, v)
                    continue
                if k in TRANSFORMS:
                    _transform(b, k, v)
                    continue
                raise RuleReject(k, "unsupported keyword")
            handler(b, k, v)
        except (ValueError, TypeError, IndexError, KeyError) as e:
            # Handlers let a value's ValueError through: the rejection names the keyword here,
            # once, and the loader adds file, line and sid. Never crash the load.
            raise RuleReject(k, f"bad value: {e}") from None
    _finish(b)
    return r


def _finish(b: _Builder) -> None:
    r = b.r
    if r.sid <= 0:
        raise RuleReject("sid", "rule has no sid")
    if r.sid > 0xFFFFFFFF or r.gid > 0xFFFFFFFF or r.rev > 0xFFFFFFFF:
        raise RuleReject("sid", "sid, gid and rev must fit in 32 bits")
    if r.classtype:
        ct = b.cls.get(r.classtype)
        if ct is None:
            raise RuleReject("classtype", f"unknown classtype '{r.classtype}'")
        r.category = ct.description
        if "priority" not in b.seen:
            r.priority = ct.priority
    lists: dict[BufKey, list[Any]] = {}
    for key, item in b.items:
        lists.setdefault(key, []).append(item)
    b64 = lists.pop(B64_DATA, None)
    decoders = [it for items in lists.values() for it in items if isinstance(it, Base64Decode)]
    if b64 is not None or decoders:
        if len(decoders) != 1 or b64 is None:
            raise RuleReject("base64_data", "needs exactly one base64_decode before it")
        decoders[0].data_items = b64
        for items in lists.values():
            if decoders[0] in items and items[-1] is not decoders[0]:
                raise RuleReject("base64_decode", "must be the last keyword of its buffer")
    for key, items in lists.items():
        name = key[0]
        for i, it in enumerate(items):
            nxt = items[i + 1] if i + 1 < len(items) else None
            # Suricata retries the next occurrence of a content only when what follows is
            # within-relative to it (a content with `within`, or a relative pcre / isdataat /
            # byte_*); a distance-only content gives up. A pcre retries before any relative.
            if isinstance(it, Content):
                it.relative_next = nxt is not None and (
                    (isinstance(nxt, Content) and nxt.within is not None)
                    or (not isinstance(nxt, Content) and bool(getattr(nxt, "relative", False)))
                    or (
                        isinstance(nxt, ByteTest | ByteJump | ByteExtract | ByteMath)
                        and nxt.o.relative
                    )
                )
            elif isinstance(it, Pcre):
                it.relative_next = nxt is not None and (
                    (isinstance(nxt, Content) and nxt.relative)
                    or bool(getattr(nxt, "relative", False))
                    or (
                        isinstance(nxt, ByteTest | ByteJump | ByteExtract | ByteMath)
                        and nxt.o.relative
                    )
                )
            if (
                isinstance(it, Content)
                and name in _LOWER_BUFFERS
                and not it.nocase
                and it.pattern != it.pattern.lower()
            ):
                raise RuleReject("content", f"{name} is lower case: pattern with upper case "
                                     "characters can never match (use nocase or lower case)")  # fmt: skip
        if name in _HASH_BUFFERS:
            _hash_contents(name, items, _HASH_BUFFERS[name])
        if name not in PACKET_BUFFERS:
            r.app_layer = True
    r.lists = lists
    if r.app_proto is None and r.app_layer:
        pass  # e.g. `alert tcp ... http.uri;` — Suricata accepts; the buffer decides
    r.fast = _choose_fast(lists)
    names = {key[0] for key in lists}
    _check_directions(names, r.flow_dir)
    if names & RESPONSE_BUFFERS:
        # a rule mixing both sides (a request buffer with http.response_body or a certificate
        # buffer; the others are rejected above) is inspected with the response
        r.tx_dir = "to_client"
    elif names & REQUEST_BUFFERS:
        r.tx_dir = "to_server"
    r.ip_only = (
        r.app_proto is None
        and r.proto not in ("pkthdr", "tcp-pkt", "tcp-stream")
        and not lists
        and not r.checks
        and not r.has_flow_kw
        and not r.flow_matches
        and all(op == "set" for op, _ in r.flowbit_actions)
        and not r.xbit_tests
        and (
            r.ipprotos is not None
            and not (r.ipprotos & {6, 17})
            or (r.sport.is_any and r.dport.is_any)
        )
    )


def _check_directions(names: set[str], flow_dir: str | None) -> None:
    ts, tc = names & _TOSERVER_ONLY, names & _TOCLIENT_ONLY
    if (ts and tc) or (ts and flow_dir == "to_client") or (tc and flow_dir == "to_server"):
        used = ", ".join(sorted(ts | tc))
        raise RuleReject("flow" if flow_dir and not (ts and tc) else sorted(ts | tc)[0],
                         f"mixes keywords with conflicting directions ({used}"
                         + (f", flow:{flow_dir})" if flow_dir else ")"))  # fmt: skip


def _hash_contents(name: str, items: list[Any], length: int) -> None:
    contents = [it for it in items if isinstance(it, Content)]
    if contents and len(contents[0].pattern) != length:
        raise RuleReject("content", f"{name} needs a {length}-character hash")
    for c in contents:
        c.pattern = c.lpattern = c.pattern.lower()


def _choose_fast(lists: dict[BufKey, list[Any]]) -> tuple[BufKey, bytes, bool] | None:
    """The prefilter pattern: the explicit fast_pattern, else the longest positive content,
    preferring app-layer buffers over the packet payload, as Suricata does."""
    best: tuple[tuple[int, int], BufKey, Content] | None = None
    for key, items in lists.items():
        for it in items:
            if not isinstance(it, Content) or it.negated:
                continue
            if it.fast_pattern:
                pat = it.pattern
                if it.fp_chop:
                    o, ln = it.fp_chop
                    pat = pat[o : o + ln]
                return key, pat, it.nocase
            score = (0 if key[0] in PACKET_BUFFERS else 1, len(it.pattern))
            if best is None or score > best[0]:
                best = (score, key, it)
    if best is None:
        return None
    return best[1], best[2].pattern, best[2].nocase


# ---------------------------------------------------------------------------------------------
# keyword handlers: (builder, keyword, value)
Handler = Callable[[_Builder, str, str | None], None]
KEYWORDS: dict[str, Handler] = {}


def kw(*names: str) -> Callable[[Handler], Handler]:
    def deco(f: Handler) -> Handler:
        for n in names:
            KEYWORDS[n] = f
        return f

    return deco


def _once(b: _Builder, k: str) -> None:
    if k in b.seen:
        raise RuleReject(k, "given more than once")
    b.seen.add(k)


@kw("msg")
def _msg(b: _Builder, k: str, v: str | None) -> None:
    _once(b, k)
    # bytes that are not UTF-8 stay visible but cannot break the JSON of an alert
    b.r.msg = _unescape(unquote(v, k)).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


@kw("sid")
def _sid(b: _Builder, k: str, v: str | None) -> None:
    _once(b, k)
    if b.r.sid <= 0:
        raise RuleReject(k, f"bad sid '{v}'")


@kw("rev", "gid", "priority")
def _int_meta(b: _Builder, k: str, v: str | None) -> None:
    _once(b, k)
    s = unquote(v, k)
    if not s.isdigit():
        raise RuleReject(k, f"bad {k} '{s}'")
    n = int(s)
    if k == "rev":
        b.r.rev = n
    elif k == "gid":
        b.r.gid = n
    else:
        if not 1 <= n <= 255:
            raise RuleReject(k, "priority must be 1..255")
        b.r.priority = n


@kw("classtype")
def _classtype(b: _Builder, k: str, v: str | None) -> None:
    _once(b, k)
    b.r.classtype = unquote(v, k).strip().lower()


@kw("reference")
def _reference(b: _Builder, k: str, v: str | None) -> None:
    s = unquote(v, k)
    if "," not in s:
        raise RuleReject(k, "expected 'type,id'")
    t, _, ident = s.partition(",")
    b.r.references.append(f"{t.strip()},{ident.strip()}")


@kw("metadata")
def _metadata(b: _Builder, k: str, v: str | None) -> None:
    s = unquote(v, k)
    for part in s.split(","):
        part = part.strip()
        if not part:
            continue
        key, _, val = part.partition(" ")
        b.r.metadata.setdefault(key.strip(), []).append(val.strip())


@kw("target")
def _target(b: _Builder, k: str, v: str | None) -> None:
    s = unquote(v, k).strip()
    if s not in ("src_ip", "dest_ip"):
        raise RuleReject(k, "must be src_ip or dest_ip")
    b.r.target = s


@kw("rawbytes")
def _rawbytes(b: _Builder, k: str, v: str | None) -> None:
    b.content(k)  # Suricata accepts and ignores it after a content


@kw("prefilter")
def _prefilter(b: _Builder, k: str, v: str | None) -> None:
    b.r.prefilter_kw = True  # a hint for Suricata's engine selection; ours needs none


# The Suricata version whose rule language this engine implements (for `requires:`).
SURICATA_COMPAT_VERSION = (7, 0, 10)
_REQ_CMP = re.compile(r"(>=|<=|>|<|=)\s*(\d+(?:\.\d+){0,2})")


@kw("requires")
def _requires(b: _Builder, k: str, v: str | None) -> None:
    """requires: feature X, version >= 7.0.3 [< 8] — a rule for an engine we are not is
    rejected with the reason (Suricata skips such rules; we count them instead)."""
    for part in _split_args(v, k):
        what, _, arg = part.partition(" ")
        arg = arg.strip()
        if what == "feature":
            raise RuleReject(k, f"requires feature '{arg}', which this engine does not provide")
        if what != "version" or not arg:
            raise RuleReject(k, f"cannot read requirement '{part}'")
        for alt in arg.split("|"):
            cmps = _REQ_CMP.findall(alt)
            if not cmps:
                raise RuleReject(k, f"cannot read version requirement '{alt.strip()}'")
            ok = True
            for op, ver in cmps:
                want = tuple(int(x) for x in ver.split(".")) + (0,) * (3 - ver.count(".") - 1)
                have = SURICATA_COMPAT_VERSION
                ok = ok and {">=": have >= want, "<=": have <= want, ">": have > want,
                             "<": have < want, "=": have == want}[op]  # fmt: skip
            if ok:
                break
        else:
            raise RuleReject(k, f"requires Suricata version {arg}")


@kw("noalert")
def _noalert(b: _Builder, k: str, v: str | None) -> None:
    b.r.noalert = True


@kw("content")
def _content(b: _Builder, k: str, v: str | None) -> None:
    if v is None:
        raise RuleReject(k, "needs a value")
    pat, neg = parse_content(v, k)
    c = Content(pat, negated=neg, lpattern=pat.lower())
    b.add(c)
    b.last_content = len(b.items) - 1


@kw("uricontent")
def _uricontent(b: _Builder, k: str, v: str | None) -> None:
    """Deprecated `uricontent:"x"` = `content:"x"; http_uri;`."""
    if b.sticky is not None:
        raise RuleReject(k, "cannot be used after a sticky buffer")
    _content(b, k, v)
    assert b.last_content is not None
    b.items[b.last_content] = (("http.uri", ()), b.items[b.last_content][1])


@kw("nocase")
def _nocase(b: _Builder, k: str, v: str | None) -> None:
    c = b.content(k)
    if c.nocase:
        raise RuleReject(k, "given twice for one content")
    c.nocase = True


@kw("offset", "depth", "distance", "within")
def _pos(b: _Builder, k: str, v: str | None) -> None:
    c = b.content(k)
    if getattr(c, k) is not None:
        raise RuleReject(k, "given twice for one content")
    if c.startswith:
        raise RuleReject(k, "cannot be combined with startswith")
    n = b.num(v, k, allow_neg=k == "distance")
    if (
        k in ("offset", "depth")
        and c.relative
        or k in ("distance", "within")
        and (c.offset is not None or c.depth is not None)
    ):
        raise RuleReject(k, "relative (distance/within) and absolute (offset/depth) "
                         "keywords cannot be combined on one content")  # fmt: skip
    if isinstance(n, int):
        if k == "depth" and n < len(c.pattern):
            raise RuleReject(k, f"depth {n} is smaller than the content length {len(c.pattern)}")
        if k == "within" and n < len(c.pattern):
            raise RuleReject(k, f"within {n} is smaller than the content length {len(c.pattern)}")
    setattr(c, k, n)


@kw("startswith")
def _startswith(b: _Builder, k: str, v: str | None) -> None:
    c = b.content(k)
    if c.offset is not None or c.depth is not None or c.relative:
        raise RuleReject(k, "cannot be combined with offset/depth/distance/within")
    c.startswith = True


@kw("endswith")
def _endswith(b: _Builder, k: str, v: str | None) -> None:
    c = b.content(k)
    c.endswith = True


@kw("fast_pattern")
def _fast_pattern(b: _Builder, k: str, v: str | None) -> None:
    c = b.content(k)
    if b.fast_set:
        raise RuleReject(k, "only one content may be the fast_pattern")
    b.fast_set = True
    if v is None or v.strip() == "only":
        c.fast_pattern = True  # 'only' is deprecated in Suricata and treated as plain
        return
    m = re.fullmatch(r"\s*(\d+)\s*,\s*(\d+)\s*", v)
    if not m:
        raise RuleReject(k, f"expected 'only' or '<offset>,<length>', got '{v}'")
    o, ln = int(m.group(1)), int(m.group(2))
    if ln == 0 or o + ln > len(c.pattern):
        raise RuleReject(k, "offset+length beyond the content")
    c.fast_pattern, c.fp_chop = True, (o, ln)


def _legacy(b: _Builder, k: str, buf: str) -> None:
    if b.sticky is not None and b.sticky != "pkt":
        raise RuleReject(k, "content modifier used after a sticky buffer")
    if b.last_content is None:
        raise RuleReject(k, "needs a preceding content")
    key, item = b.items[b.last_content]
    if key != PKT:
        raise RuleReject(k, "the content already belongs to another buffer")
    b.items[b.last_content] = ((buf, ()), item)


def _sticky(b: _Builder, k: str, v: str | None) -> None:
    if v is not None:
        raise RuleReject(k, "sticky buffer takes no value")
    name = STICKY[k]
    b.sticky = None if name == "pkt" else name
    b.transforms = []
    b.last_content = None  # modifiers after a buffer switch need a new content


def _transform(b: _Builder, k: str, v: str | None) -> None:
    if b.sticky is None:
        raise RuleReject(k, "transforms need a sticky buffer before them")
    if any(key == b.key() for key, _ in b.items):
        raise RuleReject(k, "transforms must come before the buffer's match keywords")
    b.transforms.append(parse_transform(k, v))


_PCRE_FLAGS = set("ismxAERUIPQHDMCSYBOVWZG")
_PCRE_VALUE = re.compile(r"^/(.*)/([ismxAEGRUIPQHDMCSYBOVWZ]*)\s*(?:,(.*))?$", re.S)


# PCRE escapes Python's `re` lacks or reads differently.
_PCRE_ESC = {"z": r"\Z", "Z": r"(?=\n?\Z)", "h": r"[ \t]", "H": r"[^ \t]", "e": r"\x1b",
             "R": r"(?:\r\n|\n|\r)"}  # fmt: skip


def pcre_to_python(pat: str, dollar_endonly: bool = False, ungreedy: bool = False) -> str:
    """Translate the PCRE constructs Python's regex engines spell differently; apply the
    PCRE options E (dollar matches only at the very end) and G (quantifiers lazy by default)."""
    pat = re.sub(r"\(\?<([A-Za-z_][A-Za-z0-9_]*)>", r"(?P<\1>", pat)
    pat = re.sub(r"\(\?'([A-Za-z_][A-Za-z0-9_]*)'", r"(?P<\1>", pat)
    pat = re.sub(r"\\k<([A-Za-z_][A-Za-z0-9_]*)>", r"(?P=\1)", pat)
    pat = re.sub(r"\\x\{([0-9A-Fa-f]{1,2})\}", lambda m: f"\\x{int(m.group(1), 16):02x}", pat)
    out: list[str] = []
    i, n = 0, len(pat)
    in_class = False
    while i < n:
        ch = pat[i]
        if ch == "\\" and i + 1 < n:
            nx = pat[i + 1]
            # inside [...] only the single-character escape can be rewritten
            rep = _PCRE_ESC.get(nx) if not in_class or nx == "e" else None
            out.append(rep if rep is not None else ch + nx)
            i += 2
            continue
        if in_class:
            if ch == "]":
                in_class = False
            out.append(ch)
            i += 1
            continue
        if ch == "[":
            in_class = True
            j = i + 1
            if pat[j : j + 1] == "^":
                j += 1
            if pat[j : j + 1] == "]":  # a leading ] is a literal
                j += 1
            out.append(pat[i:j])
            i = j
            continue
        if ch == "$" and dollar_endonly:
            out.append(r"\Z")
            i += 1
            continue
        if ch == "(" and pat[i + 1 : i + 2] == "?":
            out.append("(?")  # group syntax, not a quantifier
            i += 2
            continue
        q = None
        if ch in "*+?":
            q = ch
        elif ch == "{":
            m = re.match(r"\{\d+(,\d*)?\}", pat[i:])
            if m:
                q = m.group(0)
        if q is not None:
            out.append(q)
            i += len(q)
            if ungreedy:
                nxt = pat[i : i + 1]
                if nxt == "?":
                    i += 1  # lazy under G means greedy
                elif nxt == "+":
                    out.append("+")  # possessive stays possessive
                    i += 1
                else:
                    out.append("?")
            elif pat[i : i + 1] in ("?", "+"):
                out.append(pat[i])  # lazy / possessive marker, not a new quantifier
                i += 1
            continue
        out.append(ch)
        i += 1
    return "".join(out)


@kw("pcre")
def _pcre(b: _Builder, k: str, v: str | None) -> None:
    if v is None:
        raise RuleReject(k, "needs a value")
    s = v.strip()
    neg = s.startswith("!")
    if neg:
        s = s[1:].strip()
    if len(s) < 2 or s[0] != '"' or s[-1] != '"':
        raise RuleReject(k, 'value must be a quoted "/regex/flags"')
    s = s[1:-1]
    # "/regex/flags" optionally followed by capture names (", flow:x, pkt:y, alert:z")
    m = _PCRE_VALUE.match(s)
    if not m:
        if s.startswith("/") and s.rfind("/") > 0:
            bad = set(s[s.rfind("/") + 1 :]) - _PCRE_FLAGS
            if bad:
                raise RuleReject(k, f"unknown pcre flag(s) {''.join(sorted(bad))}")
        raise RuleReject(k, "expected /regex/flags")
    body, flags = m.group(1), m.group(2)
    if m.group(3):
        for name in m.group(3).split(","):
            if not re.fullmatch(r"\s*(flow|pkt|alert):\S+\s*", name):
                raise RuleReject(k, f"bad capture name '{name.strip()}'")
    body = body.replace("\\;", ";").replace('\\"', '"')
    reflags = 0
    if "i" in flags:
        reflags |= pcre_engine.IGNORECASE
    if "s" in flags:
        reflags |= pcre_engine.DOTALL
    if "m" in flags:
        reflags |= pcre_engine.MULTILINE
    if "x" in flags:
        reflags |= pcre_engine.VERBOSE
    try:
        py = pcre_to_python(body, dollar_endonly="E" in flags and "m" not in flags,
                            ungreedy="G" in flags)  # fmt: skip
        rx = pcre_engine.compile(py.encode("utf-8", "surrogateescape"), reflags)
    except (pcre_engine.error, UnicodeEncodeError, ValueError) as e:
        raise RuleReject(k, f"cannot compile regex: {e}") from None
    key = b.key()
    bufs = [f for f in flags if f in _PCRE_BUF]
    if len(bufs) > 1:
        raise RuleReject(k, "more than one buffer flag")
    if bufs:
        want = (_PCRE_BUF[bufs[0]], ())
        if b.sticky is not None and key != want:
            # Suricata: a pcre buffer flag must agree with the sticky buffer in effect
            raise RuleReject(k, f"buffer flag {bufs[0]} conflicts with sticky buffer {b.sticky}")
        key = want
    b.add(Pcre(rx, body, negated=neg, relative="R" in flags, anchored="A" in flags), key)


def _split_args(v: str | None, k: str) -> list[str]:
    s = unquote(v, k)
    return [a.strip() for a in s.split(",")]


def _byte_common(b: _Builder, k: str, opts: ByteOpts, tok: str, rest: list[str]) -> bool:
    """Shared byte_* options; True if `tok` was one of them (may consume from `rest`)."""
    t = tok.lower()
    if t == "relative":
        opts.relative = True
    elif t in ("big", "little"):
        opts.little = t == "little"
    elif t == "dce":
        opts.little = True  # DCE/RPC data is little endian unless the header says otherwise
    elif t == "string":
        opts.string_base = 10
    elif t in ("hex", "dec", "oct") and opts.string_base:
        opts.string_base = {"hex": 16, "dec": 10, "oct": 8}[t]
    elif t.startswith("bitmask"):
        val = t[7:].strip() or (rest.pop(0) if rest else "")
        opts.bitmask = parse_int(val, "bitmask")
    else:
        return False
    return True


def _nbytes(k: str, s: str, string: bool) -> int:
    n = parse_int(s, "byte count")
    if not 1 <= n <= (23 if string else 8):
        raise RuleReject(k, f"number of bytes {n} out of range")
    return n


def _check_string_nbytes(
    k: str, o: ByteOpts, raw: str, b: _Builder | None = None, allow_zero: bool = False
) -> None:
    raw = raw.strip()
    if b is not None and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", raw):
        if raw not in b.names:
            raise RuleReject(k, f"unknown variable '{raw}' (no byte_extract/byte_math sets it)")
        o.nbytes_var = raw  # checked against the limits when the rule runs
        return
    if allow_zero and raw == "0":
        o.nbytes = 0
        return
    o.nbytes = _nbytes(k, raw, bool(o.string_base))


@kw("byte_test")
def _byte_test(b: _Builder, k: str, v: str | None) -> None:
    a = _split_args(v, k)
    if len(a) < 4:
        raise RuleReject(k, "expected <bytes>,<op>,<value>,<offset>[,options]")
    op = a[1].replace(" ", "")
    neg = op.startswith("!")
    if neg:
        op = op[1:] or "="
    if op not in ("<", ">", "=", "<=", ">=", "&", "^"):
        raise RuleReject(k, f"bad operator '{a[1]}'")
    o = ByteOpts(0, b.num(a[3], k, allow_neg=True))
    rest = a[4:]
    while rest:
        t = rest.pop(0)
        if not _byte_common(b, k, o, t, rest):
            raise RuleReject(k, f"unknown option '{t}'")
    _check_string_nbytes(k, o, a[0], b)
    b.add(ByteTest(o, op, neg, b.num(a[2], k)))


@kw("byte_jump")
def _byte_jump(b: _Builder, k: str, v: str | None) -> None:
    a = _split_args(v, k)
    if len(a) < 2:
        raise RuleReject(k, "expected <bytes>,<offset>[,options]")
    o = ByteOpts(0, b.num(a[1], k, allow_neg=True))
    j = ByteJump(o)
    rest = a[2:]
    while rest:
        t = rest.pop(0)
        tl = t.lower()
        if _byte_common(b, k, o, t, rest):
            continue
        if tl.startswith("multiplier"):
            j.multiplier = int(b.num(tl[10:].strip() or None, k))  # type: ignore[arg-type]
        elif tl.startswith("post_offset"):
            n = b.num(tl[11:].strip() or None, k, allow_neg=True)
            if not isinstance(n, int):
                raise RuleReject(k, "post_offset must be a number")
            j.post_offset = n
        elif tl == "align":
            j.align = True
        elif tl == "from_beginning":
            j.from_beginning = True
        elif tl == "from_end":
            j.from_end = True
        else:
            raise RuleReject(k, f"unknown option '{t}'")
    # `byte_jump:0,0,from_end,post_offset -8` reads nothing and jumps from the end
    _check_string_nbytes(k, o, a[0], b, allow_zero=j.from_end)
    b.add(j)


@kw("byte_extract")
def _byte_extract(b: _Builder, k: str, v: str | None) -> None:
    a = _split_args(v, k)
    if len(a) < 3:
        raise RuleReject(k, "expected <bytes>,<offset>,<name>[,options]")
    name = a[2]
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise RuleReject(k, f"bad variable name '{name}'")
    off = parse_int(a[1], "offset") if re.fullmatch(r"-?(0x)?[0-9a-fA-F]+", a[1]) else None
    if off is None:
        raise RuleReject(k, f"bad offset '{a[1]}'")
    o = ByteOpts(0, off)
    e = ByteExtract(o, name)
    rest = a[3:]
    while rest:
        t = rest.pop(0)
        tl = t.lower()
        if _byte_common(b, k, o, t, rest):
            continue
        if tl.startswith("multiplier"):
            e.multiplier = parse_int(tl[10:].strip(), "multiplier")
        elif tl.startswith("align"):
            e.align = parse_int(tl[5:].strip(), "align")
            if e.align not in (2, 4):
                raise RuleReject(k, "align must be 2 or 4")
        else:
            raise RuleReject(k, f"unknown option '{t}'")
    _check_string_nbytes(k, o, a[0])
    b.names.add(name)
    b.add(e)


@kw("byte_math")
def _byte_math(b: _Builder, k: str, v: str | None) -> None:
    a = _split_args(v, k)
    kv: dict[str, str] = {}
    flags: list[str] = []
    for t in a:
        key, _, val = t.partition(" ")
        if val.strip():
            kv[key.strip().lower()] = val.strip()
        else:
            flags.append(key.strip())
    for need in ("bytes", "offset", "oper", "rvalue", "result"):
        if need not in kv:
            raise RuleReject(k, f"missing '{need}'")
    oper = kv["oper"]
    if oper not in ("+", "-", "*", "/", "<<", ">>"):
        raise RuleReject(k, f"bad oper '{oper}'")
    o = ByteOpts(0, b.num(kv["offset"], k, allow_neg=True))
    for f in flags:
        if not _byte_common(b, k, o, f, []):
            raise RuleReject(k, f"unknown option '{f}'")
    if "endian" in kv:
        if kv["endian"] not in ("big", "little", "dce"):
            raise RuleReject(k, f"bad endian '{kv['endian']}'")
        o.little = kv["endian"] != "big"
    if "string" in kv:
        if kv["string"] not in ("hex", "dec", "oct"):
            raise RuleReject(k, f"bad string type '{kv['string']}'")
        o.string_base = {"hex": 16, "dec": 10, "oct": 8}[kv["string"]]
    if "bitmask" in kv:
        o.bitmask = parse_int(kv["bitmask"], "bitmask")
    _check_string_nbytes(k, o, kv["bytes"], b)
    name = kv["result"]
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise RuleReject(k, f"bad result name '{name}'")
    rv = b.num(kv["rvalue"], k)
    b.names.add(name)
    b.add(ByteMath(o, oper, rv, name))


@kw("isdataat")
def _isdataat(b: _Builder, k: str, v: str | None) -> None:
    a = _split_args(v, k)
    s = a[0]
    neg = s.startswith("!")
    if neg:
        s = s[1:].strip()
    rel = False
    for t in a[1:]:
        if t == "relative":
            rel = True
        elif t != "rawbytes":
            raise RuleReject(k, f"unknown option '{t}'")
    b.add(IsDataAt(b.num(s, k), neg, rel))


@kw("base64_decode")
def _base64_decode(b: _Builder, k: str, v: str | None) -> None:
    d = Base64Decode()
    if v:
        for t in _split_args(v, k):
            key, _, val = t.partition(" ")
            if key == "relative" and not val:
                d.relative = True
            elif key in ("bytes", "offset") and val.strip().isdigit():
                setattr(d, "nbytes" if key == "bytes" else "offset", int(val))
            else:
                raise RuleReject(k, f"unknown option '{t}'")
    if d.nbytes > 65535:
        raise RuleReject(k, "bytes is limited to 64 KiB")
    b.add(d)


@kw("base64_data")
def _base64_data(b: _Builder, k: str, v: str | None) -> None:
    if v is not None:
        raise RuleReject(k, "takes no value")
    b.sticky = "base64_data"
    b.transforms = []
    b.last_content = None


@kw("bsize")
def _bsize(b: _Builder, k: str, v: str | None) -> None:
    if b.sticky is None:
        raise RuleReject(k, "needs a sticky buffer")
    b.add(BufSize(parse_uint(unquote(v, k), 0xFFFFFFFF, k)))


@kw("urilen")
def _urilen(b: _Builder, k: str, v: str | None) -> None:
    a = _split_args(v, k)
    buf = "http.uri"
    if len(a) > 1:
        if a[1] not in ("norm", "raw"):
            raise RuleReject(k, f"expected norm or raw, got '{a[1]}'")
        buf = "http.uri" if a[1] == "norm" else "http.uri.raw"
    b.add(BufSize(parse_uint(a[0], 0xFFFF, k)), (buf, ()))


@kw("dataset")
def _dataset(b: _Builder, k: str, v: str | None) -> None:
    if b.sticky is None:
        raise RuleReject(k, "needs a sticky buffer")
    a = _split_args(v, k)
    if len(a) < 2 or a[0] not in ("set", "isset", "isnotset", "unset"):
        raise RuleReject(k, "expected <set|isset|isnotset|unset>,<name>[,options]")
    op, name = a[0], a[1]
    opts: dict[str, str] = {}
    for t in a[2:]:
        key, _, val = t.partition(" ")
        opts[key.strip()] = val.strip()
    for key in opts:
        if key not in ("type", "load", "state", "save", "memcap", "hashsize", "format", "context_key", "value_key", "array_key", "enrichment_key"):  # fmt: skip
            raise RuleReject(k, f"unknown dataset option '{key}'")
    dtype = opts.get("type")
    if dtype is not None and dtype not in ("string", "md5", "sha256", "ipv4", "ipv6", "ip"):
        raise RuleReject(k, f"unknown dataset type '{dtype}'")
    if b.ds is None:
        raise RuleReject(k, "datasets are not available here")
    b.ds(name, dtype, opts.get("load") or opts.get("state"), "state" in opts)
    b.add(DatasetOp(op, name))


# -- header-level options (checks on the packet) -------------------------------------------------
@kw("flow")
def _flow(b: _Builder, k: str, v: str | None) -> None:
    _once(b, k)
    r = b.r
    r.has_flow_kw = True
    for t in _split_args(v, k):
        t = t.lower()
        if t in ("to_server", "from_client"):
            d = "to_server"
        elif t in ("to_client", "from_server"):
            d = "to_client"
        elif t == "established":
            if r.flow_established is False:
                raise RuleReject(k, "established and not_established together")
            r.flow_established = True
            continue
        elif t == "not_established":
            if r.flow_established:
                raise RuleReject(k, "established and not_established together")
            r.flow_established = False
            continue
        elif t == "stateless":
            continue
        elif t in ("only_stream", "no_stream"):
            if r.stream_mode and r.stream_mode != t:
                raise RuleReject(k, "only_stream and no_stream together")
            r.stream_mode = t
            continue
        elif t in ("only_frag", "no_frag"):
            r.frag_mode = t
            continue
        else:
            raise RuleReject(k, f"unknown flow option '{t}'")
        if r.flow_dir and r.flow_dir != d:
            raise RuleReject(k, "to_server and to_client together")
        r.flow_dir = d


def _check(b: _Builder, f: Callable[[Any], bool]) -> None:
    b.r.checks.append(f)


@kw("flags")
def _flags(b: _Builder, k: str, v: str | None) -> None:
    _once(b, k)
    _check(b, checks.flags(unquote(v, k)))


@kw("dsize", "ttl", "itype", "icode", "icmp_id", "icmp_seq", "id", "ip_proto", "stream_size",
    "tcp.mss", "tcp.window", "tos", "ack", "seq", "window")  # fmt: skip
def _numeric(b: _Builder, k: str, v: str | None) -> None:
    f = checks.numeric(k, unquote(v, k))
    if k == "dsize" and b.r.stream_mode is None:
        b.r.stream_mode = "no_stream"  # dsize only applies to packets
    if k == "itype":
        u = parse_uint(unquote(v, k), 255, k)
        if u.mode == "=":
            b.r.itype_eq = u.a
    _check(b, f)


@kw("decode-event", "stream-event", "app-layer-event")
def _event(b: _Builder, k: str, v: str | None) -> None:
    """decode-event:ipv4.trunc_pkt, stream-event:pkt_retransmission,
    app-layer-event:http.request_field_too_long — the packet raised that event, named as in
    Suricata's decoder-events / stream-events / app-layer-events rules."""
    name = unquote(v, k).strip().lower()
    pattern = (
        r"[a-z0-9_\-]+(\.[a-z0-9_\-]+)*"
        if k == "stream-event"
        else r"[a-z0-9_\-]+(\.[a-z0-9_\-]+)+"
    )
    if not re.fullmatch(pattern, name):
        raise RuleReject(k, f"bad event name '{name}'")
    if k == "decode-event":
        full = "decoder." + name
        _check(b, lambda env: full in env.p.anomalies or name in env.p.anomalies)
    else:
        full = "stream." + name if k == "stream-event" else name
        _check(b, lambda env: full in env.ctx.events or full in env.p.anomalies)


@kw("fragbits", "fragoffset", "ipopts")
def _ipv4_bits(b: _Builder, k: str, v: str | None) -> None:
    _check(b, getattr(checks, k)(unquote(v, k)))


@kw("flow.pkts", "flow.bytes", "flow.age", "flow.pkts_toserver", "flow.pkts_toclient",
    "flow.bytes_toserver", "flow.bytes_toclient")  # fmt: skip
def _flow_counter(b: _Builder, k: str, v: str | None) -> None:
    _check(b, checks.flow_counter(k, unquote(v, k)))


@kw("sameip")
def _sameip(b: _Builder, k: str, v: str | None) -> None:
    _check(b, checks.sameip)


@kw("app-layer-protocol")
def _alp(b: _Builder, k: str, v: str | None) -> None:
    a = _split_args(v, k)
    name = a[0]
    neg = name.startswith("!")
    if neg:
        name = name[1:].strip()
    if name not in APP_PROTOS and name not in ("failed", "unknown"):
        raise RuleReject(k, f"unknown protocol '{name}'")
    if len(a) > 1 and a[1] not in ("final", "original", "either", "to_server", "to_client", "direction"):  # fmt: skip
        raise RuleReject(k, f"unknown mode '{a[1]}'")
    _check(b, checks.app_layer_protocol(name, neg))


@kw("tls.version", "ssl_version")
def _tls_version(b: _Builder, k: str, v: str | None) -> None:
    _check(b, checks.tls_version(k, unquote(v, k)))


@kw("flowbits")
def _flowbits(b: _Builder, k: str, v: str | None) -> None:
    a = _split_args(v, k)
    op = a[0].lower()
    if op == "noalert":
        if len(a) > 1:
            raise RuleReject(k, "noalert takes no name")
        b.r.noalert = True
        return
    if op not in ("set", "isset", "isnotset", "unset", "toggle"):
        raise RuleReject(k, f"unknown flowbits command '{a[0]}'")
    if len(a) != 2 or not a[1]:
        raise RuleReject(k, f"{op} needs one name (or names joined with | or &)")
    expr = a[1]
    if "|" in expr and "&" in expr:
        raise RuleReject(k, "cannot mix | and & in one flowbits")
    join = "|" if "|" in expr else "&"
    names = [x.strip() for x in re.split(r"[|&]", expr)]
    if any(not re.fullmatch(r"[\w.\-]+", x) for x in names):
        raise RuleReject(k, f"bad flowbit name in '{expr}'")
    if op in ("isset", "isnotset"):
        b.r.flowbit_tests.append((op, join, names))
        b.r.flow_matches.append(("fb", op, join, names))
    else:
        if join == "|" and len(names) > 1:
            raise RuleReject(k, f"'|' is only valid with isset/isnotset, not {op}")
        b.r.flowbit_actions.append((op, names))


XBITS_EXPIRE_DEFAULT = 30  # seconds, as Suricata


@kw("hostbits", "xbits")
def _xbits(b: _Builder, k: str, v: str | None) -> None:
    """hostbits:<op>,<name>[,<src|dst|both>[,<expire>]] and
    xbits:<op>,<name>,track <ip_src|ip_dst|ip_pair>[,expire <seconds>]: bits kept per host or
    per address pair, across flows, that expire."""
    a = _split_args(v, k)
    if len(a) < 2 or a[0] not in ("set", "unset", "isset", "isnotset", "toggle"):
        raise RuleReject(k, "expected <set|unset|isset|isnotset|toggle>,<name>[,...]")
    op, name = a[0], a[1]
    if not re.fullmatch(r"[\w.\-]+", name):
        raise RuleReject(k, f"bad name '{name}'")
    expire = XBITS_EXPIRE_DEFAULT
    if k == "hostbits":
        track = {"src": "ip_src", "dst": "ip_dst", "both": "ip_both"}.get(
            a[2] if len(a) > 2 else "src"
        )
        if track is None:
            raise RuleReject(k, f"direction must be src, dst or both, not '{a[2]}'")
        if len(a) > 3:
            if not a[3].isdigit():
                raise RuleReject(k, f"bad expire '{a[3]}'")
            expire = int(a[3])
        if len(a) > 4:
            raise RuleReject(k, "too many options")
    else:
        track = None
        for t in a[2:]:
            key, _, val = t.partition(" ")
            if key == "track" and val.strip() in ("ip_src", "ip_dst", "ip_pair"):
                track = val.strip()
            elif key == "expire" and val.strip().isdigit():
                expire = int(val)
            else:
                raise RuleReject(
                    k, f"unsupported option '{t}' (track ip_src|ip_dst|ip_pair, expire N)"
                )
        if track is None:
            raise RuleReject(k, "needs 'track ip_src|ip_dst|ip_pair'")
    if op in ("isset", "isnotset"):
        b.r.xbit_tests.append((op, name, track, expire))
    else:
        b.r.xbit_actions.append((op, name, track, expire))


@kw("flowint")
def _flowint(b: _Builder, k: str, v: str | None) -> None:
    a = _split_args(v, k)
    if len(a) < 2:
        raise RuleReject(k, "expected <name>,<modifier>[,<value>]")
    name, mod = a[0], a[1]
    if mod in ("isset", "notset", "isnotset"):
        m = "notset" if mod != "isset" else "isset"
        b.r.flowint_tests.append((m, name, None))
        b.r.flow_matches.append(("fi", m, name, None))
        return
    if len(a) != 3:
        raise RuleReject(k, f"modifier '{mod}' needs a value")
    val_s = a[2]
    val: IntOrVar = val_s if re.fullmatch(r"[A-Za-z_][\w.\-]*", val_s) else b.num(val_s, k)
    if mod in ("=", "+", "-"):
        b.r.flowint_actions.append((mod, name, val))
    elif mod in ("==", "!=", "<", "<=", ">", ">="):
        b.r.flowint_tests.append((mod, name, val))
    else:
        raise RuleReject(k, f"unknown modifier '{mod}'")
    b.r.flow_matches.append(("fi", mod, name, val))


def _threshold_args(k: str, v: str | None, need_type: bool) -> Threshold:
    kv: dict[str, str] = {}
    for t in _split_args(v, k):
        key, _, val = t.partition(" ")
        kv[key.strip()] = val.strip()
    kind = kv.pop("type", None)
    if need_type:
        if kind not in ("limit", "threshold", "both"):
            raise RuleReject(k, f"type must be limit, threshold or both (got '{kind}')")
    else:
        if kind is not None:
            raise RuleReject(k, "detection_filter takes no type")
        kind = "detection_filter"
    track = kv.pop("track", None)
    if track not in ("by_src", "by_dst", "by_rule", "by_both", "by_flow"):
        raise RuleReject(k, f"track must be by_src, by_dst, by_rule, by_both or by_flow (got '{track}')")  # fmt: skip
    try:
        count = int(kv.pop("count"))
        seconds = int(kv.pop("seconds"))
    except (KeyError, ValueError):
        raise RuleReject(k, "count and seconds must be numbers") from None
    if kv:
        raise RuleReject(k, f"unknown option(s) {', '.join(kv)}")
    if count < 1 or seconds < 1 and kind != "detection_filter":
        raise RuleReject(k, "count and seconds must be positive")
    return Threshold(kind, track, count, seconds)


@kw("threshold", "detection_filter")
def _threshold(b: _Builder, k: str, v: str | None) -> None:
    if b.r.threshold is not None:
        raise RuleReject(k, "only one threshold or detection_filter per rule")
    b.r.threshold = _threshold_args(k, v, k == "threshold")
