"""threshold.config: suppress, threshold / event_filter and rate_filter lines (Suricata's global
thresholds), applied on top of the rules' own thresholds.

- `suppress gen_id G, sig_id S[, track by_src|by_dst|by_either, ip <addr|net|list|$VAR>]`:
  no alert (and no drop) for matching packets; flowbits and other actions still happen.
  gen_id 0 / sig_id 0 are wildcards.
- `threshold|event_filter gen_id G, sig_id S, type limit|threshold|both, track ..., count N,
  seconds T`: replaces the rule's own threshold (one specific rule; wildcards are refused, as in
  Suricata).
- `rate_filter gen_id G, sig_id S, track ..., count N, seconds T, new_action A, timeout T2`:
  once the rule matched more than N times in T seconds, its action becomes A for T2 seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

from .parser import Threshold
from .variables import AddressSet, GroupError, Variables


@dataclass(slots=True)
class Suppress:
    gid: int
    sid: int
    track: str | None  # None: always; by_src | by_dst | by_either
    addrs: AddressSet | None


@dataclass(slots=True)
class RateFilter:
    track: str
    count: int
    seconds: int
    new_action: str
    timeout: int


@dataclass(slots=True)
class ThresholdConfig:
    suppress: list[Suppress]
    thresholds: dict[tuple[int, int], Threshold]
    rate_filters: dict[tuple[int, int], RateFilter]
    errors: list[tuple[int, str]]  # (line, reason)


def _fields(rest: str) -> dict[str, str]:
    out: dict[str, str] = {}
    depth = 0
    cur: list[str] = []
    parts: list[str] = []
    for ch in rest:  # split on commas outside [...] (ip lists)
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    for p in parts:
        k, _, v = p.strip().partition(" ")
        if not k:
            continue
        if k in out:
            raise ValueError(f"'{k}' given twice")
        out[k] = v.strip()
    return out


def _int(f: dict[str, str], k: str) -> int:
    v = f.get(k)
    if v is None or not v.isdigit():
        raise ValueError(f"'{k}' must be a number")
    return int(v)


def parse_threshold_config(text: str, variables: Variables) -> ThresholdConfig:
    cfg = ThresholdConfig([], {}, {}, [])
    lines = text.splitlines()
    n = 0
    while n < len(lines):
        start = n + 1
        line = lines[n].strip()
        n += 1
        while line.endswith("\\") and n < len(lines):  # continuation lines
            line = line[:-1] + " " + lines[n].strip()
            n += 1
        if not line or line.startswith("#"):
            continue
        kind, _, rest = line.partition(" ")
        kind = kind.rstrip(":")
        if kind == "rate_filter" and rest.startswith("rate_filter "):
            rest = rest[len("rate_filter ") :]  # the documented "rate_filter: rate_filter ..." form
        try:
            f = _fields(rest)
            gid, sid = _int(f, "gen_id"), _int(f, "sig_id")
            if kind == "suppress":
                track = f.get("track")
                addrs = None
                if track is not None:
                    if track not in ("by_src", "by_dst", "by_either"):
                        raise ValueError("track must be by_src, by_dst or by_either")
                    if "ip" not in f:
                        raise ValueError("track needs an 'ip'")
                    addrs = variables.address(f["ip"])
                elif "ip" in f:
                    raise ValueError("'ip' needs a 'track'")
                extra = set(f) - {"gen_id", "sig_id", "track", "ip"}
                if extra:
                    raise ValueError(f"unknown option(s) {', '.join(sorted(extra))}")
                cfg.suppress.append(Suppress(gid, sid, track, addrs))
            elif kind in ("threshold", "event_filter"):
                if gid == 0 or sid == 0:
                    raise ValueError("gen_id 0 / sig_id 0 cannot be used for thresholds")
                t = f.get("type")
                if t not in ("limit", "threshold", "both"):
                    raise ValueError("type must be limit, threshold or both")
                track = f.get("track", "")
                if track not in ("by_src", "by_dst", "by_rule", "by_both"):
                    raise ValueError("track must be by_src, by_dst, by_rule or by_both")
                cfg.thresholds[(gid, sid)] = Threshold(
                    t, track, _int(f, "count"), _int(f, "seconds")
                )
            elif kind == "rate_filter":
                track = f.get("track", "")
                if track not in ("by_src", "by_dst", "by_rule", "by_both"):
                    raise ValueError("track must be by_src, by_dst, by_rule or by_both")
                act = f.get("new_action", "")
                if act not in ("alert", "drop", "pass", "reject"):
                    raise ValueError("new_action must be alert, drop, pass or reject")
                cfg.rate_filters[(gid, sid)] = RateFilter(
                    track, _int(f, "count"), _int(f, "seconds"), act, _int(f, "timeout")
                )
            else:
                raise ValueError(f"unknown directive '{kind}'")
        except (ValueError, GroupError) as e:
            cfg.errors.append((start, str(e)))
    return cfg
