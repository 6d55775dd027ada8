"""`vmshield agent`: the thin agent of one guest (fanotify on-access protection)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    ap = sub.add_parser(
        "agent",
        help="thin agent: on-access file protection of this guest",
        description="Intercept open, exec and save of files under the given paths (fanotify) and "
        "ask the host's introspection service for verdicts. Needs root.",
    )
    ap.add_argument("--config", help="agent TOML file ([agent] table; flags override it)")
    ap.add_argument(
        "--endpoint", help="unix:PATH, tcp://HOST:PORT (mutual TLS) or vsock://host:PORT"
    )
    ap.add_argument("--token", help="enrolment token (or @FILE to read it from a file)")
    ap.add_argument(
        "--path", action="append", default=[], help="directory tree to protect (repeatable)"
    )
    ap.add_argument(
        "--mount", action="append", default=[], help="whole mount to protect (repeatable)"
    )
    ap.add_argument(
        "--filesystem",
        action="append",
        default=[],
        help="whole filesystem (every mount of it, any mount namespace) to protect (repeatable)",
    )
    ap.add_argument(
        "--exclude-path", action="append", default=[], help="glob, glob:PAT or re:REGEX"
    )
    ap.add_argument(
        "--exclude-process",
        action="append",
        default=[],
        help="executable or comm: glob or re:REGEX",
    )
    ap.add_argument(
        "--exclude-pid", action="append", type=int, default=[], help="process id never intercepted"
    )
    ap.add_argument(
        "--deadline", type=float, help="seconds to wait for a verdict before the failure mode"
    )
    ap.add_argument(
        "--failure-mode", choices=["open", "closed"], help="until the service says otherwise"
    )
    ap.add_argument("--machine-id", help="identity to report instead of /etc/machine-id (lab VMs)")
    ap.add_argument(
        "--dmi-uuid", help="BIOS/DMI UUID to report instead of /sys/class/dmi/id/product_uuid"
    )
    ap.add_argument(
        "--prefetch",
        type=int,
        help="after a cold open, check this many following files of the directory ahead "
        "(default 16, 0 = off)",
    )
    ap.add_argument("--hostname", help="host name to report")
    ap.add_argument("--tls-cert", help="this VM's client certificate (TCP)")
    ap.add_argument("--tls-key")
    ap.add_argument("--tls-ca", help="CA that signed the introspection service's certificate")
    ap.add_argument(
        "--server-name", help="name in the service's certificate (default: endpoint host)"
    )
    ap.add_argument("--ready-file", help="create this file once the marks are in place")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.set_defaults(func=run)


def build_config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from vmshield.agent.agent import AgentConfig

    cfg = AgentConfig.load(args.config) if args.config else AgentConfig()
    if args.endpoint:
        cfg.endpoint = args.endpoint
    if args.token:
        cfg.token = (
            Path(args.token[1:]).read_text().strip() if args.token.startswith("@") else args.token
        )
    cfg.paths += args.path
    cfg.mounts += args.mount
    cfg.filesystems += args.filesystem
    cfg.exclude_paths += args.exclude_path
    cfg.exclude_processes += args.exclude_process
    cfg.exclude_pids += args.exclude_pid
    for name in (
        "deadline",
        "failure_mode",
        "machine_id",
        "dmi_uuid",
        "prefetch",
        "hostname",
        "tls_cert",
        "tls_key",
        "tls_ca",
        "server_name",
    ):
        v = getattr(args, name)
        if v is not None:
            setattr(cfg, name, v)
    cfg.validate()
    return cfg


def run(args: argparse.Namespace) -> int:
    from vmshield.agent.agent import Agent, ConfigError
    from vmshield.transport.tls import client_context

    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s vmshield-agent %(levelname)s %(message)s",
    )
    try:
        cfg = build_config(args)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"vmshield agent: {exc}", file=sys.stderr)
        return 2
    tls = None
    if cfg.endpoint.startswith("tcp://"):
        if not (cfg.tls_cert and cfg.tls_key and cfg.tls_ca):
            print(
                "vmshield agent: a tcp:// endpoint needs --tls-cert, --tls-key and --tls-ca",
                file=sys.stderr,
            )
            return 2
        tls = client_context(Path(cfg.tls_cert), Path(cfg.tls_key), Path(cfg.tls_ca))
    agent = Agent(cfg, tls)

    async def main() -> None:
        stop = asyncio.Event()
        ready = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        task = asyncio.create_task(agent.run(stop, ready))
        await asyncio.wait(
            {task, asyncio.create_task(ready.wait())}, return_when=asyncio.FIRST_COMPLETED
        )
        if ready.is_set() and args.ready_file:
            Path(args.ready_file).write_text("ready\n")
        await task

    try:
        asyncio.run(main())
    except OSError as exc:
        print(f"vmshield agent: {exc}", file=sys.stderr)
        return 2
    return 0
