"""`vmshield svm`: the host's Security VM — file scan service (with the introspection relay by
default), network protection, and the center client."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vmshield.svm.config import SvmConfig


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    ap = sub.add_parser(
        "svm",
        help="run the Security VM services of this host",
        description="Scan files for the guests of this host (verdict cache shared by every VM, scan "
        "workers in separate processes) and relay their agents (introspection, same process).",
    )
    ap.add_argument("--config", help="SVM TOML file (profiles, database, workers…)")
    ap.add_argument(
        "--listen",
        action="append",
        default=[],
        help="agent endpoint: unix:PATH, tcp://H:P, vsock://any:P",
    )
    ap.add_argument("--control", default="/run/vmshield/control.sock", help="local admin socket")
    ap.add_argument(
        "--relay-listen",
        action="append",
        default=[],
        help="endpoint for separately running introspection services (unix:PATH, or tcp://H:P with mutual TLS)",
    )
    ap.add_argument("--tokens", help="enrolment tokens TOML ([[agent]] vm, token, uuid)")
    ap.add_argument("--tls-cert", help="service certificate (tcp endpoints)")
    ap.add_argument("--tls-key")
    ap.add_argument("--tls-ca", help="CA that signs the VMs' client certificates")
    ap.add_argument(
        "--db",
        action="append",
        default=[],
        help="signature database file or directory (repeatable)",
    )
    ap.add_argument("--eve", help="EVE JSON event log (default from config)")
    ap.add_argument("--backup-dir", help="backup copies before disinfection/deletion/quarantine")
    ap.add_argument("--workers", type=int, help="scan processes (default: one per core)")
    ap.add_argument(
        "--network-mode",
        choices=["standard", "monitoring", "none"],
        default="none",
        help="network protection of this host's bridge (vmshield.filter)",
    )
    ap.add_argument("--bridge", help="bridge for network protection")
    ap.add_argument("--ports", help="comma-separated bridge ports of the protected VMs")
    ap.add_argument(
        "--network-name", default="svm", help="names the filter's chains and sets (1-9 chars)"
    )
    ap.add_argument("--network-workers", type=int, default=2)
    ap.add_argument("--network-fail-closed", action="store_true")
    ap.add_argument(
        "--network-config", help="network protection TOML (policy, rules, URL database)"
    )
    ap.add_argument(
        "--enroll", nargs=2, metavar=("URL", "TOKEN"), help="enrol this SVM with the center first"
    )
    ap.add_argument(
        "--data-dir",
        help="SVM state (center enrolment, event spool); default /var/lib/vmshield/svm",
    )
    ap.add_argument("--scanner-factory", default=None, help=argparse.SUPPRESS)
    ap.add_argument(
        "--db-poll", type=float, default=5.0, help="seconds between checks for a new database"
    )
    ap.add_argument("--ready-file", help="create this file once listening")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vmshield.introspection.auth import Authenticator, AuthError
    from vmshield.svm.config import ConfigError, SvmConfig
    from vmshield.svm.host import HostOptions, HostService
    from vmshield.svm.workers import DEFAULT_FACTORY
    from vmshield.transport.endpoints import parse_endpoint
    from vmshield.transport.tls import server_context

    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s vmshield-svm %(levelname)s %(message)s",
    )
    try:
        cfg = SvmConfig.load(args.config) if args.config else SvmConfig()
        if args.db:
            cfg.db = args.db
        if args.eve:
            cfg.eve = args.eve
        if args.backup_dir:
            cfg.backup_dir = args.backup_dir
        if args.workers:
            cfg.workers = args.workers
        auth = Authenticator.load(args.tokens) if args.tokens else Authenticator()
        listen = [parse_endpoint(x) for x in args.listen]
        relay_listen = [parse_endpoint(x) for x in args.relay_listen]
        tls = None
        if any(ep.scheme == "tcp" for ep in listen + relay_listen):
            if not (args.tls_cert and args.tls_key and args.tls_ca):
                raise ConfigError(
                    "tcp endpoints need --tls-cert, --tls-key and --tls-ca (mutual TLS)"
                )
            tls = server_context(Path(args.tls_cert), Path(args.tls_key), Path(args.tls_ca))
    except (ConfigError, AuthError, ValueError, OSError) as exc:
        print(f"vmshield svm: {exc}", file=sys.stderr)
        return 2
    from vmshield.svm import center_client

    data_dir = Path(args.data_dir) if args.data_dir else center_client.DEFAULT_DATA_DIR
    if args.enroll:
        try:
            info = center_client.enroll(args.enroll[0], args.enroll[1], data_dir, cfg.host)
            print(f"vmshield svm: enrolled with {info['url']} as host {info['host']}")
        except Exception as exc:
            print(f"vmshield svm: enrolment failed: {exc}", file=sys.stderr)
            return 2
    enrolled = (data_dir / "center" / "center.json").exists()
    opts = HostOptions(
        listen=listen,
        control=args.control,
        tls=tls,
        scanner_factory=args.scanner_factory or DEFAULT_FACTORY,
        db_poll=args.db_poll,
        relay_listen=relay_listen,
    )

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        spool = link = None
        if enrolled:  # events go to the center (through a durable spool), profiles come from it
            from vmshield.svm.spool import Spool

            spool = Spool(data_dir / "spool.db", host=cfg.host)
        try:
            host = await asyncio.to_thread(HostService, cfg, auth, opts, spool)
        except Exception as exc:
            print(f"vmshield svm: cannot start the scan service: {exc}", file=sys.stderr)
            return 2
        follower = None
        if spool is not None:
            if args.network_mode != "none":  # the center's network policy, applied live
                from vmshield.svm.netpolicy import NetworkPolicyFollower

                follower = NetworkPolicyFollower(host.svm.emit, cfg.host)

            def on_config(c: dict) -> None:  # type: ignore[type-arg]
                host.apply_center_config(c)
                if follower is not None:
                    follower.on_center_config(c)

            link = center_client.CenterLink(
                data_dir,
                spool,
                on_config=on_config,
                status=lambda: {
                    "db_versions": {"file": host.svm.db_version},
                    "health": "ok",
                    "detail": host.relay.health(),
                },
            )
            link.start()
        net = forwarder = None
        if args.network_mode != "none":
            # Enrolled: the network protection writes its own EVE file, forwarded to the center.
            net_eve = _network_eve(cfg.eve) if spool is not None else cfg.eve
            try:
                net = await asyncio.to_thread(_start_network, args, cfg, net_eve)
            except Exception as exc:
                print(f"vmshield svm: network protection: {exc}", file=sys.stderr)
                host.svm.close()
                return 2
        if net is not None and follower is not None:
            await asyncio.to_thread(follower.attach, net)
        if net is not None and spool is not None:
            from vmshield.svm.evetail import EveForwarder

            forwarder = EveForwarder(net_eve, spool.put_many)
            forwarder.start()
        ready = asyncio.Event()
        task = asyncio.create_task(host.run(stop, ready))
        await asyncio.wait(
            {task, asyncio.create_task(ready.wait())}, return_when=asyncio.FIRST_COMPLETED
        )
        if ready.is_set() and args.ready_file:
            Path(args.ready_file).write_text("ready\n")
        await task
        if net is not None:
            with contextlib.suppress(Exception):
                net.stop()
        if forwarder is not None:
            forwarder.stop()
        if link is not None:
            center_client.wait_drained(spool, 5.0)  # type: ignore[arg-type]
            # Not link.stop(): its configuration thread may sit in a 25 s long-poll; all three
            # are daemon threads that go with the process, and the spool is durable anyway.
            link.stop_event.set()
            for t in link._threads:
                t.join(timeout=0.5)
        return 0

    return asyncio.run(main())


def _network_eve(eve: str) -> str:
    p = Path(eve)
    return str(p.with_name(p.stem + "-network" + (p.suffix or ".json")))


def _start_network(args: argparse.Namespace, cfg: SvmConfig, eve: str):  # type: ignore[no-untyped-def]
    """G's network protection (`vmshield.filter.service.NetworkProtection`) in this process."""
    from vmshield.filter.service import NetworkProtection, ProtectionConfig, load_config_file

    if not args.bridge or not args.ports:
        raise ValueError("--network-mode needs --bridge and --ports")
    pc = ProtectionConfig(
        name=args.network_name,
        bridge=args.bridge,
        ports=args.ports.split(","),
        mode=args.network_mode,
        workers=args.network_workers,
        fail_closed=args.network_fail_closed,
        eve=eve,
        host=cfg.host,
    )
    if args.network_config:
        load_config_file(args.network_config, pc)
    net = NetworkProtection(pc)
    net.start()
    return net
