"""Per-packet header checks (flags, dsize, ttl, itype ...): each returns `env -> bool`.

`env` is detect.Env: it has `.p` (the Packet), `.payload` (Suricata's payload view), `.ctx`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

from .items import UInt, parse_uint

Check = Callable[[Any], bool]

_FLAG_BITS: Final = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10, "U": 0x20, "C": 0x80,
              "E": 0x40, "1": 0x80, "2": 0x40}  # fmt: skip
_ECHO_V4: Final = {0, 8, 13, 14, 15, 16, 17, 18}
_ECHO_V6: Final = {128, 129}
_PROTO_NAMES: Final = {"ip": 0, "icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "ipv6": 41, "gre": 47,
                "esp": 50, "ah": 51, "icmpv6": 58, "ipv6-icmp": 58, "sctp": 132}  # fmt: skip


def flags(value: str) -> Check:
    """flags:[modifier]<flags>[,<ignore mask>] with Suricata's semantics."""
    spec, _, mask_s = value.partition(",")
    spec = spec.strip()
    mod = ""
    bits = 0
    zero = False
    for ch in spec:
        if ch in "+*!":
            if mod:
                raise ValueError(f"more than one modifier in '{value}'")
            mod = ch
        elif ch == "0":
            zero = True
        elif ch.upper() in _FLAG_BITS:
            bits |= _FLAG_BITS[ch.upper()]
        else:
            raise ValueError(f"unknown flag '{ch}' in '{value}'")
    if zero and bits:
        raise ValueError("flag 0 (no flags) cannot be combined with other flags")
    if not zero and not bits:
        raise ValueError(f"no flags in '{value}'")
    keep = 0xFF
    for ch in mask_s.strip():
        if ch.upper() not in _FLAG_BITS:
            raise ValueError(f"unknown flag '{ch}' in mask '{mask_s}'")
        keep &= ~_FLAG_BITS[ch.upper()] & 0xFF

    def check(env: Any) -> bool:
        p = env.p
        if p.proto != 6:
            return False
        f = p.tcp_flags & keep
        if mod == "*":
            return f & bits != 0
        if mod == "+":
            return f & bits == bits
        if mod == "!":
            return f & bits != bits
        return f == bits

    return check


def numeric(kw: str, value: str) -> Check:
    if kw == "stream_size":
        return _stream_size(value)
    if kw == "ip_proto":
        v = value.strip()
        m = re.fullmatch(r"([!<>]?)\s*([\w\-]+)", v)
        if not m:
            raise ValueError(f"bad ip_proto '{value}'")
        op, name = m.groups()
        num = _PROTO_NAMES.get(name.lower())
        if num is None:
            if not name.isdigit() or int(name) > 255:
                raise ValueError(f"unknown protocol '{name}'")
            num = int(name)
        t = UInt({"": "=", "!": "!=", "<": "<", ">": ">"}[op], num)
        return lambda env: env.p.ip_version != 0 and t(env.p.proto)
    maxv = {"dsize": 65535, "ttl": 255, "itype": 255, "icode": 255, "icmp_id": 65535,
            "icmp_seq": 65535, "id": 65535, "tcp.mss": 65535, "tcp.window": 65535,
            "window": 65535, "tos": 255, "ack": 0xFFFFFFFF, "seq": 0xFFFFFFFF}[kw]  # fmt: skip
    if kw in ("window", "tos") and value.strip().startswith("!"):
        t = parse_uint("!=" + value.strip()[1:], maxv, kw)
    else:
        t = parse_uint(value, maxv, kw)
    if kw == "dsize":
        return lambda env: t(len(env.payload))
    if kw == "ttl":
        return lambda env: env.p.ip_version != 0 and t(env.p.ttl)
    if kw == "itype":
        return lambda env: env.p.icmp_type >= 0 and env.p.proto in (1, 58) and t(env.p.icmp_type)
    if kw == "icode":
        return lambda env: env.p.icmp_code >= 0 and env.p.proto in (1, 58) and t(env.p.icmp_code)
    if kw in ("icmp_id", "icmp_seq"):
        o = 0 if kw == "icmp_id" else 2

        def icmp(env: Any) -> bool:
            p = env.p
            echo = _ECHO_V4 if p.proto == 1 else _ECHO_V6 if p.proto == 58 else None
            if echo is None or p.icmp_type not in echo or len(p.payload) < 4:
                return False
            return t(int.from_bytes(bytes(p.payload[o : o + 2]), "big"))

        return icmp
    if kw == "id":
        return lambda env: env.p.ip_version == 4 and t(env.p.ip_id)
    if kw in ("window", "tcp.window"):
        return lambda env: env.p.proto == 6 and t(env.p.tcp_win)
    if kw == "ack":
        return lambda env: env.p.proto == 6 and t(env.p.tcp_ack)
    if kw == "seq":
        return lambda env: env.p.proto == 6 and t(env.p.tcp_seq)
    if kw == "tos":
        return lambda env: env.p.ip_version == 4 and len(env.p.ip_hdr) > 1 and t(env.p.ip_hdr[1])
    if kw == "tcp.mss":

        def mss(env: Any) -> bool:
            o = env.p.tcp_options.get(2)
            return (
                env.p.proto == 6
                and o is not None
                and len(o) >= 2
                and t(int.from_bytes(o[:2], "big"))
            )

        return mss
    raise ValueError(f"unsupported keyword {kw}")


def _stream_size(value: str) -> Check:
    a = [x.strip() for x in value.split(",")]
    if len(a) != 3 or a[0] not in ("server", "client", "both", "either"):
        raise ValueError("expected <server|client|both|either>,<modifier>,<number>")
    if a[1] not in (">", "<", "=", "!=", ">=", "<="):
        raise ValueError(f"bad modifier '{a[1]}'")
    if not a[2].isdigit():
        raise ValueError(f"bad number '{a[2]}'")
    t = UInt(a[1], int(a[2]))
    side = a[0]

    def check(env: Any) -> bool:
        c = env.ctx
        if env.p.proto != 6:
            return False
        srv, cli = c.stream_bytes_toclient, c.stream_bytes_toserver
        if side == "server":
            return t(srv)
        if side == "client":
            return t(cli)
        if side == "both":
            return t(srv) and t(cli)
        return t(srv) or t(cli)

    return check


def sameip(env: Any) -> bool:
    p = env.p
    return p.ip_version != 0 and p.src_bytes == p.dst_bytes and bool(p.src_bytes)


def app_layer_protocol(name: str, neg: bool) -> Check:
    def check(env: Any) -> bool:
        ap = env.ctx.app_proto
        if name == "unknown":
            hit = ap is None
        elif name in ("http", "http1"):
            hit = ap in ("http", "http1")
        else:
            hit = ap == name
        if neg:
            return ap is not None and not hit
        return hit

    return check


_TLS_NAMES: Final = {"1.0": 0x0301, "1.1": 0x0302, "1.2": 0x0303, "1.3": 0x0304, "3.0": 0x0300,
              "tls1.0": 0x0301, "tls1.1": 0x0302, "tls1.2": 0x0303, "tls1.3": 0x0304,
              "sslv3": 0x0300, "sslv2": 0x0200}  # fmt: skip


def _tls_of(v: Any) -> int | None:
    """The pipeline's tls.version buffer: 2 raw bytes, or text like '1.2' / 'TLS 1.2' / '0x0303'."""
    if isinstance(v, (bytes, bytearray, memoryview)):
        b = bytes(v)
        if len(b) == 2:
            return int.from_bytes(b, "big")
        s = b.decode("latin-1").strip().lower().replace(" ", "").replace("v", "")
        s = s.removeprefix("tls")
        if s.startswith("0x"):
            try:
                return int(s, 16)
            except ValueError:
                return None
        return _TLS_NAMES.get(s) or _TLS_NAMES.get("tls" + s)
    if isinstance(v, int):
        return v
    return None


def tls_version(kw: str, value: str) -> Check:
    wants: set[int] = set()
    neg = False
    for part in value.split(","):
        s = part.strip().lower()
        if s.startswith("!"):
            neg, s = True, s[1:]
        if s.startswith("0x"):
            wants.add(int(s, 16))
        elif s in _TLS_NAMES:
            wants.add(_TLS_NAMES[s])
        else:
            raise ValueError(f"unknown TLS version '{part.strip()}'")

    def check(env: Any) -> bool:
        raw = env.ctx.buffers.get("tls.version")
        if raw is None:
            return False
        ver = _tls_of(raw)
        return ver is not None and ((ver in wants) != neg)

    return check


_FRAG_BITS: Final = {"M": 0x20, "D": 0x40, "R": 0x80}  # the bits of the IPv4 flags byte


def fragbits(value: str) -> Check:
    """fragbits:[!+*]<MDR> with Suricata's semantics (`+` needs another bit set too)."""
    v = value.strip()
    mod = v[0] if v and v[0] in "!+*" else ""
    bits = 0
    for ch in v[len(mod) :].strip():
        if ch.upper() not in _FRAG_BITS:
            raise ValueError(f"unknown fragment bit '{ch}' in '{value}'")
        bits |= _FRAG_BITS[ch.upper()]
    if not bits:
        raise ValueError(f"no fragment bits in '{value}'")

    def check(env: Any) -> bool:
        h = env.p.ip_hdr
        if env.p.ip_version != 4 or len(h) < 8:
            return False
        f = h[6] & 0xE0
        if mod == "*":
            return f & bits != 0
        if mod == "+":
            return f & bits == bits and f - bits > 0
        if mod == "!":
            return f & bits != bits
        return f == bits

    return check


def fragoffset(value: str) -> Check:
    """fragoffset:[!<>]N against the IPv4 header's 13-bit fragment offset field."""
    m = re.fullmatch(r"\s*([!<>]?)\s*(\d+)\s*", value)
    if not m or int(m.group(2)) > 0x1FFF:
        raise ValueError(f"bad fragoffset '{value}'")
    t = UInt({"": "=", "!": "!=", "<": "<", ">": ">"}[m.group(1)], int(m.group(2)))

    def check(env: Any) -> bool:
        h = env.p.ip_hdr
        if env.p.ip_version != 4 or len(h) < 8:
            return False
        return t(int.from_bytes(h[6:8], "big") & 0x1FFF)

    return check


_IPOPTS: Final = {"eol": 0, "nop": 1, "rr": 7, "ts": 68, "sec": 130, "lsrr": 131, "esec": 133,
           "satid": 136, "ssrr": 137}  # fmt: skip


def ipopts(value: str) -> Check:
    name = value.strip().lower()
    if name != "any" and name not in _IPOPTS:
        raise ValueError(f"unknown IP option '{value}'")
    want = _IPOPTS.get(name)

    def check(env: Any) -> bool:
        h = env.p.ip_hdr
        if env.p.ip_version != 4 or len(h) <= 20:
            return False
        opts = h[20 : (h[0] & 0x0F) * 4]
        i = 0
        seen = set()
        while i < len(opts):
            t = opts[i]
            seen.add(t)
            if t in (0, 1):
                i += 1
                continue
            if i + 1 >= len(opts) or opts[i + 1] < 2:
                break
            i += opts[i + 1]
        return bool(seen) if want is None else want in seen

    return check


def flow_counter(kw: str, value: str) -> Check:
    """flow.pkts / flow.bytes:<toserver|toclient|either|both>,<integer>; flow.age:<integer>;
    flow.pkts_toserver & co. take just the integer."""
    if kw == "flow.age":
        t = parse_uint(value, 0xFFFFFFFF, kw)

        def age(env: Any) -> bool:
            c = env.ctx
            return c.flow_start is not None and t(int(env.p.ts - c.flow_start))

        return age
    kind = "pkts" if kw.startswith("flow.pkts") else "bytes"
    if kw.endswith("_toserver") or kw.endswith("_toclient"):
        side, num = kw.rsplit("_", 1)[1], value
    else:
        side, _, num = value.partition(",")
        side = side.strip()
        if side not in ("toserver", "toclient", "either", "both"):
            raise ValueError(f"direction must be toserver, toclient, either or both, not '{side}'")
    t = parse_uint(num, (1 << 64) - 1, kw)
    ts_attr, tc_attr = f"flow_{kind}_toserver", f"flow_{kind}_toclient"

    def check(env: Any) -> bool:
        c = env.ctx
        a, b = getattr(c, ts_attr), getattr(c, tc_attr)
        if a is None or b is None:
            return False
        if side == "toserver":
            return t(a)
        if side == "toclient":
            return t(b)
        if side == "both":
            return t(a) and t(b)
        return t(a) or t(b)

    return check
