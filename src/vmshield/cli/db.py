"""`vmshield db info PATH...` and `vmshield db hash FILE...` (like sigtool --md5 / --sha256)."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from typing import Any

from vmshield.engines.file.database import Database


def register(sub: Any) -> None:
    p = sub.add_parser("db", help="inspect signature databases, make hash signatures")
    dsub = p.add_subparsers(dest="db_command", metavar="SUBCOMMAND")
    info = dsub.add_parser("info", help="counts per kind, version and rejected lines")
    info.add_argument("paths", nargs="+", metavar="PATH", help="database file or directory")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=run_info)
    h = dsub.add_parser("hash", help="print .hdb (MD5) and .hsb (SHA1/SHA256) lines for files")
    h.add_argument("files", nargs="+", metavar="FILE")
    h.add_argument("--name", help="signature name (default: the file's base name)")
    h.add_argument(
        "--kind",
        choices=("md5", "sha1", "sha256", "all", "mdb"),
        default="all",
        help="mdb: one `.mdb` line (SectionSize:MD5:Name) per section of a PE file, as sigtool --mdb",
    )
    h.set_defaults(func=run_hash)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def run_info(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    db = Database.load(args.paths)
    elapsed = time.monotonic() - t0
    if args.json:
        print(
            json.dumps(
                {
                    "version": db.version,
                    "signatures": db.signature_count,
                    "stats": db.stats,
                    "rejected": [r._asdict() for r in db.rejected],
                    "ignored_files": list(db.ignored_files),
                    "load_seconds": round(elapsed, 3),
                }
            )
        )
    else:
        s = db.stats
        print(f"Version: {db.version}")
        print(f"Files loaded: {s['files']}")
        print(f"Signatures: {db.signature_count}")
        for key, label in (
            ("md5", "MD5 hash (.hdb)"),
            ("sha1", "SHA1 hash (.hsb)"),
            ("sha256", "SHA256 hash (.hsb)"),
            ("pe_section", "PE section hash (.mdb/.msb)"),
            ("ndb", "Body (.ndb)"),
            ("ldb", "Logical (.ldb)"),
            ("yara", "YARA rules"),
            ("fp", "Allow-list (.fp/.sfp)"),
            ("ign", "Ignored names (.ign2)"),
            ("skipped_flevel", "Skipped (functionality level)"),
        ):
            print(f"  {label}: {s[key]}")
        for f in db.ignored_files:
            print(f"Ignored file (format not used): {f}")
        print(f"Rejected: {len(db.rejected)}")
        for r in db.rejected:
            print(f"  {r.file}:{r.line}: {r.reason}")
        print(f"Load time: {elapsed:.3f} s")
    return 1 if db.rejected else 0


def run_hash(args: argparse.Namespace) -> int:
    rc = 0
    for path in args.files:
        try:
            hs = {"md5": hashlib.md5(), "sha1": hashlib.sha1(), "sha256": hashlib.sha256()}
            size = 0
            with open(path, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    size += len(chunk)
                    for h in hs.values():
                        h.update(chunk)
        except OSError as exc:
            print(f"vmshield db hash: {path}: {exc.strerror or exc}", file=sys.stderr)
            rc = 2
            continue
        name = args.name or os.path.basename(path)
        if args.kind == "mdb":
            rc = max(rc, _print_mdb(path, name))
            continue
        for kind in ("md5", "sha1", "sha256"):
            if args.kind in (kind, "all"):
                print(f"{hs[kind].hexdigest()}:{size}:{name}")
    return rc


def _print_mdb(path: str, name: str) -> int:
    from vmshield.engines.file.signatures.execinfo import pe_info

    with open(path, "rb") as fh:
        data = fh.read()
    info = pe_info(data)
    if info is None:
        print(f"vmshield db hash: {path}: not a PE file", file=sys.stderr)
        return 2
    for off, size in info.sections:
        if size and off + size <= len(data):
            print(f"{size}:{hashlib.md5(data[off : off + size]).hexdigest()}:{name}")
    return 0
