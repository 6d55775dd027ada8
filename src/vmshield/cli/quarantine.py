"""`vmshield quarantine`: list, restore and delete the backup/quarantine store's items."""

from __future__ import annotations

import argparse
import json
import sys
import time

from vmshield.engines.file.quarantine import QuarantineError, QuarantineStore

DEFAULT_DIR = "/var/lib/vmshield/quarantine"  # the same default as `vmshield scan --quarantine-dir`


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "quarantine",
        help="list, restore or delete backup and quarantined copies",
        description="The backup/quarantine store: copies kept (encrypted, not executable) before "
        "any file was disinfected, deleted or quarantined.",
    )
    p.add_argument(
        "--dir", default=DEFAULT_DIR, metavar="DIR", help=f"the store (default {DEFAULT_DIR})"
    )
    sub = p.add_subparsers(dest="qcmd", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="list the items, oldest first")
    ls.add_argument("--json", action="store_true", help="one JSON object per item")
    rs = sub.add_parser("restore", help="write an item back to its original path (or --to)")
    rs.add_argument("id")
    rs.add_argument(
        "--to", metavar="PATH", help="restore here instead (a directory keeps the original name)"
    )
    rs.add_argument("--force", action="store_true", help="overwrite an existing file")
    rs.add_argument(
        "--keep", action="store_true", help="keep the item in the store after restoring"
    )
    dl = sub.add_parser("delete", help="delete an item for good")
    dl.add_argument("id")
    p.set_defaults(func=run)


def _open(directory: str) -> QuarantineStore:
    return QuarantineStore(directory, create=False)


def run(args: argparse.Namespace) -> int:
    try:
        store = _open(args.dir)
        if args.qcmd == "list":
            entries = store.list()
            for e in entries:
                if args.json:
                    print(json.dumps(e.to_json(), sort_keys=True))
                else:
                    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.time))
                    names = ",".join(e.detections) or "-"
                    print(
                        f"{e.id}  {when}  {e.reason:<10}  {e.size:>10}  {names}  {e.original_path}"
                    )
            for problem in store.problems:
                print(f"vmshield quarantine: {problem}", file=sys.stderr)
            if not args.json:
                total = sum(e.stored_size for e in entries)
                print(
                    f"{len(entries)} item(s), {total} bytes stored in {args.dir}", file=sys.stderr
                )
            return 2 if store.problems else 0
        if args.qcmd == "restore":
            target = store.restore(args.id, args.to, force=args.force, keep=args.keep)
            print(f"{args.id}: restored to {target}")
            return 0
        if args.qcmd == "delete":
            store.delete(args.id)
            print(f"{args.id}: deleted")
            return 0
    except QuarantineError as exc:
        print(f"vmshield quarantine: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"vmshield quarantine: {exc.filename or args.dir}: {exc.strerror}", file=sys.stderr)
        return 2
    return 2
