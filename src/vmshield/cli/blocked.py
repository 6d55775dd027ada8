"""`vmshield blocked list|remove`: addresses the inline filter blocks in the kernel.

Each block has a scope: the whole bridge (ipset, untagged traffic) or one 802.1Q VLAN (nftables
set of address . VLAN), shown as `ADDRESS@VLAN` and taken so by `remove`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from vmshield.filter import rules


def register(sub: Any) -> None:
    p = sub.add_parser("blocked", help="list or unblock addresses blocked by the network filter")
    p.add_argument("--filter", dest="name", help="filter name (default: every filter on this host)")
    bs = p.add_subparsers(dest="blocked_command", metavar="ACTION")
    ls = bs.add_parser("list", help="blocked addresses with the time left")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_list)
    rm = bs.add_parser("remove", help="unblock an address now")
    rm.add_argument(
        "address", help="ADDRESS (every scope) or ADDRESS@VLAN (that VLAN's block only)"
    )
    rm.set_defaults(func=_remove)
    p.set_defaults(func=_list, json=False)


def _names(args: argparse.Namespace) -> list[str]:
    return [args.name] if args.name else rules.filter_names()


def _list(args: argparse.Namespace) -> int:
    out = []
    for name in _names(args):
        try:
            entries = rules.blocked(name)
        except Exception as exc:
            print(f"vmshield blocked: filter {name!r}: {exc}", file=sys.stderr)
            return 2
        now = time.time()
        for e in entries:
            out.append(
                {
                    "filter": name,
                    "address": e.address,
                    "scope": e.scope,
                    "vlan": e.vlan or None,
                    "seconds_left": e.timeout,
                    "until": None if e.timeout == 0 else round(now + e.timeout),
                }
            )
    if getattr(args, "json", False):
        print(json.dumps(out, indent=2))
        return 0
    if not out:
        print("no blocked addresses")
        return 0
    print(f"{'FILTER':10} {'ADDRESS':40} {'SCOPE':10} LEFT")
    for row in out:
        left = "until removed" if row["seconds_left"] == 0 else f"{row['seconds_left']}s"
        print(f"{row['filter']:10} {row['address']:40} {row['scope']:10} {left}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    try:
        names = _names(args)
        addr, vlan = rules.parse_scoped(args.address)
        done = [n for n in names if rules.unblock(n, addr, vlan)]
    except ValueError as exc:
        print(f"vmshield blocked: {exc}", file=sys.stderr)
        return 2
    if not done:
        print(f"vmshield blocked: {args.address} is not blocked", file=sys.stderr)
        return 1
    print(f"unblocked {args.address} ({', '.join(done)})")
    return 0
