"""`vmshield url`: canonical forms, lookup expressions, checks and database builds.

Exit codes as the other checkers: 0 nothing listed / success, 1 a URL is listed, 2 an error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from vmshield.engines.net.urls import (
    CATEGORIES,
    FeedError,
    UrlDatabase,
    UrlDatabaseError,
    UrlError,
    build_database,
    canonicalize,
    url_expressions,
)
from vmshield.engines.net.urls.feeds import FEEDS

MAX_REJECTED_SHOWN = 50


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "url",
        help="malicious and phishing URL database: canonicalize, check, build",
        description="Safe Browsing style URL canonicalization and the malicious/phishing URL "
        "database.",
    )
    sub = p.add_subparsers(dest="url_command", metavar="ACTION")

    c = sub.add_parser("canon", help="print the canonical form of each URL")
    c.add_argument("urls", nargs="+", metavar="URL")
    c.set_defaults(func=_canon)

    e = sub.add_parser("expressions", help="print the lookup expressions of a URL, one a line")
    e.add_argument("url", metavar="URL")
    e.add_argument("--hash", action="store_true", help="also print the SHA-256 of each")
    e.set_defaults(func=_expressions)

    k = sub.add_parser("check", help="check URLs (or host names) against a database")
    k.add_argument("--db", required=True, metavar="FILE")
    k.add_argument("--host", action="store_true", help="arguments are host names (DNS, SNI)")
    k.add_argument("--json", action="store_true", help="one JSON object per URL")
    k.add_argument(
        "urls",
        nargs="+",
        metavar="URL",
        help="URLs or host names; - reads them from stdin, one a line",
    )
    k.set_defaults(func=_check)

    b = sub.add_parser("build", help="build a database from feed files")
    b.add_argument("--feed", choices=FEEDS, default="plain", help="format of the FILEs")
    b.add_argument(
        "--category",
        choices=sorted(CATEGORIES),
        help="category of the entries (default: malicious for plain, malware for urlhaus, "
        "phishing for phishtank and openphish)",
    )
    b.add_argument(
        "--trusted", action="append", default=[], metavar="FILE", help="plain list that wins"
    )
    b.add_argument(
        "--list",
        action="append",
        default=[],
        metavar="CATEGORY:FILE",
        help="a plain list of one category (e.g. gambling:ut1/gambling/domains), repeatable; "
        f"categories: {', '.join(CATEGORIES)}",
    )
    b.add_argument("-o", "--output", required=True, metavar="DB")
    b.add_argument(
        "files",
        nargs="*",
        metavar="FILE",
        help="feed files in the --feed format; FORMAT:FILE (e.g. phishtank:online-valid.json) "
        "mixes formats in one database",
    )
    b.set_defaults(func=_build)

    i = sub.add_parser("info", help="describe a database file")
    i.add_argument("db", metavar="DB")
    i.set_defaults(func=_info)

    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _canon(args: argparse.Namespace) -> int:
    rc = 0
    for url in args.urls:
        try:
            print(canonicalize(url))
        except UrlError as exc:
            print(f"vmshield url: {exc}", file=sys.stderr)
            rc = 2
    return rc


def _expressions(args: argparse.Namespace) -> int:
    import hashlib

    try:
        exprs = url_expressions(args.url)
    except UrlError as exc:
        print(f"vmshield url: {exc}", file=sys.stderr)
        return 2
    for ex in exprs:
        if args.hash:
            print(f"{hashlib.sha256(ex.encode('latin-1')).hexdigest()}  {ex}")
        else:
            print(ex)
    return 0


def _check(args: argparse.Namespace) -> int:
    try:
        db = UrlDatabase(args.db)
    except UrlDatabaseError as exc:
        print(f"vmshield url: {exc}", file=sys.stderr)
        return 2
    listed = errors = False
    urls = args.urls
    if urls == ["-"]:
        urls = (line.strip() for line in sys.stdin if line.strip())
    with db:
        for url in urls:
            try:
                v = db.verdict_host(url) if args.host else db.verdict_url(url)
            except UrlError as exc:
                print(f"vmshield url: {exc}", file=sys.stderr)
                errors = True
                continue
            cats: list[str] = []
            expr: str | None = None
            if v is None:
                status = "clean"
            elif v.trusted:
                status, expr = "trusted", v.expression
            else:
                status, cats, expr = "listed", list(v.categories), v.expression
                listed = True
            if args.json:
                print(
                    json.dumps(
                        {"url": url, "verdict": status, "categories": cats, "expression": expr}
                    )
                )
            elif status == "listed":
                print(f"{url}: LISTED {','.join(cats)} (matched {expr})")
            elif status == "trusted":
                print(f"{url}: trusted (matched {expr})")
            else:
                print(f"{url}: clean")
    return 1 if listed else 2 if errors else 0


def _build(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    try:
        lists = []
        for item in args.list:
            cat, sep, path = item.partition(":")
            if not sep or not path:
                raise ValueError(f"--list {item!r}: expected CATEGORY:FILE")
            lists.append((cat, path))
        if not args.files and not lists:
            raise ValueError("nothing to build: give feed FILEs or --list CATEGORY:FILE")
        report = build_database(
            [_feed_and_file(args.feed, f) for f in args.files],
            args.output,
            category=args.category,
            trusted=args.trusted,
            lists=lists,
        )
    except (FeedError, OSError, ValueError) as exc:
        print(f"vmshield url: {exc}", file=sys.stderr)
        return 2
    for r in report.rejected[:MAX_REJECTED_SHOWN]:
        print(f"rejected: {r}", file=sys.stderr)
    if len(report.rejected) > MAX_REJECTED_SHOWN:
        print(
            f"rejected: ... and {len(report.rejected) - MAX_REJECTED_SHOWN} more lines",
            file=sys.stderr,
        )
    s = report.stats
    cats = ", ".join(f"{k} {v}" for k, v in s.per_category.items() if v)
    print(
        f"{args.output}: {s.entries} entries ({cats or 'none'}; trusted {s.trusted}), "
        f"{report.accepted} feed lines accepted, {len(report.rejected)} rejected, "
        f"{time.perf_counter() - t0:.2f} s"
    )
    return 0


def _feed_and_file(default: str, arg: str) -> tuple[str, str]:
    fmt, sep, path = arg.partition(":")
    if sep and fmt in FEEDS and path:
        return fmt, path
    return default, arg


def _info(args: argparse.Namespace) -> int:
    try:
        db = UrlDatabase(args.db)
    except UrlDatabaseError as exc:
        print(f"vmshield url: {exc}", file=sys.stderr)
        return 2
    with db:
        built = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(db.built))
        print(f"{args.db}: version {db.version}, built {built}")
        print(f"  entries {db.entries} (trusted {db.trusted_entries})")
        for name, count in db.metadata.get("categories", {}).items():
            if count:
                print(f"  {name} {count}")
        for src in db.metadata.get("sources", []):
            print(
                f"  source {src.get('file')} ({src.get('feed')}{', trusted' if src.get('trusted') else ''}): "
                f"{src.get('entries')} entries, {src.get('rejected')} rejected"
            )
    return 0
