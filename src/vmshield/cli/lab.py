"""`vmshield lab`: a lab of network namespaces standing for VMs, protected by the filter."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from vmshield.lab.attacks import SCENARIOS, run_attack
from vmshield.lab.lab import Lab, LabError


def register(sub: Any) -> None:
    p = sub.add_parser("lab", help="network namespaces as VMs on a bridge, attack scenarios")
    p.add_argument(
        "--prefix", default="vms", help="names of everything the lab creates (≤ 9 chars)"
    )
    lsub = p.add_subparsers(dest="lab_command", metavar="ACTION")

    up = lsub.add_parser("up", help="create the lab (and start its protection)")
    up.add_argument("--vms", type=int, default=2)
    up.add_argument("--protect", choices=("standard", "monitoring", "none"), default="standard")
    up.add_argument("--fail-closed", action="store_true", help="traffic stops when the SVM is down")
    up.add_argument("--workers", type=int, default=2)
    up.add_argument("--config", help="extra TOML configuration for the network protection")
    up.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="'no_scan|no_block ADDR|SUBNET|HOST|vlan N'",
    )
    up.add_argument("--block-seconds", type=int, default=600)
    up.add_argument(
        "--no-onaccess",
        dest="onaccess",
        action="store_false",
        help="skip the on-access file protection of the lab VMs",
    )
    up.add_argument("--prefix", dest="sub_prefix", help="same as `lab --prefix`")
    up.set_defaults(func=_up)

    st = lsub.add_parser("status", help="namespaces, addresses, mode, processes")
    st.add_argument("--json", action="store_true")
    st.add_argument("--prefix", dest="sub_prefix", help="same as `lab --prefix`")
    st.set_defaults(func=_status)

    down = lsub.add_parser("down", help="stop and remove everything the lab created (idempotent)")
    down.add_argument("--prefix", dest="sub_prefix", help="same as `lab --prefix`")
    down.set_defaults(func=_down)

    at = lsub.add_parser("attack", help="run a bounded attack scenario")
    at.add_argument("scenario", choices=(*SCENARIOS, "eicar"))
    at.add_argument("--from", dest="source", default="attacker")
    at.add_argument("--to", dest="target", default="vm1")
    at.add_argument("--json", action="store_true")
    at.add_argument("--prefix", dest="sub_prefix", help="same as `lab --prefix`")
    at.set_defaults(func=_attack)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def _lab(args: argparse.Namespace) -> Lab:
    return Lab(_prefix(args))


def _prefix(args: argparse.Namespace) -> str:
    return getattr(args, "sub_prefix", None) or args.prefix


def _up(args: argparse.Namespace) -> int:
    try:
        st = _lab(args).up(
            vms=args.vms,
            protect=args.protect,
            fail_closed=args.fail_closed,
            workers=args.workers,
            config=args.config,
            exclude=args.exclude,
            block_seconds=args.block_seconds,
            onaccess=args.onaccess,
        )
    except LabError as exc:
        print(f"vmshield lab: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        print(f"vmshield lab: up failed (everything created was removed): {exc}", file=sys.stderr)
        return 1
    print(f"lab {st.prefix} up: {st.subnet} on bridge {st.bridge}, protection: {st.protect}")
    for h in st.hosts:
        print(f"  {h.name:9} {h.address:15} netns {h.netns}")
    if st.eve:
        print(f"  events: {st.eve}")
    return 0


def _status(args: argparse.Namespace) -> int:
    try:
        s = _lab(args).status()
    except LabError as exc:
        print(f"vmshield lab: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(s, indent=2))
        return 0 if s["up"] else 1
    if not s["up"]:
        print(f"lab {_prefix(args)}: down")
        return 1
    svc = s["service"]
    print(
        f"lab {s['prefix']}: {s['subnet']} on {s['bridge']}, mode {s['mode']}"
        f"{' (fail-closed)' if s['fail_closed'] else ''}"
    )
    if svc["pid"]:
        print(
            f"  protection: pid {svc['pid']} {'running' if svc['running'] else 'NOT RUNNING'}, events {svc['eve']}"
        )
        wd = svc.get("watchdog_pids") or []
        print(f"  outage watchdog: {', '.join(map(str, wd)) if wd else 'none'}")
    if s["blocked"]:
        print(
            "  blocked: "
            + ", ".join(
                f"{b['address']} [{b.get('scope', 'bridge')}] ({b['seconds_left']}s)"
                for b in s["blocked"]
            )
        )
    for h in s["hosts"]:
        procs = ", ".join(f"{p['pid']}{'' if p['running'] else ' (dead)'}" for p in h["processes"])
        ns = "" if h["netns_present"] else " (namespace missing)"
        print(f"  {h['name']:9} {h['address']:15} {h['netns']}{ns} servers: {procs or '-'}")
    return 0


def _down(args: argparse.Namespace) -> int:
    try:
        removed = _lab(args).down()
    except LabError as exc:
        print(f"vmshield lab: {exc}", file=sys.stderr)
        return 2
    print(f"lab {_prefix(args)} down: removed {len(removed)} objects")
    return 0


def _attack(args: argparse.Namespace) -> int:
    lab = _lab(args)
    try:
        st = lab.state
        if st is None:
            print(f"vmshield lab: lab {_prefix(args)} is not up", file=sys.stderr)
            return 2
        if args.scenario == "eicar":
            # On-access file protection (vmshield.lab.onaccess): EICAR written into the VM's tree.
            from vmshield.lab.onaccess import attack_eicar

            path = attack_eicar(st, args.target)
            print(f"EICAR test file written to {path} (in {args.target}'s tree)")
            return 0
        res = run_attack(st, args.scenario, args.source, args.target)
    except LabError as exc:
        print(f"vmshield lab: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(res.to_json(), indent=2))
        return 0
    print(f"{res.scenario}: {res.source} -> {res.target} in {res.seconds}s")
    for cmd, rc in zip(res.commands, res.returncodes, strict=False):
        print(f"  $ {' '.join(cmd)}  (exit {rc})")
    if not st.eve:
        print("  the lab is not protected: no events")
        return 0
    print(f"  {len(res.events)} events:")
    for ev in res.events:
        kind = ev.get("event_type")
        detail = ev.get("attack") or ev.get("alert") or ev.get("url") or ev.get("block") or {}
        what = detail.get("type") or detail.get("signature") or detail.get("action") or ""
        print(f"    {kind:7} {what} {ev.get('src_ip', '')} -> {ev.get('dest_ip', '')}")
    return 0
