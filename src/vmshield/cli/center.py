"""`vmshield center`: the administration center (API, console, SVM enrolment, events).

vmshield center [--data DIR] [--listen HOST:PORT] [--db URL]     serve (HTTPS)
vmshield center user add NAME --role ROLE [--password-stdin]
vmshield center token create --role ROLE [--name NAME]          prints the token
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

DEFAULT_DATA = "/var/lib/vmshield/center"
DEFAULT_LISTEN = "0.0.0.0:8443"


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "center",
        help="run the administration center (REST API, web console, SVM enrolment, events)",
        description="The administration center. Without a subcommand: serve HTTPS.",
    )
    _common(p)
    p.add_argument("--listen", default=DEFAULT_LISTEN, help="HOST:PORT (default %(default)s)")
    p.add_argument("--cert", type=Path, help="server certificate (PEM); default: generated")
    p.add_argument("--key", type=Path, help="server private key (PEM)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes sharing the port (replicas on one machine; default 1)",
    )
    p.set_defaults(func=_serve)
    sub = p.add_subparsers(dest="center_command", metavar="SUBCOMMAND")

    user = sub.add_parser("user", help="manage console users")
    usub = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    add = usub.add_parser("add", help="add a user (asks for the password)")
    _common(add, suppress=True)
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=["viewer", "operator", "administrator"])
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    add.set_defaults(func=_user_add)

    tok = sub.add_parser("token", help="manage API tokens")
    tsub = tok.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    create = tsub.add_parser("create", help="create an API token and print it")
    _common(create, suppress=True)
    create.add_argument("--role", required=True, choices=["viewer", "operator", "administrator"])
    create.add_argument("--name", default="", help="a label for the token")
    create.set_defaults(func=_token_create)


def _common(p: argparse.ArgumentParser, suppress: bool = False) -> None:
    # Accepted before or after the subcommand; SUPPRESS keeps the outer value when not repeated.
    default = argparse.SUPPRESS if suppress else None
    p.add_argument(
        "--data",
        type=Path,
        default=argparse.SUPPRESS
        if suppress
        else Path(os.environ.get("VMSHIELD_CENTER_DATA", DEFAULT_DATA)),
        help="data directory (keys, certificates, SQLite database)",
    )
    p.add_argument(
        "--db",
        default=default if suppress else os.environ.get("VMSHIELD_CENTER_DB"),
        help="database URL (default: SQLite in the data directory), "
        "e.g. postgresql+psycopg://user@host/dbname",
    )


def _open(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from vmshield.center.context import open_center

    return open_center(args.data, args.db)


def _serve(args: argparse.Namespace) -> int:
    from vmshield.center.app import serve

    host, sep, port = args.listen.rpartition(":")
    if not sep or not port.isdigit():
        print(f"vmshield center: --listen {args.listen!r} is not HOST:PORT", file=sys.stderr)
        return 2
    if bool(args.cert) != bool(args.key):
        print("vmshield center: --cert and --key go together", file=sys.stderr)
        return 2
    if args.workers < 1 or args.workers > 64:
        print("vmshield center: --workers must be 1-64", file=sys.stderr)
        return 2
    bind = host.strip("[]") or "0.0.0.0"
    print(
        f"vmshield center: https://{host or '0.0.0.0'}:{port}/  data {args.data}  "
        f"workers {args.workers}",
        file=sys.stderr,
    )
    if args.workers > 1:
        from vmshield.center.app import serve_workers

        serve_workers(args.data, args.db, bind, int(port), args.workers, args.cert, args.key)
        return 0
    c = _open(args)
    serve(c, bind, int(port), args.cert, args.key)
    return 0


def _user_add(args: argparse.Namespace) -> int:
    from vmshield.center import auth

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"Password for {args.name}: ")
        if getpass.getpass("Again: ") != password:
            print("vmshield center: passwords differ", file=sys.stderr)
            return 2
    c = _open(args)
    try:
        with c.store.sessions.begin() as s:
            auth.add_user(s, args.name, password, args.role, actor=f"cli:{getpass.getuser()}")
    except ValueError as exc:
        print(f"vmshield center: {exc}", file=sys.stderr)
        return 2
    print(f"user {args.name} added ({args.role})")
    return 0


def _token_create(args: argparse.Namespace) -> int:
    from vmshield.center import auth

    c = _open(args)
    with c.store.sessions.begin() as s:
        token, _row = auth.create_token(s, args.role, f"cli:{getpass.getuser()}", args.name)
    print(token)
    return 0
