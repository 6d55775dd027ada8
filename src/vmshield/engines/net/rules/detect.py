"""Verifying one rule against one packet's inspection context (after the prefilter)."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Final

from ..packet import Packet
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
    IsDataAt,
    Pcre,
)
from .model import INSPECTION_RECURSION_LIMIT, InspectContext
from .parser import BufKey, Rule
from .transforms import apply_all

_B64_RUN: Final = re.compile(rb"[A-Za-z0-9+/]*")
_PER_LINE: Final = {"http.request_header", "http.response_header"}

# Seconds one pcre search may take before it counts as no match.
PCRE_TIMEOUT: Final = 0.05


def rule_payload(p: Packet) -> bytes:
    """The payload rules inspect: the decoder's ICMP payload starts at ICMP byte 4, Suricata's
    after the 8-byte header."""
    return p.payload[4:] if p.proto == 1 or p.proto == 58 else p.payload


class Env:
    """Per-packet cache shared by every rule evaluated on it."""

    __slots__ = ("ctx", "p", "payload", "src_int", "dst_int", "bufcache", "datasets", "_lower",
                 "pcre_timeouts")  # fmt: skip

    def __init__(self, ctx: InspectContext, datasets: Any = None) -> None:
        self.ctx = ctx
        p = self.p = ctx.packet
        self.payload: bytes = rule_payload(p)
        self.src_int = int.from_bytes(p.src_bytes, "big") if p.src_bytes else -1
        self.dst_int = int.from_bytes(p.dst_bytes, "big") if p.dst_bytes else -1
        self.bufcache: dict[Any, list[bytes] | None] = {}
        self.datasets = datasets
        self._lower: dict[int, bytes] = {}
        self.pcre_timeouts = 0

    def buffer(self, key: BufKey, rule: Rule) -> list[bytes] | None:
        """The data a rule list inspects, as a list (multi-buffers have several)."""
        name, ts = key
        if name == "pkt":
            c = self.ctx
            use_stream = c.stream is not None and rule.stream_mode != "no_stream"
            if rule.stream_mode == "only_stream" and c.stream is None:
                return None
            ck: Any = ("stream" if use_stream else "pkt", ts)
            if ck in self.bufcache:
                return self.bufcache[ck]
            data = bytes(c.stream) if use_stream and c.stream is not None else self.payload
            out: list[bytes] | None = [apply_all(ts, data) if ts else data]
            self.bufcache[ck] = out
            return out
        if key in self.bufcache:
            return self.bufcache[key]
        raw = self._raw(name)
        if raw is None:
            out = None
        else:
            vals = [bytes(v) for v in raw] if isinstance(raw, (list, tuple)) else [bytes(raw)]
            if name in _PER_LINE and len(vals) == 1:
                # Suricata's http.request_header / response_header: one buffer per header
                # line ("Name: value"); a header block given whole is split here
                vals = [ln for ln in vals[0].split(b"\r\n") if ln]
            out = [apply_all(ts, v) for v in vals] if ts else vals
        self.bufcache[key] = out
        return out

    def _raw(self, name: str) -> Any:
        p = self.p
        if name == "ipv4.hdr":
            return p.ip_hdr if p.ip_version == 4 and p.ip_hdr else None
        if name == "ipv6.hdr":
            return p.ip_hdr if p.ip_version == 6 and p.ip_hdr else None
        if name == "tcp.hdr":
            return p.tcp_hdr if p.proto == 6 and p.tcp_hdr else None
        b = self.ctx.buffers
        v = b.get(name)
        if v is None and name == "file.data":
            # file.data for HTTP is the body in the packet's direction
            v = b.get(
                "http.request_body" if self.ctx.direction == "to_server" else "http.response_body"
            )
        return v


def header_match(r: Rule, env: Env) -> bool:
    p = env.p
    ctx = env.ctx
    if r.ipprotos is not None and p.proto not in r.ipprotos:
        return False
    if r.ip_version and p.ip_version != r.ip_version:
        return False
    if p.ip_version == 0 and r.proto != "pkthdr":
        return False
    if r.app_proto is not None:
        ap = ctx.app_proto
        if not (ap == r.app_proto or (r.app_proto == "http" and ap == "http1")):
            return False
    v = p.ip_version
    if p.proto in (6, 17, 132):
        sp, dp = p.sport, p.dport
        ports_any = False
    else:
        # Suricata: a protocol without ports only matches rules whose ports are both `any`
        if not (r.sport.is_any and r.dport.is_any):
            return False
        sp = dp = 0
        ports_any = True
    if not (
        r.src.contains(v, env.src_int)
        and r.dst.contains(v, env.dst_int)
        and (ports_any or (r.sport.contains(sp) and r.dport.contains(dp)))
    ):
        if not r.bidir:
            return False
        if not (
            r.src.contains(v, env.dst_int)
            and r.dst.contains(v, env.src_int)
            and (ports_any or (r.sport.contains(dp) and r.dport.contains(sp)))
        ):
            return False
    if r.has_flow_kw and ctx.direction is None:
        return False  # any `flow` option (even stateless) needs the packet to be part of a flow
    if r.flow_dir is not None and ctx.direction != r.flow_dir:
        return False
    if r.flow_established is not None and ctx.established != r.flow_established:
        return False
    if r.frag_mode is not None and p.reassembled != (r.frag_mode == "only_frag"):
        return False
    return all(chk(env) for chk in r.checks)


def flow_conditions(r: Rule, env: Env) -> bool:
    """Suricata's match list (flowbits tests, flowint tests and updates) in rule order."""
    fs = env.ctx.flow_state
    for m in r.flow_matches:
        if m[0] == "fb":
            _, op, join, names = m
            if fs is None:
                if op == "isset":
                    return False
                continue
            hits = [fs.has_bit(n) for n in names]
            if op == "isset":
                ok = any(hits) if join == "|" else all(hits)
            else:
                ok = (not all(hits)) if join == "|" else not any(hits)
            if not ok:
                return False
            continue
        _, op, name, val = m
        if fs is None:
            if op == "notset":
                continue
            return False
        cur = fs.get_int(name)
        if op == "isset":
            if cur is None:
                return False
            continue
        if op == "notset":
            if cur is not None:
                return False
            continue
        other = fs.get_int(val) if isinstance(val, str) else val
        if other is None:
            return False
        if op in ("=", "+", "-"):
            if op == "=":
                new = other
            elif op == "+":
                new = (cur or 0) + other
            else:
                new = max(0, (cur or 0) - other)
            fs.set_int(name, new & 0xFFFFFFFF)
            continue
        if cur is None or not _cmp(op, cur, other):
            return False
    return True


def _cmp(op: str, a: int, b: int) -> bool:
    return {
        "==": a == b,
        "!=": a != b,
        "<": a < b,
        "<=": a <= b,
        ">": a > b,
        ">=": a >= b,
    }[op]


def payload_match(r: Rule, env: Env) -> bool:
    """Every buffer list of the rule must match (lists are ANDed)."""
    vars_: dict[str, int] = {}
    for key, items in r.lists.items():
        bufs = env.buffer(key, r)
        if bufs is None:
            return False
        if not any(Inspector(items, b, vars_, env).run(0, 0) == 1 for b in bufs):
            return False
    return True


def _val(v: Any, vars_: dict[str, int]) -> int | None:
    if isinstance(v, str):
        return vars_.get(v)
    return v  # type: ignore[no-any-return]


def _b64_prefix(data: bytes) -> bytes:
    """RFC 4648 decoding as base64_decode does it: stop at the first byte outside the alphabet."""
    m = _B64_RUN.match(data)
    run = m.group(0) if m else b""
    run = run[: len(run) - len(run) % 4] if len(run) % 4 == 1 else run
    try:
        return base64.b64decode(run + b"=" * (-len(run) % 4))
    except (binascii.Error, ValueError):
        return b""


def _nb(o: ByteOpts, vars_: dict[str, int]) -> int | None:
    """The byte count, resolving a variable; None when it is out of Suricata's limits."""
    if o.nbytes_var is None:
        return o.nbytes
    n = vars_.get(o.nbytes_var)
    if n is None or not 1 <= n <= (23 if o.string_base else 8):
        return None
    return n


def _extract(o: ByteOpts, buf: bytes, pos: int, nb: int | None) -> int | None:
    """Read the number for byte_test/jump/extract/math at `pos`; None when out of bounds."""
    if nb is None or pos < 0 or pos + nb > len(buf):
        return None
    raw = buf[pos : pos + nb]
    if o.string_base:
        try:
            s = raw.decode("ascii").strip()
            n = int(s, o.string_base)
        except (UnicodeDecodeError, ValueError):
            return None
        if n < 0:
            return None
    else:
        n = int.from_bytes(raw, "little" if o.little else "big")
    if o.bitmask is not None:
        n &= o.bitmask
        if n and o.bitmask:
            m = o.bitmask
            while m and not m & 1:  # shift right by the mask's trailing zeros
                m >>= 1
                n >>= 1
    return n


class Inspector:
    """Suricata's content inspection: items in order, relative chains, backtracking to the next
    occurrence of a content/pcre when a later relative keyword fails, bounded recursion."""

    __slots__ = ("items", "buf", "vars", "env", "budget", "_lower")

    def __init__(self, items: list[Any], buf: bytes, vars_: dict[str, int], env: Env) -> None:
        self.items = items
        self.buf = buf
        self.vars = vars_
        self.env = env
        self.budget = INSPECTION_RECURSION_LIMIT
        self._lower: bytes | None = None

    def lower(self) -> bytes:
        if self._lower is None:
            self._lower = self.buf.lower()
        return self._lower

    def run(self, i: int, off: int) -> int:
        """1 match, 0 no match, -1 no match and stop trying other occurrences (Suricata's
        DetectEngineContentInspection return values)."""
        self.budget -= 1
        if self.budget < 0:
            return -1
        items = self.items
        buf = self.buf
        blen = len(buf)
        while i < len(items):
            it = items[i]
            t = type(it)
            if t is Content:
                return self._content(it, i, off)
            if t is Pcre:
                return self._pcre(it, i, off)
            if t is IsDataAt:
                at = _val(it.at, self.vars)
                if at is None:
                    return 0
                ok = (off + at <= blen) if it.relative else (at < blen)
                if ok == it.negated:
                    # more data never appears further right: give up unless a variable moved it
                    return 0 if isinstance(it.at, str) else -1
            elif t is ByteTest:
                if not self._byte_test(it, off):
                    return 0
            elif t is ByteJump:
                o = it.o
                base = _val(o.offset, self.vars)
                if base is None:
                    return 0
                pos = off + base if o.relative else base
                nb = _nb(o, self.vars)
                n = _extract(o, buf, pos, nb)
                if n is None or nb is None:
                    return 0
                if it.from_beginning:
                    start = 0
                elif it.from_end:
                    start = blen
                else:
                    start = pos + nb
                j = n * it.multiplier
                if it.align and j % 4:
                    j += 4 - j % 4
                new = start + j + it.post_offset
                if new < 0 or new >= blen:  # Suricata: the jump must land inside the buffer
                    return 0
                off = new
            elif t is ByteExtract:
                o = it.o
                pos = off + int(o.offset) if o.relative else int(o.offset)
                n = _extract(o, buf, pos, o.nbytes)
                if n is None:
                    return 0
                n *= it.multiplier
                if it.align and n % it.align:
                    n += it.align - n % it.align
                self.vars[it.name] = n
                off = pos + o.nbytes
            elif t is ByteMath:
                o = it.o
                base = _val(o.offset, self.vars)
                rv = _val(it.rvalue, self.vars)
                if base is None or rv is None:
                    return 0
                n = _extract(o, buf, off + base if o.relative else base, _nb(o, self.vars))
                if n is None:
                    return 0
                op = it.oper
                if op == "+":
                    n = n + rv
                elif op == "-":
                    n = n - rv
                elif op == "*":
                    n = n * rv
                elif op == "/":
                    if rv == 0:
                        return 0
                    n = n // rv
                elif op == "<<":
                    n = (n << rv) & 0xFFFFFFFF
                else:
                    n = n >> rv
                self.vars[it.result] = n & 0xFFFFFFFF
            elif t is BufSize:
                if not it.test(blen):
                    return -1
            elif t is Base64Decode:
                # Suricata: a terminal keyword; the base64_data keywords decide the match
                start = off + it.offset if it.relative else it.offset
                chunk = buf[start : start + it.nbytes] if it.nbytes else buf[start : start + 65535]
                data = _b64_prefix(chunk)
                if not data or not it.data_items:
                    return 0
                sub = Inspector(it.data_items, data, self.vars, self.env)
                return 1 if sub.run(0, 0) == 1 else 0
            elif t is DatasetOp:
                ds = self.env.datasets
                if ds is None or not ds.apply(it.op, it.name, buf):
                    return -1
            i += 1
        return 1

    def _byte_test(self, it: ByteTest, off: int) -> bool:
        o = it.o
        base = _val(o.offset, self.vars)
        val = _val(it.value, self.vars)
        if base is None or val is None:
            return False
        n = _extract(o, self.buf, off + base if o.relative else base, _nb(o, self.vars))
        if n is None:
            return False
        op = it.op
        if op == "<":
            r = n < val
        elif op == ">":
            r = n > val
        elif op == "=":
            r = n == val
        elif op == "<=":
            r = n <= val
        elif op == ">=":
            r = n >= val
        elif op == "&":
            r = (n & val) != 0
        else:  # ^
            r = (n ^ val) != 0
        return r != it.negated

    def _window(self, c: Content, off: int) -> tuple[int, int] | None:
        blen = len(self.buf)
        if c.relative:
            dist = 0
            if c.distance is not None:
                d = _val(c.distance, self.vars)
                if d is None:
                    return None
                dist = d
            start = max(0, off + dist)
            end = blen
            if c.within is not None:
                w = _val(c.within, self.vars)
                if w is None:
                    return None
                end = min(end, off + dist + w)
        elif c.startswith:
            start, end = 0, min(blen, len(c.pattern))
        else:
            start = 0
            if c.offset is not None:
                o = _val(c.offset, self.vars)
                if o is None:
                    return None
                start = o
            end = blen
            if c.depth is not None:
                d = _val(c.depth, self.vars)
                if d is None:
                    return None
                end = min(blen, start + d)
        return start, end

    def _content(self, c: Content, i: int, off: int) -> int:
        w = self._window(c, off)
        if w is None:
            return 0
        start, end = w
        blen = len(self.buf)
        plen = len(c.pattern)
        hay, pat = (self.lower(), c.lpattern) if c.nocase else (self.buf, c.pattern)
        single = not c.relative and c.offset is None and c.depth is None and not c.startswith
        if start > end or end == 0:
            return self.run(i + 1, off) if c.negated else 0
        if c.endswith:
            if end < blen:
                found = -1
            else:
                p = blen - plen
                found = p if p >= start and hay[p:blen] == pat else -1
            if c.negated:
                return self.run(i + 1, off) if found < 0 else (-1 if single else 0)
            if found < 0:
                return 0 if c.relative else -1
            if i + 1 == len(self.items):
                return 1
            r = self.run(i + 1, blen)
            if r != 0:
                return r
            if not c.relative_next:
                return -1
            return 0 if c.relative else -1  # no other occurrence can end at the buffer end
        if c.negated:
            if end - start >= plen and hay.find(pat, start, end) >= 0:
                return -1 if single else 0
            return self.run(i + 1, off)
        while True:
            p = hay.find(pat, start, end) if end - start >= plen else -1
            if p < 0:
                return 0 if c.relative else -1
            if i + 1 == len(self.items):
                return 1
            r = self.run(i + 1, p + plen)
            if r != 0:
                return r
            if not c.relative_next:
                return -1  # what follows does not depend on this occurrence
            start = p + 1

    def _pcre(self, pc: Pcre, i: int, off: int) -> int:
        buf = self.buf
        base = off if pc.relative else 0
        view = memoryview(buf)[base:]
        pos = 0
        while True:
            if pos > len(view):
                m = None
            else:
                try:
                    if pc.anchored:
                        m = pc.regex.match(view, pos, timeout=PCRE_TIMEOUT) if pos == 0 else None
                    else:
                        m = pc.regex.search(view, pos, timeout=PCRE_TIMEOUT)
                except TimeoutError:
                    # like Suricata's pcre match-limit: the search gives up, as a non-match
                    self.env.pcre_timeouts += 1
                    m = None
                    if pc.negated:
                        return 0
            if pc.negated:
                return self.run(i + 1, off) if m is None else 0
            if m is None:
                return 0
            r = self.run(i + 1, base + m.end())
            if r != 0 or not pc.relative_next:
                return r
            pos = m.start() + 1
