"""Events from an SVM's spool through mutual TLS into the center, across a center outage and an
SVM restart: every event arrives exactly once."""

from __future__ import annotations

import ssl
import time
from pathlib import Path

import httpx
from sqlalchemy import func, select

from vmshield.center.db import EventRow
from vmshield.center.testing import RunningCenter, running_center
from vmshield.events import Event
from vmshield.integration.inventory import InventoryNode, diff
from vmshield.svm.center_client import CenterClient, CenterLink, enroll, wait_drained
from vmshield.svm.spool import Spool


def _count(rc: RunningCenter) -> tuple[int, int]:
    with rc.ctx.store.sessions() as s:
        n = s.scalar(select(func.count()).select_from(EventRow))
        distinct = s.scalar(select(func.count(func.distinct(EventRow.id))))
    return int(n or 0), int(distinct or 0)


def _events(start: int, n: int) -> list[Event]:
    return [
        Event(
            id=f"svm1-{i:08d}",
            event_type="file" if i % 2 else "alert",
            vm=f"vm{i % 3}",
            severity=1 + i % 4,
            data={"seq": i, "detection": f"Eicar-Test-{i % 5}"},
        )
        for i in range(start, start + n)
    ]


def _setup(rc: RunningCenter, admin: dict, svm_dir: Path) -> None:
    with rc.ctx.store.sessions.begin() as s:
        conn = rc.ctx.store.add_connection(s, "test", "lab", "static").id
    rc.ctx.store.apply_changes(conn, diff([], [InventoryNode("host", "h1", "esx1", None)]))
    api = httpx.Client(
        base_url=rc.url, verify=ssl.create_default_context(cafile=rc.ca_path), headers=admin
    )
    host_id = api.get("/api/v1/hosts").json()[0]["node_id"]
    token = api.post("/api/v1/deployments", json={"host_node_id": host_id}).json()[
        "enrolment_token"
    ]
    enroll(rc.url, token, svm_dir)
    api.close()


def test_spool_through_center_outage_and_svm_restart(
    tmp_path: Path, db_url: str | None, admin_factory
) -> None:
    center_dir = tmp_path / "center"
    svm_dir = tmp_path / "svm"
    spool_path = svm_dir / "spool.db"
    with running_center(center_dir, db_url) as rc:
        port = rc.port
        _setup(rc, admin_factory(rc), svm_dir)
        spool = Spool(spool_path)
        link = CenterLink(svm_dir, spool, heartbeat_every=1.0, batch=200)
        link.start()
        spool.put_many(_events(0, 700))
        assert wait_drained(spool, 60)
        assert _count(rc) == (700, 700)
    # Center down: the SVM keeps producing; nothing is lost, everything waits in the spool.
    spool.put_many(_events(700, 900))
    time.sleep(1.0)
    assert len(spool) == 900
    # The SVM restarts while the center is still down.
    link.stop()
    spool.close()
    spool = Spool(spool_path)
    assert len(spool) == 900
    spool.put_many(_events(1600, 400))
    with running_center(center_dir, db_url, port=port) as rc:
        link = CenterLink(svm_dir, spool, heartbeat_every=1.0, batch=250)
        link.start()
        assert wait_drained(spool, 60)
        link.stop()
        assert _count(rc) == (2000, 2000)
        # Re-sending a batch (an answer lost in transit) stores nothing twice.
        client = CenterClient(svm_dir)
        again = Spool(tmp_path / "again.db")
        again.put_many(_events(0, 10))
        client.ship_once(again)
        assert client.stats.duplicates == 10 and client.stats.accepted == 0
        assert _count(rc) == (2000, 2000)
        client.close()
        # Every event carries the SVM's host, whatever it claimed.
        with rc.ctx.store.sessions() as s:
            hosts = set(s.scalars(select(EventRow.host).distinct()))
        assert hosts == {"esx1"}
    spool.close()


def test_svm_cannot_write_events_as_another_host(
    live: RunningCenter, admin: dict, tmp_path: Path
) -> None:
    _setup(live, admin, tmp_path / "svm")
    client = CenterClient(tmp_path / "svm")
    spool = Spool(tmp_path / "s.db")
    spool.put(Event(event_type="file", host="esx99", id="forged-1"))
    client.ship_once(spool)
    api = httpx.Client(
        base_url=live.url, verify=ssl.create_default_context(cafile=live.ca_path), headers=admin
    )
    got = api.get("/api/v1/events/forged-1").json()
    assert got["host"] == "esx1" and got["event"]["host"] == "esx1"
    # Malformed events are refused one by one with the reason; the good ones in the batch stay.
    r = client.http.post(
        "/api/v1/svm/events",
        json={"events": [{"no_type": 1}, {"event_type": "file", "event_id": "ok-1"}, "junk"]},
    )
    body = r.json()
    assert body["accepted"] == 1
    assert [x["index"] for x in body["rejected"]] == [0, 2]
    r = client.http.post("/api/v1/svm/events", content=b"{not json")
    assert r.status_code == 422
    r = client.http.post("/api/v1/svm/events", content=b'{"events": ["\xee"]}')
    assert r.status_code == 422  # invalid UTF-8 (found by fuzzing): refused, not a 500
    api.close()
    client.close()


def test_spool_sent_as_soon_as_the_center_answers_again(
    tmp_path: Path, db_url: str | None, admin_factory
) -> None:
    """While the center is down the shipper backs off (few requests); once the center is back,
    the first answered heartbeat sends the spool at once, not at the end of the shipper's wait."""
    center_dir = tmp_path / "center"
    svm_dir = tmp_path / "svm"
    spool = Spool(svm_dir / "spool.db")
    with running_center(center_dir, db_url) as rc:
        port = rc.port
        _setup(rc, admin_factory(rc), svm_dir)
        # A long first backoff, so that "at once" and "after the backoff" cannot be confused.
        link = CenterLink(
            svm_dir, spool, heartbeat_every=0.5, batch=200, min_backoff=4.0, max_backoff=60.0
        )
        link.start()
        spool.put_many(_events(0, 10))
        assert wait_drained(spool, 30)
    try:
        spool.put_many(_events(10, 300))
        # Down: the shipper fails, waits 4 s, fails again and starts waiting 8 s.
        deadline = time.monotonic() + 30
        while link.client.stats.errors < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert link.client.stats.errors == 2 and link.ship_backoff == 8.0
        t_restart = time.monotonic()
        with running_center(center_dir, db_url, port=port) as rc:
            up = time.monotonic()
            assert wait_drained(spool, 30)
            drained = time.monotonic()
            assert _count(rc) == (310, 310)
        # At once (a heartbeat every 0.5 s), well before the shipper's own retry 8 s after its
        # second failure; and no request from the shipper in between.
        assert drained - up < 3.0, (up - t_restart, drained - up)
        assert drained - t_restart < 7.0
        assert link.client.stats.errors == 2
    finally:
        link.stop()
        spool.close()
