"""Authentication and authorization of the REST API, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from vmshield.center import auth
from vmshield.center.app import create_app, open_center

MUTATIONS = [
    ("post", "/api/v1/profiles/file", {"name": "p", "settings": {}}),
    ("post", "/api/v1/users", {"name": "bob", "password": "longenough1", "role": "viewer"}),
    ("put", "/api/v1/inventory/nodes/1/assignment/file", {"mode": "exclude"}),
    ("post", "/api/v1/services", {"kind": "file"}),
    ("put", "/api/v1/settings/retention", {"max_events": 10}),
]


def test_no_token_is_401_everywhere(client: TestClient) -> None:
    for path in ("/api/v1/inventory", "/api/v1/events", "/api/v1/profiles/file", "/metrics"):
        r = client.get(path)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"] == "Bearer"
    for method, path, body in MUTATIONS:
        assert client.request(method, path, json=body).status_code == 401, path


def test_wrong_or_revoked_token_is_401(client: TestClient, tokens: dict) -> None:
    r = client.get("/api/v1/inventory", headers={"Authorization": "Bearer vms_nope"})
    assert r.status_code == 401
    me = client.get("/api/v1/whoami", headers=tokens["operator"]).json()
    assert me["role"] == "operator"
    token_id = int(me["actor"].split(":")[1].split("(")[0])
    r = client.delete(f"/api/v1/tokens/{token_id}", headers=tokens["administrator"])
    assert r.status_code == 204
    assert client.get("/api/v1/whoami", headers=tokens["operator"]).status_code == 401


def test_viewer_reads_but_cannot_change(client: TestClient, tokens: dict) -> None:
    v = tokens["viewer"]
    assert client.get("/api/v1/inventory", headers=v).status_code == 200
    assert client.get("/api/v1/events", headers=v).status_code == 200
    for method, path, body in MUTATIONS:
        r = client.request(method, path, json=body, headers=v)
        assert r.status_code == 403, (path, r.text)
        assert "needs" in r.json()["detail"]
    # Nothing was changed by the refused requests.
    assert client.get("/api/v1/profiles/file", headers=v).json() == []


def test_operator_edits_profiles_but_not_users(client: TestClient, tokens: dict) -> None:
    op = tokens["operator"]
    r = client.post("/api/v1/profiles/file", json={"name": "std", "settings": {}}, headers=op)
    assert r.status_code == 201, r.text
    r = client.post(
        "/api/v1/users",
        json={"name": "eve", "password": "longenough1", "role": "administrator"},
        headers=op,
    )
    assert r.status_code == 403
    assert client.get("/api/v1/audit", headers=op).status_code == 403


def test_admin_changes_are_audited(client: TestClient, tokens: dict) -> None:
    adm = tokens["administrator"]
    r = client.post(
        "/api/v1/users",
        json={"name": "carol", "password": "longenough1", "role": "viewer"},
        headers=adm,
    )
    assert r.status_code == 201
    r = client.post("/api/v1/profiles/network", json={"name": "n1", "settings": {}}, headers=adm)
    assert r.status_code == 201
    log = client.get("/api/v1/audit", headers=adm).json()
    actions = [(e["action"], e["actor"]) for e in log]
    assert ("user.add", "token:3(administrator)") in actions
    assert ("network_profile.create", "token:3(administrator)") in actions
    # Duplicate user: a clear error, not a crash.
    r = client.post(
        "/api/v1/users",
        json={"name": "carol", "password": "longenough1", "role": "viewer"},
        headers=adm,
    )
    assert r.status_code == 422 and "already exists" in r.json()["detail"]


def test_openapi_document(client: TestClient) -> None:
    r = client.get("/api/v1/openapi.json")
    assert (
        r.headers["x-frame-options"] == "DENY"
        and "default-src 'self'" in r.headers["content-security-policy"]
    )
    doc = r.json()
    assert doc["info"]["title"] == "vmshield center"
    assert "/api/v1/vms/{ident}/effective" in doc["paths"]
    assert "/api/v1/svm/events" in doc["paths"]


def test_login_rate_limit(center) -> None:
    with center.store.sessions.begin() as s:
        auth.add_user(s, "dave", "correct-horse", "viewer", "test")
    for _ in range(auth.LOGIN_MAX_FAILURES):
        with center.store.sessions.begin() as s:
            assert auth.authenticate(s, "dave", "wrong-password", "10.0.0.9") is None
    with center.store.sessions() as s:
        assert auth.login_blocked(s, "dave", "10.0.0.9")
        # Another user from another address is not blocked.
        assert not auth.login_blocked(s, "erin", "10.0.0.10")
    with center.store.sessions.begin() as s:
        user = auth.authenticate(s, "dave", "correct-horse", "10.0.0.9")
        assert user is not None and user.password_hash.startswith("$argon2")


def test_cli_user_and_token_work_against_same_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "d"
    exe = [sys.executable, "-m", "vmshield", "center", "--data", str(data)]
    r = subprocess.run(
        [*exe, "user", "add", "ops1", "--role", "operator", "--password-stdin"],
        input="a-long-password\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    r = subprocess.run(
        [*exe, "token", "create", "--role", "administrator", "--name", "ci"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert token.startswith("vms_")
    bad = subprocess.run(
        [*exe, "user", "add", "x", "--role", "root"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
    c = open_center(data)
    with TestClient(create_app(c), base_url="https://testserver") as tc:
        me = tc.get("/api/v1/whoami", headers={"Authorization": f"Bearer {token}"})
        assert me.json()["role"] == "administrator"
        users = tc.get("/api/v1/users", headers={"Authorization": f"Bearer {token}"}).json()
        assert [(u["name"], u["role"]) for u in users] == [("ops1", "operator")]
    c.store.engine.dispose()


@pytest.mark.parametrize("bad", ["", "has space", "a/b", "a" * 65])
def test_bad_user_names_refused(center, bad: str) -> None:
    with center.store.sessions.begin() as s, pytest.raises(ValueError, match="name"):
        auth.add_user(s, bad, "longenough1", "viewer", "test")


def test_oversized_bodies_refused_before_parsing(client: TestClient, tokens: dict) -> None:
    big = b'{"name": "' + b"x" * (2 << 20) + b'"}'
    r = client.post("/api/v1/users", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = client.post(
        "/login",
        content=b"name=" + b"a" * (2 << 20),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 413


def test_enrolment_token_guessing_is_rate_limited_per_address(client: TestClient) -> None:
    from vmshield.center.pki import make_key_and_csr

    _key, csr = make_key_and_csr("svm")
    body = {"token": "guess-guess-guess." + "0" * 64, "csr": csr.decode()}
    codes = [
        client.post("/api/v1/enroll", json=body).status_code
        for _ in range(auth.LOGIN_MAX_FAILURES * 4 + 1)
    ]
    assert codes[:-1] == [403] * (auth.LOGIN_MAX_FAILURES * 4)
    assert codes[-1] == 429
