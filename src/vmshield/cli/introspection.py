"""`vmshield introspection`: the host's relay between thin agents and the SVM — health and
per-VM counters, agent credentials (CA, per-VM certificates, enrolment tokens)."""

from __future__ import annotations

import argparse
import json
import secrets
import socket
import sys
import tomllib
from pathlib import Path

DEFAULT_CONTROL = "/run/vmshield/control.sock"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    ap = sub.add_parser(
        "introspection",
        help="agent relay of this host: health, counters, agent credentials",
        description="The introspection relay runs inside `vmshield svm` (one process per host). "
        "These commands inspect it and manage the credentials agents authenticate with.",
    )
    isub = ap.add_subparsers(dest="introspection_command", metavar="COMMAND")
    run = isub.add_parser(
        "run",
        help="run the relay in its own process, reaching the SVM over --svm",
        description="Accept agents and relay them to an SVM started with `vmshield svm "
        "--relay-listen EP` (by default `vmshield svm` hosts the relay itself).",
    )
    run.add_argument("--listen", action="append", default=[], help="agent endpoint (repeatable)")
    run.add_argument(
        "--svm", required=True, help="the SVM's relay endpoint: unix:PATH or tcp://H:P"
    )
    run.add_argument("--tokens", help="enrolment tokens TOML")
    run.add_argument("--control", default=DEFAULT_CONTROL)
    run.add_argument("--tls-cert", help="this service's certificate (tcp endpoints, both sides)")
    run.add_argument("--tls-key")
    run.add_argument("--tls-ca", help="CA of the agents' and the SVM's certificates")
    run.add_argument("--svm-name", help="name in the SVM's certificate")
    run.add_argument("--ready-file")
    run.add_argument("-v", "--verbose", action="store_true")
    run.set_defaults(func=_run)
    h = isub.add_parser("health", help="relay and scan-service health, per-VM counters (JSON)")
    h.add_argument("--control", default=DEFAULT_CONTROL)
    h.set_defaults(func=_health)
    ca = isub.add_parser("ca", help="create the CA that signs agent (and service) certificates")
    ca.add_argument("directory")
    ca.set_defaults(func=_ca)
    iss = isub.add_parser(
        "issue", help="issue a certificate: a VM's (client) or the service's (--server)"
    )
    iss.add_argument("--ca-dir", required=True)
    iss.add_argument(
        "name", help="VM identity (inventory name or BIOS UUID), or the service's host name"
    )
    iss.add_argument("--server", action="store_true")
    iss.add_argument(
        "--san", action="append", default=[], help="DNS name or IP of the service (repeatable)"
    )
    iss.add_argument("--out", default=".", help="directory for NAME.pem and NAME.key")
    iss.set_defaults(func=_issue)
    tok = isub.add_parser(
        "token", help="add an enrolment token for a VM to a tokens file; prints it"
    )
    tok.add_argument("--tokens", required=True, help="tokens TOML file (created if missing)")
    tok.add_argument("vm")
    tok.add_argument(
        "--uuid", default="", help="bind to this DMI UUID / machine id (else: first use)"
    )
    tok.set_defaults(func=_token)
    ap.set_defaults(func=lambda a: (ap.print_help(), 2)[1])


def control_request(path: str, obj: dict, timeout: float = 30.0):  # type: ignore[no-untyped-def,type-arg]
    """Send one request to the control socket; yields the JSON lines of the answer."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
    except OSError as exc:
        s.close()
        raise OSError(
            f"cannot reach the SVM control socket {path}: {exc.strerror or exc}"
        ) from None
    try:
        s.sendall(json.dumps(obj).encode() + b"\n")
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.strip():
                    yield json.loads(line)
        if buf.strip():
            yield json.loads(buf)
    finally:
        s.close()


def _run(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import signal

    from vmshield.introspection.auth import Authenticator, AuthError
    from vmshield.introspection.host import IntrospectionHost, IntrospectionOptions
    from vmshield.transport.endpoints import parse_endpoint
    from vmshield.transport.tls import client_context, server_context

    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s vmshield-introspection %(levelname)s %(message)s",
    )
    try:
        auth = Authenticator.load(args.tokens) if args.tokens else Authenticator()
        listen = [parse_endpoint(x) for x in args.listen]
        svm = parse_endpoint(args.svm)
        tls_files = (args.tls_cert, args.tls_key, args.tls_ca)
        need_tls = svm.scheme == "tcp" or any(ep.scheme == "tcp" for ep in listen)
        if need_tls and not all(tls_files):
            raise ValueError("tcp endpoints need --tls-cert, --tls-key and --tls-ca (mutual TLS)")
        opts = IntrospectionOptions(
            listen=listen, svm=svm, control=args.control, svm_server_name=args.svm_name
        )
        if all(tls_files):
            cert, key, ca = (Path(x) for x in tls_files)
            opts.agent_tls = server_context(cert, key, ca)
            opts.svm_tls = client_context(cert, key, ca)
    except (AuthError, ValueError, OSError) as exc:
        print(f"vmshield introspection: {exc}", file=sys.stderr)
        return 2
    host = IntrospectionHost(auth, opts)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        ready = asyncio.Event()
        task = asyncio.create_task(host.run(stop, ready))
        await asyncio.wait(
            {task, asyncio.create_task(ready.wait())}, return_when=asyncio.FIRST_COMPLETED
        )
        if ready.is_set() and args.ready_file:
            Path(args.ready_file).write_text("ready\n")
        await task

    asyncio.run(main())
    return 0


def _health(args: argparse.Namespace) -> int:
    try:
        for obj in control_request(args.control, {"cmd": "health"}):
            print(json.dumps(obj, indent=2))
    except OSError as exc:
        print(f"vmshield introspection: {exc}", file=sys.stderr)
        return 2
    return 0


def _ca(args: argparse.Namespace) -> int:
    from vmshield.transport.tls import create_ca

    d = Path(args.directory)
    if (d / "ca.key").exists():
        print(f"vmshield introspection: {d / 'ca.key'} exists; not overwriting", file=sys.stderr)
        return 2
    pem, key = create_ca(d)
    print(f"CA certificate {pem}\nCA key {key} (keep it off the guests)")
    return 0


def _issue(args: argparse.Namespace) -> int:
    from vmshield.transport.tls import issue

    d = Path(args.ca_dir)
    try:
        cert, key = issue(
            d / "ca.pem",
            d / "ca.key",
            args.name,
            Path(args.out),
            server=args.server,
            dns_names=args.san or ([args.name] if args.server else None),
        )
    except (OSError, ValueError) as exc:
        print(f"vmshield introspection: {exc}", file=sys.stderr)
        return 2
    print(f"certificate {cert}\nkey {key}")
    return 0


def _token(args: argparse.Namespace) -> int:
    path = Path(args.tokens)
    existing = tomllib.loads(path.read_text()) if path.exists() else {}
    if any(e.get("vm") == args.vm for e in existing.get("agent", [])):
        print(f"vmshield introspection: {path} already has a token for {args.vm}", file=sys.stderr)
        return 2
    token = secrets.token_hex(32)  # hex: never starts with "-" on a command line
    entry = f"\n[[agent]]\nvm = {json.dumps(args.vm)}\ntoken = {json.dumps(token)}\n"
    if args.uuid:
        entry += f"uuid = {json.dumps(args.uuid)}\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(entry)
    path.chmod(0o600)
    print(token)
    return 0
