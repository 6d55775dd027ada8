"""RuleSet: loading rule files, the Hyperscan prefilter, thresholds and per-packet detection."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import hyperscan

from ..packet import Packet
from .classification import Classification
from .datasets import Datasets
from .detect import Env, flow_conditions, header_match, payload_match, rule_payload
from .model import Alert, FlowDetectState, InspectContext, LoadStats, RuleError
from .parser import PACKET_BUFFERS, BufKey, Rule, RuleReject, parse_rule
from .select import AS_WRITTEN, LEFT_OUT, MADE_ALERT, RuleSelection
from .threshold_config import RateFilter, Suppress, parse_threshold_config
from .transforms import apply_all
from .variables import Variables

_ACTION_ORDER: Final = {"pass": 0, "drop": 1, "reject": 2, "alert": 3}
_SID_RE: Final = re.compile(r"[(;]\s*sid\s*:\s*(\d+)")
MAX_THRESHOLD_ENTRIES: Final = 100_000
MAX_XBITS: Final = 100_000


_GROUP_OF: Final = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp"}


def _group_of(proto: int) -> str:
    return _GROUP_OF.get(proto, "other")


GROUPS: Final = ("tcp", "udp", "icmp", "other")
_GROUP_PROTOS: Final = {"tcp": {6}, "udp": {17}, "icmp": {1, 58}}


@dataclass(slots=True)
class _Prefilter:
    """One Hyperscan database over the fast patterns of the rules inspecting one buffer."""

    db: Any
    rules_of: list[list[int]]  # pattern id -> rule indexes
    raw_payload: bool = True  # some rule inspects the packet payload, not the stream


@dataclass(slots=True)
class _Group:
    # Rules without a usable fast pattern, bucketed by a single destination (or source) port
    # when the rule has one, so a packet only meets the few that can apply to it.
    always: list[int] = field(default_factory=list)
    always_dport: dict[int, list[int]] = field(default_factory=dict)
    always_sport: dict[int, list[int]] = field(default_factory=dict)
    always_itype: dict[int, list[int]] = field(default_factory=dict)
    prefilters: dict[BufKey, _Prefilter] = field(default_factory=dict)
    # (key, kind, prefilter): kind 0 payload/stream, 1 packet header buffer, 2 plain app-layer
    # buffer, 3 transformed app-layer buffer
    scan_plan: list[tuple[BufKey, int, _Prefilter]] = field(default_factory=list)
    always_iponly: list[int] = field(default_factory=list)  # the IP-only rules of `always`
    scan_plan_packet: list[tuple[BufKey, int, _Prefilter]] = field(
        default_factory=list
    )  # kinds 0-1
    hdr_prefilter: bool = False  # a fast pattern in a packet header buffer (tcp.hdr, ...)
    raw_payload_packet: bool = False  # a prefilter of scan_plan_packet scans raw payloads

    def add_always(self, idx: int, r: Rule) -> None:
        dp, sp = r.dport.single(), r.sport.single()
        if r.itype_eq is not None:
            self.always_itype.setdefault(r.itype_eq, []).append(idx)
        elif not r.bidir and dp is not None:
            self.always_dport.setdefault(dp, []).append(idx)
        elif not r.bidir and sp is not None:
            self.always_sport.setdefault(sp, []).append(idx)
        else:
            self.always.append(idx)
            if r.ip_only:
                self.always_iponly.append(idx)


def _hs_expr(pat: bytes) -> bytes:
    return b"".join(b"\\x%02x" % c for c in pat)


def iter_rules(text: str) -> Iterable[tuple[int, str]]:
    """(first line number, rule text) for each rule: comments and blank lines skipped,
    lines ending in a backslash joined with the next."""
    buf: list[str] = []
    start = 0
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not buf:
            if not s or s.startswith("#"):
                continue
            start = n
        if s.endswith("\\"):
            buf.append(s[:-1])
            continue
        buf.append(s)
        yield start, " ".join(x.strip() for x in buf).strip()
        buf = []
    if buf:
        yield start, " ".join(x.strip() for x in buf).strip()


def _scan_payload(
    pf: _Prefilter, payload: bytes, stream: bytes | memoryview | None, on: Any
) -> None:
    """A payload prefilter: the packet payload (when there is no stream, or some rule inspects
    the raw payload), and the stream bytes when there are some. Arguments are positional: with
    keywords the binding's argument parsing costs more than scanning a packet."""
    if payload and (stream is None or pf.raw_payload):
        pf.db.scan(payload, on, 0, pf)
    if stream:
        pf.db.scan(stream, on, 0, pf)


def _hit_rules(found: list[tuple[_Prefilter, int]], hits: set[int]) -> list[int]:
    """The rules behind the prefilters' pattern hits, added to `hits`, in rule order."""
    for pf, pid in found:
        hits.update(pf.rules_of[pid])
    return sorted(hits)


class RuleSet:
    def __init__(self, rules: list[Rule], rejected: list[RuleError], stats: LoadStats,
                 datasets: Datasets, classification: Classification) -> None:  # fmt: skip
        for i, r in enumerate(rules):
            r.order = (
                _ACTION_ORDER[r.action],
                0
                if (r.flowbit_actions or r.xbit_actions) and not (r.flowbit_tests or r.xbit_tests)
                else 1
                if r.flowbit_actions or r.xbit_actions
                else 2,
                0 if r.flowint_actions and not r.flowint_tests else 1 if r.flowint_actions else 2,
                r.priority,
                i,
            )
        self.rules = sorted(rules, key=lambda r: r.order)
        self.rejected = rejected
        self.stats = stats
        self.datasets = datasets
        self.classification = classification
        self._thresholds: dict[tuple[Any, ...], list[float]] = {}
        self._xbits: dict[tuple[tuple[bytes, ...], str], float] = {}  # -> expiry time
        self.pcre_timeouts = 0  # pcre searches stopped by the time limit (a counter to export)
        self.warnings: list[str] = []
        self.errors = 0  # rule evaluations that raised (counted, the rule skipped for the packet)
        self._suppress: list[Suppress] = []
        self._rate_filters: dict[tuple[int, int], RateFilter] = {}
        self._rate_state: dict[tuple[Any, ...], list[float]] = {}
        self._groups = {g: _Group() for g in GROUPS}
        self._build()

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        paths: Iterable[str | Path] = (),
        texts: Iterable[str | tuple[str, str]] = (),
        variables: Variables | None = None,
        classification: Classification | None = None,
        dataset_dirs: Iterable[str | Path] = (),
        threshold_config: str | Path | None = None,
        datasets_config: dict[str, tuple[str | None, str | None, bool]] | None = None,
        selection: RuleSelection | None = None,
    ) -> RuleSet:
        """`selection`: rules a policy leaves out or makes report-only (rules/select.py)."""
        variables = variables or Variables.default()
        classification = classification or Classification.default()
        datasets = Datasets([Path(d) for d in dataset_dirs])
        rules: list[Rule] = []
        rejected: list[RuleError] = []
        for dname, (dtype, dpath, is_state) in (datasets_config or {}).items():
            try:  # sets declared in the configuration, which rules then use by name
                datasets.declare(dname, dtype, dpath, is_state)
            except ValueError as e:
                rejected.append(RuleError("<datasets>", 0, None, "dataset", str(e)))
        stats = LoadStats()
        seen: dict[tuple[int, int], tuple[str, int]] = {}
        made_alert: dict[tuple[int, int], bool] = {}  # gid:sid -> a blocking rule made alert
        sources: list[tuple[str, str, Path | None]] = []
        for p in paths:
            path = Path(p)
            try:
                sources.append(
                    (str(path), path.read_text("utf-8", errors="surrogateescape"), path.parent)
                )
            except OSError as e:
                rejected.append(RuleError(str(path), 0, None, None, f"cannot read rule file: {e.strerror or e}"))  # fmt: skip
        for i, t in enumerate(texts):
            name, body = t if isinstance(t, tuple) else (f"<rules {i + 1}>", t)
            sources.append((name, body, None))
        for name, body, rdir in sources:
            stats.files += 1

            def resolver(n: str, dtype: str | None, path: str | None, is_state: bool,
                         _d: Path | None = rdir) -> None:  # fmt: skip
                datasets.declare(n, dtype, path, is_state, _d)

            for line, text in iter_rules(body):
                try:
                    r = parse_rule(text, variables, classification, resolver)
                except RuleReject as e:
                    m = _SID_RE.search(text)
                    rejected.append(RuleError(name, line, int(m.group(1)) if m else None, e.keyword, e.reason))  # fmt: skip
                    continue
                except Exception as e:  # noqa: BLE001 - one broken rule never stops the load
                    m = _SID_RE.search(text)
                    rejected.append(RuleError(name, line, int(m.group(1)) if m else None, None, f"cannot parse rule ({type(e).__name__}: {e})"))  # fmt: skip
                    continue
                key = (r.gid, r.sid)
                chosen = selection.apply(r) if selection is not None else AS_WRITTEN
                if chosen == LEFT_OUT:
                    stats.left_out += 1
                    continue
                if key in seen:
                    # Suricata keeps the higher revision of a duplicated gid:sid
                    stats.duplicates += 1
                    where, pos = seen[key]
                    old = rules[pos]
                    if r.rev > old.rev:
                        rules[pos] = r
                        seen[key] = (f"{name}:{line}", pos)
                        made_alert[key] = chosen == MADE_ALERT
                        oname, _, oline = where.rpartition(":")
                        rejected.append(RuleError(oname, int(oline), r.sid, "sid", f"duplicate sid {r.sid}: rev {old.rev} replaced by rev {r.rev} at {name}:{line}"))  # fmt: skip
                    else:
                        rejected.append(RuleError(name, line, r.sid, "sid", f"duplicate sid {r.sid} (rev {old.rev} kept, from {where})"))  # fmt: skip
                    continue
                seen[key] = (f"{name}:{line}", len(rules))
                rules.append(r)
                made_alert[key] = chosen == MADE_ALERT
        tcfg = None
        if threshold_config is not None:
            tpath = Path(threshold_config)
            try:
                ttext = tpath.read_text("utf-8", errors="surrogateescape")
            except OSError as e:
                rejected.append(RuleError(str(tpath), 0, None, "threshold.config", f"cannot read: {e.strerror or e}"))  # fmt: skip
            else:
                tcfg = parse_threshold_config(ttext, variables)
                for line, reason in tcfg.errors:
                    rejected.append(RuleError(str(tpath), line, None, "threshold.config", reason))
                known = {(r.gid, r.sid): r for r in rules}
                for key, th in tcfg.thresholds.items():
                    if key in known:
                        known[key].threshold = th  # a global threshold replaces the rule's own
        stats.loaded = len(rules)
        stats.rejected = len(rejected)
        stats.report_only = sum(made_alert.values())  # of the revision kept for each sid
        rs = cls(rules, rejected, stats, datasets, classification)
        if tcfg is not None:
            rs._suppress = tcfg.suppress
            rs._rate_filters = tcfg.rate_filters
        return rs

    @classmethod
    def from_suricata_yaml(
        cls,
        path: str | Path,
        *,
        dataset_dirs: Iterable[str | Path] = (),
        threshold_config: str | Path | None = None,
        datasets_config: dict[str, tuple[str | None, str | None, bool]] | None = None,
    ) -> RuleSet:
        """Rule files, classification and variables named by a suricata.yaml. Rule files it
        names but that do not exist are reported in `rejected`, as Suricata warns of them."""
        from .config import load_suricata_config

        cfg = load_suricata_config(path)
        classification = Classification.load(cfg.classification) if cfg.classification else None
        # Keywords spelled out, not forwarded as **kw: the compiled engine (mypyc) mis-passes
        # a forwarded keyword dictionary to a classmethod.
        rs = cls.load(
            paths=cfg.rule_paths,
            variables=cfg.variables,
            classification=classification,
            dataset_dirs=dataset_dirs,
            threshold_config=cfg.threshold_file if threshold_config is None else threshold_config,
            datasets_config=cfg.datasets if datasets_config is None else datasets_config,
        )
        for m in cfg.missing:
            rs.rejected.append(
                RuleError(str(path), 0, None, "rule-files", f"rule file not found: {m}")
            )
        rs.stats.rejected = len(rs.rejected)
        return rs

    @classmethod
    def from_text(
        cls,
        text: str,
        *,
        variables: Variables | None = None,
        classification: Classification | None = None,
        dataset_dirs: Iterable[str | Path] = (),
        threshold_config: str | Path | None = None,
        datasets_config: dict[str, tuple[str | None, str | None, bool]] | None = None,
    ) -> RuleSet:
        return cls.load(
            texts=[("<text>", text)],
            variables=variables,
            classification=classification,
            dataset_dirs=dataset_dirs,
            threshold_config=threshold_config,
            datasets_config=datasets_config,
        )

    def summary(self) -> str:
        s = self.stats
        return f"{s.loaded} rules loaded, {s.rejected} rejected ({s.files} files)"

    # -- prefilter -----------------------------------------------------------------------------
    def _build(self) -> None:
        per: dict[str, dict[BufKey, dict[tuple[bytes, bool], list[int]]]] = {g: {} for g in GROUPS}
        for idx, r in enumerate(self.rules):
            if r.ipprotos is None:
                groups = list(GROUPS)
            else:
                groups = [g for g, ps in _GROUP_PROTOS.items() if ps & r.ipprotos]
                if r.ipprotos - {1, 6, 17, 58}:
                    groups.append("other")
            for g in groups:
                if r.fast is None:
                    self._groups[g].add_always(idx, r)
                else:
                    key, pat, nocase = r.fast
                    per[g].setdefault(key, {}).setdefault((pat, nocase), []).append(idx)
        for g, bykey in per.items():
            for key, pats in bykey.items():
                items = list(pats.items())
                db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
                flags = [
                    hyperscan.HS_FLAG_SINGLEMATCH | (hyperscan.HS_FLAG_CASELESS if nc else 0)
                    for (_, nc), _ in items
                ]
                try:
                    db.compile(
                        expressions=[_hs_expr(p) for (p, _), _ in items],
                        ids=list(range(len(items))),
                        flags=flags,
                    )
                except hyperscan.error as e:
                    # never lose rules to a prefilter problem: verify them on every packet
                    self.warnings.append(f"prefilter for {g}/{key[0]} not built ({e}); "
                                         f"{sum(len(ix) for _, ix in items)} rules checked on every packet")  # fmt: skip
                    for _, ix in items:
                        for i in ix:
                            self._groups[g].add_always(i, self.rules[i])
                    continue
                pf = _Prefilter(db, [ix for _, ix in items])
                # Rules on the raw packet payload (no_stream, dsize, tcp-pkt) even when there is
                # a stream: only then is a TCP segment's payload scanned besides the stream.
                pf.raw_payload = any(
                    self.rules[i].stream_mode == "no_stream" for _, ix in items for i in ix
                )
                self._groups[g].prefilters[key] = pf
                kind = (
                    0
                    if key[0] == "pkt"
                    else 1
                    if key[0] in PACKET_BUFFERS
                    else 2
                    if not key[1]
                    else 3
                )
                self._groups[g].scan_plan.append((key, kind, pf))
                if kind < 2:
                    self._groups[g].scan_plan_packet.append((key, kind, pf))
                    if pf.raw_payload:
                        self._groups[g].raw_payload_packet = True
                if kind == 1:
                    self._groups[g].hdr_prefilter = True

    def _candidates(self, env: Env) -> list[int]:
        """Rules worth verifying: the prefilter's hits plus the rules it cannot screen."""
        p = env.p
        grp = self._groups[_GROUP_OF.get(p.proto, "other")]
        hits: set[int] = set(grp.always)
        if grp.always_dport:
            hits.update(grp.always_dport.get(p.dport, ()))
        if grp.always_sport:
            hits.update(grp.always_sport.get(p.sport, ()))
        if grp.always_itype and p.icmp_type >= 0:
            hits.update(grp.always_itype.get(p.icmp_type, ()))
        ctx = env.ctx
        bufs = ctx.buffers
        found: list[tuple[_Prefilter, int]] = []

        def on(pid: int, _f: int, _t: int, _fl: int, pf_: Any) -> None:
            found.append((pf_, pid))

        # Without app-layer buffers (most packets) only payload/stream and header buffers apply.
        for key, kind, pf in grp.scan_plan if bufs else grp.scan_plan_packet:
            if kind == 0:
                _scan_payload(pf, env.payload, ctx.stream, on)
                continue
            if kind == 2:  # app-layer buffer without transforms: straight from the mapping
                v = bufs.get(key[0])
                if v is None:
                    # file.data falls back on the HTTP body of the packet's direction
                    if key[0] != "file.data" or (
                        "http.request_body" not in bufs and "http.response_body" not in bufs
                    ):
                        continue
                    got = env.buffer(key, _DUMMY)
                    if got is None:
                        continue
                    v = got
            elif kind == 1:
                d = env._raw(key[0])
                if d is None:
                    continue
                v = apply_all(key[1], bytes(d))
            else:
                if key[0] not in bufs and key[0] != "file.data":
                    continue
                got = env.buffer(key, _DUMMY)
                if got is None:
                    continue
                v = got
            if isinstance(v, (list, tuple)):
                for d in v:
                    if d:
                        pf.db.scan(d, on, 0, pf)
            elif v:
                pf.db.scan(v, on, 0, pf)
        return _hit_rules(found, hits)

    # -- detection -----------------------------------------------------------------------------
    def header_candidates(
        self, p: Any, flow_state: FlowDetectState | None, direction: str | None
    ) -> bool:
        """Whether any rule could match a packet that brings no data to inspect (no payload,
        no stream bytes, no app-layer buffers): only rules without a fast pattern can, so the
        pipeline skips detection of bare ACKs when this is False. IP-only rules count until
        they have been checked for the flow direction."""
        grp = self._groups[_GROUP_OF.get(p.proto, "other")]
        if grp.hdr_prefilter:
            return True
        if grp.always:
            if not grp.always_iponly or flow_state is None or direction is None:
                return True
            if flow_state.iponly_pending(direction):
                return True
            if len(grp.always) > len(grp.always_iponly):
                return True
        if grp.always_dport and p.dport in grp.always_dport:
            return True
        if grp.always_sport and p.sport in grp.always_sport:
            return True
        return bool(grp.always_itype) and p.icmp_type in grp.always_itype

    def match(self, ctx: InspectContext) -> list[Alert]:
        cands: list[int] | None = None
        if not ctx.buffers:
            cands = self.packet_candidates(ctx.packet, ctx.stream)
            if cands is not None and not cands:
                return []
        return self.match_candidates(ctx, cands)

    def match_candidates(self, ctx: InspectContext, cands: list[int] | None) -> list[Alert]:
        """`match` of a packet without app-layer buffers whose `packet_candidates` are known
        (the pipeline asks for them first: most packets have none, and then no context is
        built for them at all)."""
        env = Env(ctx, self.datasets)
        try:
            return self._match(ctx, env, cands)
        finally:
            if env.pcre_timeouts:
                self.pcre_timeouts += env.pcre_timeouts

    def packet_candidates(self, p: Packet, stream: bytes | memoryview | None) -> list[int] | None:
        """Candidates of a packet without app-layer buffers whose group has only payload/stream
        prefilters and no rule without a fast pattern for it: most packets. Answered without
        the per-packet Env (empty: nothing to verify); None when the general path must decide.
        Scans exactly what `_candidates` scans."""
        grp = self._groups[_GROUP_OF.get(p.proto, "other")]
        if grp.always or grp.hdr_prefilter:
            return None
        if grp.always_dport and p.dport in grp.always_dport:
            return None
        if grp.always_sport and p.sport in grp.always_sport:
            return None
        if grp.always_itype and p.icmp_type in grp.always_itype:
            return None
        found: list[tuple[_Prefilter, int]] = []

        def on(pid: int, _f: int, _t: int, _fl: int, pf_: Any) -> None:
            found.append((pf_, pid))

        payload = rule_payload(p) if stream is None or grp.raw_payload_packet else b""
        for _key, _kind, pf in grp.scan_plan_packet:
            _scan_payload(pf, payload, stream, on)
        if not found:
            return []
        return _hit_rules(found, set())

    def _match(self, ctx: InspectContext, env: Env, cands: list[int] | None = None) -> list[Alert]:
        out: list[Alert] = []
        rules = self.rules
        fs = ctx.flow_state
        iponly = True
        if fs is not None and ctx.direction is not None:
            iponly = fs.iponly_first(ctx.direction)
        for idx in self._candidates(env) if cands is None else cands:
            r = rules[idx]
            if r.ip_only and not iponly:
                continue
            txkey = None
            if r.tx_dir is not None and ctx.direction is not None and ctx.direction != r.tx_dir:
                continue  # request buffers are inspected going to the server, and vice versa
            if r.app_layer and fs is not None and ctx.tx_id is not None:
                # Suricata inspects an app-layer signature once per transaction: once it
                # matched, later packets of the same transaction neither alert nor repeat
                # its flowbits / flowint updates
                txkey = (ctx.tx_id, "", r.gid, r.sid)
                if fs.tx_marked(txkey):
                    continue
            try:
                if not header_match(r, env):
                    continue
                if r.lists and not payload_match(r, env):
                    continue
                if r.flow_matches and not flow_conditions(r, env):
                    continue
            except Exception as e:  # noqa: BLE001 - one rule never stops detection of a packet
                self.errors += 1
                if len(self.warnings) < 100:
                    self.warnings.append(
                        f"sid {r.sid}: evaluation failed ({type(e).__name__}: {e})"
                    )
                continue
            if r.xbit_tests and not self._xbits_ok(r, ctx):
                continue
            if txkey is not None:
                fs.mark_tx(txkey)  # type: ignore[union-attr]
            if r.xbit_actions:
                self._xbits_apply(r, ctx)
            if fs is not None:
                for op, names in r.flowbit_actions:
                    for n in names:
                        if op == "set":
                            fs.set_bit(n)
                        elif op == "unset" or fs.has_bit(n):
                            fs.unset_bit(n)
                        else:
                            fs.set_bit(n)
            if r.action == "pass":
                # a matching pass rule ends inspection of this packet: it is returned alone
                # (the pipeline logs nothing for it and may pass the flow, as Suricata does)
                out = [self._alert(r, ctx, "pass", True)]
                break
            if r.noalert and r.action not in ("drop", "reject"):
                continue  # noalert: the rule only sets state
            if self._suppress and self._suppressed(r, ctx):
                continue
            silent = r.noalert  # a noalert drop/reject still drops, without an alert event
            if r.threshold is not None:
                t = self._threshold(r, ctx)
                if t == 0 or (t == 2 and r.action not in ("drop", "reject")):
                    continue
                silent = silent or t == 2
            action = r.action
            if self._rate_filters:
                rf = self._rate_filters.get((r.gid, r.sid))
                if rf is not None and self._rate_reached(r, rf, ctx):
                    action = rf.new_action
                    if action == "pass":
                        continue
            out.append(self._alert(r, ctx, action, silent))
        return out

    # -- threshold.config --------------------------------------------------------------------
    def _suppressed(self, r: Rule, ctx: InspectContext) -> bool:
        p = ctx.packet
        for sp in self._suppress:
            if sp.gid not in (0, r.gid) or sp.sid not in (0, r.sid):
                continue
            if sp.track is None or sp.addrs is None:
                return True
            v = p.ip_version
            src = int.from_bytes(p.src_bytes, "big") if p.src_bytes else -1
            dst = int.from_bytes(p.dst_bytes, "big") if p.dst_bytes else -1
            if sp.track in ("by_src", "by_either") and sp.addrs.contains(v, src):
                return True
            if sp.track in ("by_dst", "by_either") and sp.addrs.contains(v, dst):
                return True
        return False

    def _rate_reached(self, r: Rule, rf: RateFilter, ctx: InspectContext) -> bool:
        """Suricata's IsThresholdReached: count matches in a window; past `count`, the new
        action holds for `timeout` seconds."""
        p = ctx.packet
        now = p.ts
        if rf.track == "by_src":
            key: tuple[Any, ...] = (r.gid, r.sid, p.src_bytes)
        elif rf.track == "by_dst":
            key = (r.gid, r.sid, p.dst_bytes)
        elif rf.track == "by_both":
            key = (r.gid, r.sid, *sorted((p.src_bytes, p.dst_bytes)))
        else:
            key = (r.gid, r.sid)
        e = self._rate_state.get(key)
        if e is None:
            if len(self._rate_state) >= MAX_THRESHOLD_ENTRIES:
                self._rate_state.clear()  # bounded: start counting afresh rather than grow
            self._rate_state[key] = [now, 1, 0.0]
            return False
        if e[2]:
            if now - e[2] > rf.timeout:
                e[2] = 0.0
            else:
                return True
            return False
        if now - e[0] < rf.seconds:
            e[1] += 1
            if e[1] > rf.count:
                e[2] = now
                return True
        else:
            e[0], e[1] = now, 1
        return False

    # -- hostbits / xbits ------------------------------------------------------------------
    @staticmethod
    def _xkeys(track: str, ctx: InspectContext) -> list[tuple[bytes, ...]]:
        p = ctx.packet
        if track == "ip_src":
            return [(p.src_bytes,)]
        if track == "ip_dst":
            return [(p.dst_bytes,)]
        if track == "ip_both":
            return [(p.src_bytes,), (p.dst_bytes,)]
        return [tuple(sorted((p.src_bytes, p.dst_bytes)))]  # ip_pair: either direction

    def _xbits_ok(self, r: Rule, ctx: InspectContext) -> bool:
        now = ctx.packet.ts
        for op, name, track, _ in r.xbit_tests:
            hit = any(self._xbits.get((key, name), -1.0) >= now for key in self._xkeys(track, ctx))
            if hit != (op == "isset"):
                return False
        return True

    def _xbits_apply(self, r: Rule, ctx: InspectContext) -> None:
        now = ctx.packet.ts
        for op, name, track, expire in r.xbit_actions:
            for key in self._xkeys(track, ctx):
                k = (key, name)
                live = self._xbits.get(k, -1.0) >= now
                if op == "set" or (op == "toggle" and not live):
                    if len(self._xbits) >= MAX_XBITS and k not in self._xbits:
                        self._xbits = {x: t for x, t in self._xbits.items() if t >= now}
                        if len(self._xbits) >= MAX_XBITS:
                            continue  # full of live bits: do not grow without bound
                    self._xbits[k] = now + expire
                else:
                    self._xbits.pop(k, None)

    @staticmethod
    def _alert(r: Rule, ctx: InspectContext, action: str, silent: bool) -> Alert:
        return Alert(
            r.sid, r.gid, r.rev, r.msg, action, r.classtype, r.category, r.priority, r.metadata,
            r.references, r.target, r.raw, silent, ctx.tx_id if r.app_layer else None,
        )  # fmt: skip

    def _threshold(self, r: Rule, ctx: InspectContext) -> int:
        """Suricata's ThresholdHandlePacket: 1 alert, 2 silent match (no alert, but a drop or
        reject still applies), 0 no alert. A window includes its last second."""
        th = r.threshold
        assert th is not None
        p = ctx.packet
        now = p.ts
        if th.track == "by_src":
            key: tuple[Any, ...] = (r.gid, r.sid, p.src_bytes)
        elif th.track == "by_dst":
            key = (r.gid, r.sid, p.dst_bytes)
        elif th.track == "by_both":
            key = (r.gid, r.sid, p.src_bytes, p.dst_bytes)
        elif th.track == "by_flow":
            if ctx.flow_state is None:
                return 0
            key = (r.gid, r.sid, id(ctx.flow_state))
        else:
            key = (r.gid, r.sid)
        kind, count = th.kind, th.count
        e = self._thresholds.get(key)
        if e is None:
            if kind == "threshold" and count == 1:
                return 1  # Suricata keeps no entry: every match alerts
            if len(self._thresholds) >= MAX_THRESHOLD_ENTRIES:
                self._expire(now)
            self._thresholds[key] = [now, 1]
            if kind == "limit":
                return 1
            if kind == "both":
                return 1 if count == 1 else 0
            return 0
        if now > e[0] + th.seconds:  # expired: a new window starts with this match
            e[0], e[1] = now, 1
            if kind == "limit":
                return 1
            if kind == "both":
                return 1 if count == 1 else 0
            return 0
        e[1] += 1
        if kind == "limit":
            return 1 if e[1] <= count else 2
        if kind == "threshold":
            if e[1] >= count:
                e[1] = 0
                return 1
            return 0
        if kind == "both":
            return 1 if e[1] == count else 2 if e[1] > count else 0
        return 1 if e[1] > count else 0

    def _expire(self, now: float) -> None:
        # Drop entries older than the longest window; if still full, drop the oldest half.
        longest = max((r.threshold.seconds for r in self.rules if r.threshold), default=60)
        for k in [k for k, e in self._thresholds.items() if now - e[0] >= longest]:
            del self._thresholds[k]
        if len(self._thresholds) >= MAX_THRESHOLD_ENTRIES:
            for k in list(self._thresholds)[: MAX_THRESHOLD_ENTRIES // 2]:
                del self._thresholds[k]


class _NoRule:
    stream_mode = None


_DUMMY: Final[Any] = _NoRule()
