"""Events in the center: query filters and paging, retention, SIEM export, metrics."""

from __future__ import annotations

import json
import re
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from vmshield.center.app import CenterContext
from vmshield.center.db import EventRow
from vmshield.center.export import ExportRunner, cef
from vmshield.center.pki import CenterPKI
from vmshield.events import format_timestamp

T0 = 1_790_000_000.0


def seed(center: CenterContext, n: int = 300) -> None:
    evs = []
    for i in range(n):
        e: dict[str, Any] = {
            "event_id": f"e{i:05d}",
            "timestamp": format_timestamp(T0 + i * 60),
            "event_type": ("alert", "file", "attack")[i % 3],
            "severity": 1 + i % 4,
            "host": f"esx{i % 2}",
            "vm": f"vm{i % 5}",
        }
        if i % 3 == 0:
            e["alert"] = {"signature": f"ET SCAN probe {i % 7}", "signature_id": 2000000 + i % 7}
            e["src_ip"] = "10.0.0.1"
        elif i % 3 == 1:
            e["file"] = {
                "path": f"/srv/f{i}",
                "detections": [{"name": f"Eicar-Test-{i % 4}"}],
                "action": "quarantine",
            }
        evs.append(e)
    res = center.store.ingest(evs)
    assert res.accepted == n and not res.rejected


def test_query_filters_and_paging(center: CenterContext, client: TestClient, tokens: dict) -> None:
    seed(center)
    v = tokens["viewer"]
    r = client.get("/api/v1/events", params={"vm": "vm1", "type": "file"}, headers=v).json()
    assert r["events"] and all(e["vm"] == "vm1" and e["event_type"] == "file" for e in r["events"])
    assert len(r["events"]) == len([i for i in range(300) if i % 5 == 1 and i % 3 == 1])
    r = client.get("/api/v1/events", params={"detection": "Eicar-Test-2"}, headers=v).json()
    assert {e["detection"] for e in r["events"]} == {"Eicar-Test-2"}
    r = client.get(
        "/api/v1/events", params={"detection": "ET SCAN probe 3", "host": "esx1"}, headers=v
    ).json()
    assert r["events"] and all(
        e["host"] == "esx1" and e["detection"] == "ET SCAN probe 3" for e in r["events"]
    )
    # Time range: [since, until), ISO 8601 or epoch.
    since = format_timestamp(T0 + 60 * 100).replace("+0000", "+00:00")
    r = client.get(
        "/api/v1/events", params={"since": since, "until": T0 + 60 * 110, "limit": 1000}, headers=v
    ).json()
    assert sorted(int(e["id"][1:]) for e in r["events"]) == list(range(100, 110))
    r = client.get("/api/v1/events", params={"severity": 1}, headers=v).json()
    assert r["events"] and {e["severity"] for e in r["events"]} == {1}
    # Paging: every event exactly once, newest first.
    seen: list[str] = []
    params: dict = {"limit": 70}
    while True:
        page = client.get("/api/v1/events", params=params, headers=v).json()
        seen += [e["id"] for e in page["events"]]
        if page["next"] is None:
            break
        params["before"] = page["next"]
    assert len(seen) == 300 and len(set(seen)) == 300
    assert seen[0] == "e00299"
    one = client.get("/api/v1/events/e00004", headers=v).json()
    assert one["event"]["file"]["path"] == "/srv/f4"
    assert client.get("/api/v1/events/nope", headers=v).status_code == 404
    assert client.get("/api/v1/events", params={"since": "yesterday"}, headers=v).status_code == 422


def test_awkward_text_stored_exactly(
    center: CenterContext, client: TestClient, tokens: dict
) -> None:
    weird = "tab\there\\back\nline \u00e9 \U0001f600 '\"; DROP TABLE events;--"
    res = center.store.ingest(
        [
            {"event_id": "w1", "event_type": "alert", "vm": weird, "alert": {"signature": weird}},
            {"event_id": "w2", "event_type": "file", "vm": "a\x00b"},
            {"event_id": "w3\ud800", "event_type": "file"},
        ]
    )
    assert res.accepted == 1 and [r["index"] for r in res.rejected] == [1, 2]
    got = client.get("/api/v1/events/w1", headers=tokens["viewer"]).json()
    assert got["vm"] == weird and got["detection"] == weird and got["event"]["vm"] == weird
    r = client.get("/api/v1/events", params={"vm": weird}, headers=tokens["viewer"]).json()
    assert [e["id"] for e in r["events"]] == ["w1"]


def test_ingest_is_idempotent(center: CenterContext) -> None:
    seed(center, 50)
    res = center.store.ingest(
        [{"event_id": "e00001", "event_type": "file"}, {"event_id": "new1", "event_type": "file"}]
    )
    assert (res.accepted, res.duplicates) == (1, 1)


def test_retention_by_age_count_and_size(
    center: CenterContext, client: TestClient, tokens: dict
) -> None:
    seed(center)
    adm = tokens["administrator"]
    assert (
        client.put(
            "/api/v1/settings/retention", json={"max_age_days": 1}, headers=tokens["operator"]
        ).status_code
        == 403
    )
    client.put("/api/v1/settings/retention", json={"max_age_days": 0.1}, headers=adm)  # 144 minutes
    with center.store.sessions.begin() as s:
        removed = center.store.retention(s, now=T0 + 300 * 60)
    # Events older than now - 144 min are gone: i < 300 - 144 = 156.
    assert removed == 156
    client.put("/api/v1/settings/retention", json={"max_events": 100}, headers=adm)
    r = client.post("/api/v1/settings/retention/run", headers=adm).json()
    assert r["removed"] == 44
    page = client.get("/api/v1/events", params={"limit": 1000}, headers=adm).json()["events"]
    assert len(page) == 100 and page[-1]["id"] == "e00200"
    with center.store.sessions() as s:
        sizes = [
            x for (x,) in s.execute(EventRow.__table__.select().with_only_columns(EventRow.size))
        ]
    budget_mb = sum(sizes[:40]) / 1024 / 1024
    client.put("/api/v1/settings/retention", json={"max_mb": budget_mb}, headers=adm)
    client.post("/api/v1/settings/retention/run", headers=adm)
    left = client.get("/api/v1/events", params={"limit": 1000}, headers=adm).json()["events"]
    assert 35 <= len(left) <= 41
    assert left[0]["id"] == "e00299"


def test_cef_format() -> None:
    line = cef(
        {
            "event_type": "alert",
            "severity": 1,
            "event_id": "x1",
            "alert": {"signature": "A|B=C", "signature_id": 7},
            "src_ip": "10.0.0.1",
            "vm": "web\n1",
        }
    )
    assert line.startswith("CEF:0|vmshield|vmshield|")
    assert "|7|A\\|B=C|10|" in line
    assert "src=10.0.0.1" in line and "cs1=web\\n1" in line and "externalId=x1" in line


def _mark_settled(center: CenterContext) -> None:
    with center.store.sessions.begin() as s:
        s.execute(update(EventRow).values(received_at=time.time() - 60))


def test_export_syslog_udp_tcp_tls_and_jsonl(
    center: CenterContext, client: TestClient, tokens: dict, tmp_path: Path
) -> None:
    adm = tokens["administrator"]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(10)
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    tls_raw = socket.socket()
    tls_raw.bind(("127.0.0.1", 0))
    tls_raw.listen()
    pki = CenterPKI(tmp_path / "siem")
    pki.ensure()
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(pki.server_cert_path, pki.server_key_path)
    received: dict[str, bytes] = {"tcp": b"", "tls": b""}

    def serve(sock: socket.socket, name: str, wrap: bool) -> None:
        conn, _ = sock.accept()
        if wrap:
            conn = sctx.wrap_socket(conn, server_side=True)
        conn.settimeout(10)
        try:
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                received[name] += chunk
        except (TimeoutError, OSError) as exc:
            received[name + "_err"] = repr(exc).encode()
        conn.close()

    threads = [
        threading.Thread(target=serve, args=(tcp, "tcp", False), daemon=True),
        threading.Thread(target=serve, args=(tls_raw, "tls", True), daemon=True),
    ]
    for t in threads:
        t.start()
    seed(center, 30)
    jsonl = tmp_path / "events.jsonl"
    for body in (
        {
            "name": "u",
            "kind": "syslog",
            "transport": "udp",
            "address": f"127.0.0.1:{udp.getsockname()[1]}",
            "from_start": True,
        },
        {
            "name": "t",
            "kind": "syslog",
            "transport": "tcp",
            "address": f"127.0.0.1:{tcp.getsockname()[1]}",
            "fmt": "json",
            "from_start": True,
        },
        {
            "name": "s",
            "kind": "syslog",
            "transport": "tls",
            "address": f"127.0.0.1:{tls_raw.getsockname()[1]}",
            "ca_pem": pki.ca_pem().decode(),
            "from_start": True,
        },
        {"name": "j", "kind": "jsonl", "address": str(jsonl), "from_start": True},
    ):
        r = client.post("/api/v1/exporters", json=body, headers=adm)
        assert r.status_code == 201, r.text
    bad = client.post(
        "/api/v1/exporters", json={"name": "b", "kind": "syslog", "address": "nohost"}, headers=adm
    )
    assert bad.status_code == 422 and "host:port" in bad.text
    _mark_settled(center)
    runner = ExportRunner(center.store, center.metrics, batch=7)
    assert runner.run_once() == 4 * 30
    assert runner.run_once() == 0  # cursors advanced: nothing twice
    runner.close()
    dgrams = [udp.recv(65536) for _ in range(30)]
    assert all(
        re.match(
            rb"<\d+>1 \d{4}-\d\d-\d\dT[\d:.]+\+00:00 esx\d vmshield - \w+ - \xef\xbb\xbfCEF:0\|", d
        )
        for d in dgrams
    )
    for t in threads:
        t.join(15)
    # Octet-counted frames (RFC 6587 / 5425): "<len> <msg>" back to back.
    framed = {}
    for name in ("tcp", "tls"):
        buf, frames = received[name], []
        while buf:
            n, _, rest = buf.partition(b" ")
            frames.append(rest[: int(n)])
            buf = rest[int(n) :]
        assert len(frames) == 30, (name, received.get(name + "_err"))
        framed[name] = frames
    assert json.loads(framed["tcp"][0].split(b"\xef\xbb\xbf", 1)[1])["event_id"] == "e00000"
    assert b"CEF:0|" in framed["tls"][29]
    lines = jsonl.read_text().splitlines()
    assert [json.loads(x)["event_id"] for x in lines] == [f"e{i:05d}" for i in range(30)]
    metrics = client.get("/metrics", headers=tokens["viewer"]).text
    assert 'vmshield_center_events_exported_total{exporter="j"} 30.0' in metrics
    assert "vmshield_center_events_stored 30.0" in metrics
    assert 'vmshield_center_request_seconds_count{route="/api/v1/exporters"}' in metrics


def test_export_waits_for_an_unreachable_siem(
    center: CenterContext, client: TestClient, tokens: dict
) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    client.post(
        "/api/v1/exporters",
        json={
            "name": "t",
            "kind": "syslog",
            "transport": "tcp",
            "address": f"127.0.0.1:{port}",
            "from_start": True,
        },
        headers=tokens["administrator"],
    )
    seed(center, 5)
    _mark_settled(center)
    runner = ExportRunner(center.store)
    assert runner.run_once() == 0
    x = client.get("/api/v1/exporters", headers=tokens["administrator"]).json()[0]
    assert x["cursor"] == 0 and "Connection" in x["last_error"]


@pytest.mark.parametrize("n", [0])
def test_metrics_require_a_token(client: TestClient, n: int) -> None:
    assert client.get("/metrics").status_code == 401
