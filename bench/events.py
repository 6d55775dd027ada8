"""Sustained event ingestion through the center's API, from 4 concurrent SVM clients.

Each client is a separate process holding an enrolled SVM's certificate (mutual TLS, as in
production) and posts batches of EVE events to /api/v1/svm/events as fast as the center answers.
The center runs as its own process (`vmshield center`). Prints events/s (counted in the database
afterwards, so only stored events count) and the API's latency percentiles per batch.

    .venv/bin/python bench/events.py [--seconds 20] [--batch 1000] [--clients 4] [--db both]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _make_batch(client: int, n: int, counter: int) -> bytes:
    from vmshield.events import now_timestamp

    ts = now_timestamp()
    evs = []
    for i in range(n):
        k = counter + i
        kind = k % 3
        ev: dict[str, Any] = {
            "event_id": f"{client}-{uuid.uuid4().hex}",
            "timestamp": ts,
            "event_type": ("alert", "file", "attack")[kind],
            "severity": 1 + k % 4,
            "vm": f"vm-{client}-{k % 50}",
        }
        if kind == 0:
            ev.update(
                src_ip="10.1.2.3",
                src_port=40000 + k % 20000,
                dest_ip="10.1.9.9",
                dest_port=80,
                proto="TCP",
                alert={"signature": "ET WEB_SERVER probe", "signature_id": 2010000 + k % 50},
            )
        elif kind == 1:
            ev["file"] = {
                "path": f"/home/user/downloads/file{k}.exe",
                "sha256": "ab" * 32,
                "action": "quarantine",
                "detections": [{"name": "Win.Trojan.Agent-12345"}],
            }
        else:
            ev.update(src_ip="10.9.9.9", attack={"name": "tcp_syn_flood", "action": "block"})
        evs.append(ev)
    return msgspec.json.encode({"events": evs})


def _client(idx: int, svm_dir: str, seconds: float, batch: int, q: Any, start_at: float) -> None:
    from vmshield.svm.center_client import CenterClient

    c = CenterClient(svm_dir)
    # Bodies are prepared before the clock starts, so the client's own JSON cost does not count.
    # Enough for ~8 batches of 1000 per second and client (about 64 MB per client).
    n_bodies = max(8, min(400, int(seconds * 8 * 1000 / batch)))
    bodies = [_make_batch(idx, batch, j * batch) for j in range(n_bodies)]
    while time.time() < start_at:
        time.sleep(0.01)
    lat: list[float] = []
    sent = 0
    j = 0
    end = start_at + seconds
    errors = 0
    while time.time() < end:
        body = bodies[j % len(bodies)]
        if j >= len(bodies):  # fresh ids, else everything after the first round is a duplicate
            body = _make_batch(idx, batch, j * batch)
        t0 = time.perf_counter()
        try:
            r = c.http.post(
                "/api/v1/svm/events", content=body, headers={"content-type": "application/json"}
            )
            r.raise_for_status()
            sent += int(r.json()["accepted"])
        except httpx.HTTPError:
            errors += 1
        lat.append(time.perf_counter() - t0)
        j += 1
    q.put({"sent": sent, "lat": lat, "errors": errors})
    c.close()


def run(db: str, seconds: float, batch: int, clients: int, workers: int = 1) -> dict[str, Any]:
    import contextlib

    from sqlalchemy import func, select

    from vmshield.center import auth
    from vmshield.center.app import open_center
    from vmshield.center.db import EventRow
    from vmshield.center.testing import postgres_database
    from vmshield.integration.inventory import InventoryNode, diff
    from vmshield.svm.center_client import enroll

    tmp = Path(tempfile.mkdtemp(prefix="vmshield-bench-events-"))
    cm = postgres_database() if db == "postgres" else contextlib.nullcontext(None)
    with cm as url:
        ctx = open_center(tmp / "center", url)
        with ctx.store.sessions.begin() as s:
            conn = ctx.store.add_connection(s, "bench", "lab", "static").id
        ctx.store.apply_changes(
            conn,
            diff([], [InventoryNode("host", f"h{i}", f"esx{i}", None) for i in range(clients)]),
        )
        tokens = []
        with ctx.store.sessions.begin() as s:
            for h in ctx.store.hosts_status(s):
                tokens.append(ctx.store.create_deployment(s, "bench", h["node_id"])[0])
            auth.create_token(s, "viewer", "bench")
        port = _free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        args = [
            sys.executable,
            "-m",
            "vmshield",
            "center",
            "--data",
            str(tmp / "center"),
            "--listen",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
        ]
        if url:
            args += ["--db", url]
        server = subprocess.Popen(args, env=env, stderr=subprocess.DEVNULL)
        try:
            base = f"https://127.0.0.1:{port}"
            deadline = time.time() + 60
            while True:
                try:
                    httpx.get(base + "/healthz", verify=False, timeout=2)
                    break
                except httpx.HTTPError:
                    if time.time() > deadline:
                        raise RuntimeError("center did not start") from None
                    time.sleep(0.2)
            for i, tok in enumerate(tokens):
                enroll(base, tok, tmp / f"svm{i}")
            q: Any = mp.Queue()
            start_at = time.time() + 3.0
            procs = [
                mp.Process(
                    target=_client, args=(i, str(tmp / f"svm{i}"), seconds, batch, q, start_at)
                )
                for i in range(clients)
            ]
            for p in procs:
                p.start()
            results = [q.get(timeout=seconds + 300) for _ in procs]
            wall = time.time() - start_at
            for p in procs:
                p.join()
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
        with ctx.store.sessions() as s:
            stored = int(s.scalar(select(func.count()).select_from(EventRow)) or 0)
        ctx.store.engine.dispose()
    lat = sorted(x for r in results for x in r["lat"])
    sent = sum(r["sent"] for r in results)
    q_ = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [lat[0]] * 99
    return {
        "db": db,
        "workers": workers,
        "clients": clients,
        "batch": batch,
        "seconds": round(wall, 1),
        "accepted": sent,
        "stored": stored,
        "events_per_s": round(stored / wall),
        "batches": len(lat),
        "p50_ms": round(q_[49] * 1000, 1),
        "p99_ms": round(q_[98] * 1000, 1),
        "errors": sum(r["errors"] for r in results),
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    ap.add_argument("--workers", type=int, default=1, help="center worker processes")
    a = ap.parse_args()
    dbs = ["sqlite", "postgres"] if a.db == "both" else [a.db]
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    for db in dbs:
        r = run(db, a.seconds, a.batch, a.clients, a.workers)
        print(
            f"{r['db']:8s} {r['workers']} center workers, {r['clients']} clients x batch {r['batch']}: {r['events_per_s']:>7,} events/s "
            f"({r['stored']:,} stored, {r['accepted']:,} acknowledged in {r['seconds']} s), "
            f"API latency per batch p50 {r['p50_ms']} ms p99 {r['p99_ms']} ms, errors {r['errors']}"
        )
        if r["stored"] != r["accepted"]:
            print(f"  MISMATCH: acknowledged {r['accepted']} but stored {r['stored']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
