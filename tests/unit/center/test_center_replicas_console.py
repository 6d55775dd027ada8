"""Replicas sharing one database; services registration; console sessions, CSRF and login limits."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from vmshield.center import auth
from vmshield.center.app import CenterContext, create_app, open_center


@pytest.mark.postgres
def _find(pattern: str, text: str) -> str:
    """The first group of `pattern` in a page (the test fails if the page lacks it)."""
    m = re.search(pattern, text)
    assert m is not None, pattern
    return m.group(1)


def test_two_replicas_share_one_postgres(tmp_path: Path) -> None:
    from vmshield.center.testing import postgres_database

    with postgres_database() as url:
        a = open_center(tmp_path / "data", url)
        b = open_center(tmp_path / "data", url)  # migrations are idempotent across replicas
        with a.store.sessions.begin() as s:
            token, _ = auth.create_token(s, "operator", "test")
            auth.add_user(s, "ann", "long-password-1", "operator", "test")
        h = {"Authorization": f"Bearer {token}"}
        with (
            TestClient(create_app(a), base_url="https://a") as ca,
            TestClient(create_app(b), base_url="https://b") as cb,
        ):
            # A token made through one replica works on the other.
            assert cb.get("/api/v1/whoami", headers=h).json()["role"] == "operator"
            r = ca.post("/api/v1/profiles/file", json={"name": "p1", "settings": {}}, headers=h)
            assert r.status_code == 201
            assert [p["name"] for p in cb.get("/api/v1/profiles/file", headers=h).json()] == ["p1"]
            # A console session opened on one replica is valid on the other.
            r = ca.post(
                "/login",
                data={"name": "ann", "password": "long-password-1"},
                follow_redirects=False,
            )
            cookie = r.cookies.get("vms_session")
            assert cookie
            cb.cookies.set("vms_session", cookie)
            assert cb.get("/inventory").status_code == 200
            with a.store.sessions() as s1, b.store.sessions() as s2:
                assert a.store.config_version(s1) == b.store.config_version(s2)
        for c in (a, b):
            c.store.engine.dispose()


def test_service_registration_fixes_traffic_mode(client: TestClient, tokens: dict) -> None:
    adm = tokens["administrator"]
    r = client.post("/api/v1/services", json={"kind": "network"}, headers=adm)
    assert r.status_code == 422 and "traffic_mode" in r.text
    assert (
        client.post(
            "/api/v1/services", json={"kind": "network", "traffic_mode": "standard"}, headers=adm
        ).status_code
        == 201
    )
    r = client.post(
        "/api/v1/services", json={"kind": "network", "traffic_mode": "monitoring"}, headers=adm
    )
    assert r.status_code == 409 and "unregister it first" in r.json()["detail"]
    assert client.post("/api/v1/services", json={"kind": "file"}, headers=adm).status_code == 201
    assert (
        client.post(
            "/api/v1/services", json={"kind": "file", "traffic_mode": "standard"}, headers=adm
        ).status_code
        == 422
    )
    assert client.delete("/api/v1/services/network", headers=adm).status_code == 204
    assert (
        client.post(
            "/api/v1/services", json={"kind": "network", "traffic_mode": "monitoring"}, headers=adm
        ).status_code
        == 201
    )
    svcs = {
        s["kind"]: s["traffic_mode"]
        for s in client.get("/api/v1/services", headers=tokens["viewer"]).json()
    }
    assert svcs == {"network": "monitoring", "file": None}
    assert (
        client.post(
            "/api/v1/services", json={"kind": "file"}, headers=tokens["operator"]
        ).status_code
        == 403
    )


def _login(client: TestClient, name: str, password: str) -> str:
    r = client.post("/login", data={"name": name, "password": password}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return r.headers["location"]


def test_console_roles_csrf_and_profile_form(center: CenterContext, client: TestClient) -> None:
    with center.store.sessions.begin() as s:
        auth.add_user(s, "view", "viewer-password", "viewer", "test")
        auth.add_user(s, "op", "operator-password", "operator", "test")
    assert client.get("/inventory", follow_redirects=False).headers["location"] == "/login"
    _login(client, "view", "viewer-password")
    page = client.get("/profiles/file/new")
    assert page.status_code == 200
    csrf = _find(r'name="csrf" value="([^"]+)"', page.text)
    r = client.post("/profiles/file/new", data={"csrf": csrf, "name": "x", "level": "high"})
    assert r.status_code == 403  # a viewer cannot change anything
    client.cookies.clear()
    _login(client, "op", "operator-password")
    page = client.get("/profiles/file/new")
    csrf = _find(r'name="csrf" value="([^"]+)"', page.text)
    form = {
        "csrf": csrf,
        "name": "Custom A",
        "level": "custom",
        "scan_archives": "on",
        "scan_sfx": "on",
        "scan_embedded": "on",
        "on_open": "on",
        "on_execute": "on",
        "on_close_write": "on",
        "backup_before_action": "on",
        "max_compound_mb": "8",
        "scan_time_limit_s": "0",
        "scope": "all",
        "action": "quarantine",
        "fallback": "delete",
        "detect_viruses": "on",
        "excl_extensions": ".log\nTMP\n",
        "excl_regexes": "^/proc/",
    }
    # Without the form token: refused.
    r = client.post("/profiles/file/new", data={**form, "csrf": "forged"})
    assert r.status_code == 403
    r = client.post("/profiles/file/new", data=form, follow_redirects=False)
    assert r.status_code == 303 and "saved" in r.headers["location"]
    with center.store.sessions() as s:
        from sqlalchemy import select

        from vmshield.center.db import Profile

        p = s.scalar(select(Profile).where(Profile.name == "Custom A"))
    assert p is not None
    own = p.settings["settings"]
    # Only what differs from the recommended preset is stored.
    assert (
        own["scan_archives"] is True
        and own["action"] == "quarantine"
        and own["fallback"] == "delete"
    )
    assert own["detect"] == ["viruses"] and own["exclusions"]["extensions"] == ["log", "tmp"]
    assert "scan_sfx" not in own
    bad = client.post(
        "/profiles/file/new",
        data={**form, "name": "B", "excl_regexes": "(oops"},
        follow_redirects=False,
    )
    assert "error=" in bad.headers["location"] and "regexes" in bad.headers["location"]
    page = client.get("/profiles/network/new")
    # The editor lists the URL database's categories, threat and content, each blocked,
    # reported or allowed; a new policy blocks the threat categories.
    for c in ("malware", "riskware", "gambling (content)", "social (content)"):
        assert f"<td>{c}</td>" in page.text, c
    assert "unknown" not in page.text
    assert 'name="url_malware">\n        <option value="block" selected' in page.text
    r = client.post(
        "/profiles/network/new",
        data={
            "csrf": csrf,
            "name": "N",
            "attack_detection": "on",
            "attack_action": "terminate_and_block",
            "block_minutes": "30",
            "ids_enabled": "on",
            "ids_action": "terminate",
            "ids_exploit": "on",
            "url_phishing": "block",
            "url_social": "allow",
            "failure_mode": "fail_closed",
            "exclusions": "10.0.0.0/8 do_not_block\nvlan 12 do_not_scan",
        },
        follow_redirects=False,
    )
    assert r.status_code == 303 and "saved" in r.headers["location"], r.headers["location"]
    # Operators cannot add connections; administrators can (below, in the API tests).
    r = client.post("/connections", data={"csrf": csrf, "name": "c", "kind": "static", "url": "/x"})
    assert r.status_code == 403
    audit = [a.action for a in _audit(center)]
    assert "file_profile.create" in audit and "network_profile.create" in audit


def _audit(center: CenterContext) -> list:
    from sqlalchemy import select

    from vmshield.center.db import AuditEntry

    with center.store.sessions() as s:
        return list(s.scalars(select(AuditEntry)))


def test_console_login_is_rate_limited(center: CenterContext, client: TestClient) -> None:
    with center.store.sessions.begin() as s:
        auth.add_user(s, "carl", "right-password", "viewer", "test")
    for _ in range(auth.LOGIN_MAX_FAILURES):
        r = client.post("/login", data={"name": "carl", "password": "nope"})
        assert "Wrong name or password" in r.text
    r = client.post(
        "/login", data={"name": "carl", "password": "right-password"}, follow_redirects=False
    )
    assert r.status_code == 200 and "Too many failed logins" in r.text
    assert "vms_session" not in r.cookies


def test_console_adds_a_connection(center: CenterContext, client: TestClient) -> None:
    with center.store.sessions.begin() as s:
        auth.add_user(s, "root1", "admin-password", "administrator", "test")
    _login(client, "root1", "admin-password")
    page = client.get("/inventory")
    csrf = _find(r'name="csrf" value="([^"]+)"', page.text)
    r = client.post(
        "/connections",
        data={
            "csrf": csrf,
            "name": "vc1",
            "kind": "vsphere",
            "url": "https://vc.example/sdk",
            "username": "svc",
            "password": "hunter2-secret",
        },
        follow_redirects=False,
    )
    assert r.status_code == 303 and "added" in r.headers["location"]
    page = client.get("/inventory").text
    assert "vc1" in page and "https://vc.example/sdk" in page and "hunter2-secret" not in page
    r = client.post(
        "/connections", data={"csrf": csrf, "name": "bad", "kind": "ftp"}, follow_redirects=False
    )
    assert "error=" in r.headers["location"] and "kind" in r.headers["location"]


def test_blocked_and_quarantine_pages_read_the_documented_events(
    center: CenterContext, client: TestClient
) -> None:
    import time as _t

    from vmshield.events import format_timestamp

    now = _t.time()
    center.store.ingest(
        [
            {
                "event_id": "b1",
                "event_type": "block",
                "timestamp": format_timestamp(now - 60),
                "src_ip": "10.231.7.200",
                "block": {
                    "action": "block_source",
                    "seconds": 600,
                    "scope": {"bridge": "br", "set": "lab1-block"},
                },
            },
            {
                "event_id": "b2",
                "event_type": "block",
                "timestamp": format_timestamp(now - 7200),
                "src_ip": "10.231.7.201",
                "block": {"action": "block_source", "seconds": 600},
            },
            {
                "event_id": "a1",
                "event_type": "attack",
                "timestamp": format_timestamp(now - 5),
                "src_ip": "10.0.0.66",
                "attack": {
                    "name": "Scan.Generic.PortScan.TCP",
                    "action": "block",
                    "block_minutes": 60,
                },
            },
            {
                "event_id": "a2",
                "event_type": "attack",
                "src_ip": "10.0.0.67",
                "attack": {"name": "DoS.Generic.Land", "action": "terminate"},
            },
            {
                "event_id": "f1",
                "event_type": "file",
                "action": "quarantine",
                "backup_id": "bk-77",
                "vm": "vm1",
                "file": {
                    "path": "/tmp/eicar.com",
                    "detections": [{"name": "Eicar-Test-Signature"}],
                },
            },
            {
                "event_id": "f2",
                "event_type": "file",
                "action": "deny",
                "vm": "vm1",
                "file": {"path": "/tmp/other.bin", "detections": [{"name": "X"}]},
            },
        ]
    )
    with center.store.sessions.begin() as s:
        auth.add_user(s, "v", "viewer-password", "viewer", "test")
    _login(client, "v", "viewer-password")
    page = client.get("/blocked").text
    rows = {
        ip: page.split(ip, 1)[1].split("</tr>", 1)[0]
        for ip in ("10.231.7.200", "10.231.7.201", "10.0.0.66")
    }
    assert ">blocked<" in rows["10.231.7.200"] and "lab1-block" in rows["10.231.7.200"]
    assert ">expired<" in rows["10.231.7.201"]
    assert ">blocked<" in rows["10.0.0.66"] and "Scan.Generic.PortScan.TCP" in rows["10.0.0.66"]
    assert "10.0.0.67" not in page  # terminate is not a block
    q = client.get("/quarantine").text
    assert "/tmp/eicar.com" in q and "bk-77" in q and "/tmp/other.bin" not in q


def test_console_users_and_tokens(center: CenterContext, client: TestClient) -> None:
    with center.store.sessions.begin() as s:
        auth.add_user(s, "boss", "admin-password", "administrator", "test")
        auth.add_user(s, "watcher", "viewer-password", "viewer", "test")
    _login(client, "watcher", "viewer-password")
    assert client.get("/users").status_code == 403
    client.cookies.clear()
    _login(client, "boss", "admin-password")
    page = client.get("/users").text
    csrf = _find(r'name="csrf" value="([^"]+)"', page)
    r = client.post(
        "/users",
        data={"csrf": csrf, "name": "newop", "role": "operator", "password": "new-op-password"},
        follow_redirects=False,
    )
    assert "added" in r.headers["location"]
    r = client.post(
        "/users",
        data={"csrf": csrf, "name": "x2", "role": "operator", "password": "short"},
        follow_redirects=False,
    )
    assert "error=" in r.headers["location"] and "password" in r.headers["location"]
    r = client.post("/tokens", data={"csrf": csrf, "name": "prometheus", "role": "viewer"})
    token = _find(r'id="new-token">(vms_[^<]+)<', r.text)
    assert client.get("/metrics", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    tid = _find(r"<tr><td>(\d+)</td><td>prometheus</td>", r.text)
    client.post(f"/tokens/{tid}/revoke", data={"csrf": csrf})
    assert client.get("/metrics", headers={"Authorization": f"Bearer {token}"}).status_code == 401
