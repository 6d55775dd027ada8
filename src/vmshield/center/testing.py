"""Helpers for tests and benchmarks: a throwaway PostgreSQL database on the local server (started,
or installed and started, when none runs), and a center serving HTTPS in a thread."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PG_HOST = os.environ.get("VMSHIELD_TEST_PGHOST", "127.0.0.1")
PG_PORT = int(os.environ.get("VMSHIELD_TEST_PGPORT", "5432"))
PG_USER = os.environ.get("VMSHIELD_TEST_PGUSER", "postgres")


def _pg_connect(dbname: str = "postgres") -> Any:
    import psycopg

    return psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=dbname, autocommit=True, connect_timeout=5
    )


def ensure_postgres() -> None:
    """Make sure the local server answers: start the Debian cluster, installing it if needed."""
    try:
        _pg_connect().close()
        return
    except Exception:
        pass
    if not Path("/etc/postgresql").is_dir() or not os.listdir("/etc/postgresql"):
        if os.geteuid() != 0:
            raise RuntimeError("PostgreSQL is not installed and we are not root to install it")
        subprocess.run(
            ["flock", "/tmp/vmshield-apt.lock", "apt-get", "install", "-y", "postgresql"],
            check=True,
            capture_output=True,
            timeout=600,
        )
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
        capture_output=True,
        timeout=120,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            _pg_connect().close()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A new database vmshield_test_<random>, dropped afterwards; yields its SQLAlchemy URL."""
    ensure_postgres()
    name = f"vmshield_test_{secrets.token_hex(6)}"
    with _pg_connect() as c:
        c.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        from sqlalchemy.pool import NullPool  # noqa: F401  (engines are disposed by callers)

        with _pg_connect() as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def database(kind: str, tmp: Path) -> Iterator[str | None]:
    """'sqlite' -> None (the center's default file in its data dir); 'postgres' -> a URL."""
    if kind == "sqlite":
        yield None
    else:
        with postgres_database() as url:
            yield url


class RunningCenter:
    def __init__(self, ctx: Any, server: Any, thread: threading.Thread) -> None:
        self.ctx = ctx
        self.server = server
        self.thread = thread
        sock = server.servers[0].sockets[0]
        self.port = sock.getsockname()[1]
        self.url = f"https://127.0.0.1:{self.port}"

    @property
    def ca_path(self) -> str:
        return str(self.ctx.pki.ca_cert_path)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=2)
        if self.thread.is_alive():  # idle keep-alive connections of test clients: do not wait
            self.server.force_exit = True
            self.thread.join(timeout=15)


@contextlib.contextmanager
def running_center(
    data_dir: Path, db_url: str | None = None, port: int = 0
) -> Iterator[RunningCenter]:
    from vmshield.center.app import open_center, serve

    ctx = open_center(data_dir, db_url)
    ready = threading.Event()
    box: list[Any] = []
    t = threading.Thread(
        target=serve,
        args=(ctx, "127.0.0.1", port),
        kwargs={"ready": ready, "server_box": box},
        daemon=True,
        name="center",
    )
    t.start()
    if not ready.wait(30) or not box or not box[0].started:
        raise RuntimeError("center did not start")
    rc = RunningCenter(ctx, box[0], t)
    try:
        yield rc
    finally:
        rc.stop()
        ctx.store.engine.dispose()


def free_data_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
