"""`vmshield nids`: run the network engine over a capture and write EVE JSON, like Suricata -r."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from vmshield import native
from vmshield.engines.net.config import ConfigError, EngineConfig
from vmshield.engines.net.engine import Action, Engine
from vmshield.engines.net.pcap import (
    CaptureError,
    CaptureRecord,
    CaptureTruncated,
    read_packets,
)
from vmshield.events import Event, eve_line


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "nids",
        help="network threat detection over a pcap/pcapng capture (EVE JSON output)",
        description="Run the network engine over a capture: decode, flows, streams, HTTP/DNS/TLS, "
        "Suricata rules, network attacks and URLs; write EVE JSON and print a summary. "
        "Exit 0 on success, 2 when an input cannot be read.",
    )
    p.add_argument("--pcap", required=True, metavar="FILE", help="pcap or pcapng capture")
    p.add_argument(
        "--rules", action="append", default=[], metavar="FILE", help="Suricata rules (repeatable)"
    )
    p.add_argument("--classification", metavar="FILE", help="classification.config")
    p.add_argument("--url-db", metavar="FILE", help="URL database built by `vmshield url build`")
    p.add_argument("--home-net", metavar="CIDRS", help="HOME_NET, e.g. 10.0.0.0/8,192.168.0.0/16")
    p.add_argument("--eve", default="eve.json", metavar="FILE|-", help="EVE output (- = stdout)")
    p.add_argument("--config", metavar="FILE", help="engine configuration (TOML)")
    p.add_argument(
        "--mode",
        choices=("ids", "ips"),
        help="ids: report only; ips: also compute verdicts as inline would (default from config)",
    )
    p.add_argument("--no-attacks", action="store_true", help="disable network attack detection")
    p.add_argument("--flow-events", action="store_true", help="also write flow events")
    p.set_defaults(func=run)


def _err(msg: str) -> None:
    print(f"vmshield nids: {msg}", file=sys.stderr)


def run_capture(
    engine: Engine,
    records: Iterator[CaptureRecord],
    emit: Callable[[Event], object],
    actions: list[int],
) -> None:
    """Every record through `engine.process_capture`, under the batch GC setting
    (`native.batch_gc`; the caller has run `native.tune_gc` after loading). bench/nids.py
    measures this."""
    with native.batch_gc():
        engine.process_capture(records, emit, actions)


def run(args: argparse.Namespace) -> int:
    try:
        cfg = EngineConfig.from_toml(args.config) if args.config else EngineConfig()
        if args.home_net:
            cfg.home_net = [c.strip() for c in args.home_net.strip("[]").split(",") if c.strip()]
        if args.mode:
            cfg.mode = args.mode
        if args.flow_events:
            cfg.out_flow = True
        cfg.validate()
    except ConfigError as exc:
        _err(f"configuration: {exc}")
        return 2

    rules = None
    rejected: list[Any] = []
    if args.rules:
        try:
            rules, rejected = _load_rules(args.rules, args.classification, cfg)
        except (OSError, ValueError, ImportError) as exc:
            _err(f"rules: {exc}")
            return 2
        for r in rejected:
            _err(f"rejected rule: {r}")

    url_db = None
    if args.url_db:
        try:
            from vmshield.engines.net.urls import UrlDatabase

            url_db = UrlDatabase(args.url_db)
        except Exception as exc:  # the database names its own problem
            _err(f"url database {args.url_db}: {exc}")
            return 2

    try:
        attacks = None if args.no_attacks else _attack_detector(cfg)
    except ValueError as exc:  # the attack configuration names the bad setting
        _err(f"configuration: {exc}")
        return 2
    engine = Engine(cfg, rules=rules, url_db=url_db, attacks=attacks)

    try:
        cap = open(args.pcap, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        _err(f"{args.pcap}: cannot open ({exc.strerror})")
        return 2
    out: BinaryIO
    to_stdout = args.eve == "-"
    try:
        out = sys.stdout.buffer if to_stdout else open(args.eve, "wb")  # noqa: SIM115
    except OSError as exc:
        _err(f"{args.eve}: cannot write ({exc.strerror})")
        cap.close()
        return 2

    actions = [0] * len(Action)
    counts: dict[str, int] = {}
    error = ""

    def emit(ev: Event) -> None:
        counts[ev.event_type] = counts.get(ev.event_type, 0) + 1
        out.write(eve_line(ev))

    native.tune_gc()
    t0 = time.perf_counter()
    try:
        run_capture(engine, read_packets(cap, name=args.pcap), emit, actions)
    except CaptureTruncated as exc:
        error = f"{exc} (the packets before it were processed)"
    except CaptureError as exc:
        error = str(exc)
    finally:
        cap.close()
    for ev in engine.flush():
        emit(ev)
    if to_stdout:
        out.flush()
    else:
        out.close()
    elapsed = time.perf_counter() - t0
    st = engine.stats()
    summary = sys.stderr if to_stdout else sys.stdout
    pps = st["packets"] / elapsed if elapsed > 0 else 0.0
    print(
        f"packets: {st['packets']}  flows: {st['flows_created']}  "
        f"alerts: {counts.get('alert', 0)}  attacks: {counts.get('attack', 0)}  "
        f"urls: {counts.get('url', 0)}  anomalies: {counts.get('anomaly', 0)}",
        file=summary,
    )
    if args.rules:
        loaded = getattr(getattr(rules, "stats", None), "loaded", 0)
        print(f"rules: {loaded} loaded, {len(rejected)} rejected", file=summary)
    print(
        "events: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        if counts
        else "events: none",
        file=summary,
    )
    if cfg.mode == "ips":
        print(
            "verdicts: "
            + ", ".join(f"{a.name.lower()} {actions[a]}" for a in Action if actions[a]),
            file=summary,
        )
    # Limits that were hit: nothing is dropped without saying so.
    limits = {
        "flows evicted (table full)": st["flows_evicted"],
        "out-of-order data dropped (stream memcap/segments)": st["stream_memcap_drops"],
        "fragments dropped (defrag memcap)": st["defrag"]["memcap_drops"],
        "fragments refused (too many)": st["defrag"]["max_frags_drops"],
        "events over the per-packet cap": st["events_capped"],
        "internal errors": st["internal_errors"],
        "packets of an unsupported link type": st["invalid_linktype"],
    }
    hit = [f"{k} {v}" for k, v in limits.items() if v]
    if hit:
        print("limits: " + ", ".join(hit), file=summary)
    if st.get("last_internal_error"):
        _err(f"last internal error: {st['last_internal_error']}")
    print(f"time: {elapsed:.2f} s ({pps:,.0f} packets/s), engine {native.describe()}", file=summary)
    if error:
        _err(error)
        return 2
    return 0


def _load_rules(paths: list[str], classification: str | None, cfg: EngineConfig) -> Any:
    from vmshield.engines.net.engine import load_rules

    for p in paths:
        if not Path(p).is_file():
            raise OSError(f"{p}: no such file")
    rs = load_rules(paths, cfg, classification)
    return rs, list(rs.rejected)


def _attack_detector(cfg: EngineConfig) -> Any:
    try:
        from vmshield.engines.net.attacks import AttackConfig, AttackDetector
    except ImportError:
        return None
    return AttackDetector(AttackConfig.from_dict(cfg.attacks))
