"""`vmshield scan --vm VM PATH...`: an on-demand scan of a guest's files through its agent.

The SVM's control socket orders the VM's agent to walk PATHs; each file goes through the same
pipeline as on-access (hash first, shared verdict cache, content only on a miss, the profile's
action). Output and exit codes follow clamscan: 0 nothing found, 1 infected, 2 errors.
"""

from __future__ import annotations

import argparse
import json
import sys

from vmshield.cli.introspection import DEFAULT_CONTROL, control_request


def run_vm_scan(args: argparse.Namespace) -> int:
    control = getattr(args, "control", None) or DEFAULT_CONTROL
    paths = list(args.paths)
    bad = [p for p in paths if not p.startswith("/")]
    if bad:
        print(
            f"vmshield scan --vm: paths inside the guest must be absolute: {', '.join(bad)}",
            file=sys.stderr,
        )
        return 2
    infected = errors = files = cached = 0
    progress = sys.stderr.isatty() if args.progress == "auto" else args.progress == "always"
    try:
        for item in control_request(
            control, {"cmd": "scan", "vm": args.vm, "paths": paths}, timeout=3600
        ):
            if "error" in item and "path" not in item and "progress" not in item:
                print(f"vmshield scan --vm {args.vm}: {item['error']}", file=sys.stderr)
                return 2
            if "progress" in item:
                if item.get("error"):
                    print(f"{item['error']}", file=sys.stderr)
                    errors += 1
                if progress:
                    print(f"\r{item['progress']} files", end="", file=sys.stderr)
                continue
            files += 1
            cached += bool(item.get("cached"))
            status = item["status"]
            if args.json:
                print(json.dumps({"vm": args.vm, **item}))
                infected += status == "infected"
                errors += status == "error"
                continue
            if status == "infected":
                infected += 1
                names = ", ".join(item.get("detections") or ["?"])
                print(f"{item['path']}: {names} FOUND ({item['action']})")
            elif status == "clean":
                if not args.infected:
                    print(f"{item['path']}: OK")
            else:
                errors += status == "error"
                print(f"{item['path']}: {status.upper()}")
    except OSError as exc:
        print(f"vmshield scan --vm: {exc}", file=sys.stderr)
        return 2
    if progress:
        print(file=sys.stderr)
    if not args.no_summary and not args.json:
        print(f"\n----------- SCAN SUMMARY (VM {args.vm}) -----------")
        print(f"Scanned files: {files}")
        print(f"Answered from the verdict cache: {cached}")
        print(f"Infected files: {infected}")
        if errors:
            print(f"Total errors: {errors}")
    return 1 if infected else (2 if errors else 0)
