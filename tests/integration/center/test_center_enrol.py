"""SVM enrolment with one-time tokens, then mutual TLS only; SVMs see their own host only."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import httpx
import pytest

from vmshield.center.pki import CenterPKI, make_key_and_csr
from vmshield.center.testing import RunningCenter
from vmshield.integration.inventory import InventoryNode, diff
from vmshield.svm.center_client import CenterClient, EnrolError, enroll


def build(rc: RunningCenter, h: dict) -> dict:
    api = httpx.Client(base_url=rc.url, verify=_ctx(rc.ca_path), headers=h, timeout=30)
    r = api.post(
        "/api/v1/connections", json={"name": "lab", "kind": "static", "password": "s3cr3t"}
    )
    assert r.status_code == 201, r.text
    conn = r.json()["id"]
    nodes = [
        InventoryNode("datacenter", "dc", "DC", None),
        InventoryNode("cluster", "c", "C1", "dc"),
        InventoryNode("host", "h1", "esx1", "c"),
        InventoryNode("host", "h2", "esx2", "c"),
        InventoryNode(
            "vm", "v1", "web1", "h1", {"uuid": "u-1", "host": "h1", "ip_addresses": ["10.0.0.5"]}
        ),
        InventoryNode("vm", "v2", "web2", "h1", {"uuid": "u-2", "host": "h1"}),
        InventoryNode("vm", "v3", "other", "h2", {"uuid": "u-3", "host": "h2"}),
    ]
    rc.ctx.store.apply_changes(conn, diff([], nodes))
    hosts = {h["name"]: h["node_id"] for h in api.get("/api/v1/hosts").json()}
    r = api.post("/api/v1/deployments", json={"host_node_id": hosts["esx1"]})
    assert r.status_code == 201, r.text
    return {"api": api, "token": r.json()["enrolment_token"], "hosts": hosts, "dep": r.json()["id"]}


def test_enrol_then_mutual_tls_only(live: RunningCenter, admin: dict, tmp_path: Path) -> None:
    w = build(live, admin)
    api = w["api"]
    # The token is typed on a command line (`vmshield svm --enroll URL TOKEN`): a leading "-"
    # would be taken for an option, so tokens are hex, secret and CA fingerprint alike.
    assert re.fullmatch(r"[0-9a-f]{48}\.[0-9a-f]{64}", w["token"]), w["token"]
    # A wrong secret with the right fingerprint: refused by the center.
    fp = w["token"].split(".")[1]
    with pytest.raises(EnrolError, match="refused enrolment \\(403\\)"):
        enroll(live.url, "wrongsecretwrongsecret." + fp, tmp_path / "svm-x")
    # The right secret but another CA's fingerprint: the SVM refuses the center.
    with pytest.raises(EnrolError, match="does not match"):
        enroll(live.url, w["token"].split(".")[0] + "." + "0" * 64, tmp_path / "svm-y")
    info = enroll(live.url, w["token"], tmp_path / "svm1")
    assert info["host"] == "esx1"
    assert (tmp_path / "svm1/center/client.key").stat().st_mode & 0o077 == 0
    # The token is single use.
    with pytest.raises(EnrolError, match="403"):
        enroll(live.url, w["token"], tmp_path / "svm2")

    svm = CenterClient(tmp_path / "svm1")
    assert svm.heartbeat(db_versions={"clamav": "27400"}) >= 1
    cfg = svm.fetch_config()
    assert cfg["host"] == "esx1"
    assert sorted(v["name"] for v in cfg["vms"]) == ["web1", "web2"]  # not esx2's VM
    assert cfg["vms"][0]["file"]["status"] == "unprotected"
    r = svm.http.get("/api/v1/svm/config", params={"host": "esx2"})
    assert r.status_code == 403

    # Without a client certificate: 401, even with an administrator's token.
    plain = httpx.Client(base_url=live.url, verify=_ctx(live.ca_path), timeout=30)
    assert plain.get("/api/v1/svm/config").status_code == 401
    assert plain.post("/api/v1/svm/events", json={"events": []}).status_code == 401
    r = plain.post("/api/v1/svm/heartbeat", json={}, headers=api.headers)
    assert r.status_code == 401
    # A certificate from another CA does not get through the handshake.
    other = CenterPKI(tmp_path / "other-ca")
    other.ensure()
    key, csr = make_key_and_csr("intruder")
    cert, _, _ = other.sign_svm_csr(csr, 1)
    (tmp_path / "i.pem").write_bytes(cert)
    (tmp_path / "i.key").write_bytes(key)
    import ssl

    ctx = ssl.create_default_context(cafile=live.ca_path)
    ctx.check_hostname = False
    ctx.load_cert_chain(tmp_path / "i.pem", tmp_path / "i.key")
    with pytest.raises(httpx.HTTPError):
        r = httpx.get(f"{live.url}/api/v1/svm/config", verify=ctx, timeout=10)
        assert r.status_code != 200
        raise httpx.HTTPError(f"status {r.status_code}")

    deps = api.get("/api/v1/deployments").json()
    assert deps[0]["state"] == "enrolled" and deps[0]["healthy"] is True
    assert deps[0]["db_versions"] == {"clamav": "27400"}
    hosts = {h["name"]: h for h in api.get("/api/v1/hosts").json()}
    assert hosts["esx1"]["healthy"] and not hosts["esx2"]["healthy"]

    # Revoked: the certificate no longer opens anything.
    assert api.delete(f"/api/v1/deployments/{w['dep']}").status_code == 204
    assert svm.http.get("/api/v1/svm/config").status_code == 403
    audit = [a["action"] for a in api.get("/api/v1/audit").json()]
    assert "deployment.enrol" in audit and "deployment.enrol_refused" in audit
    svm.close()


def test_svm_is_told_when_its_config_changes(
    live: RunningCenter, admin: dict, tmp_path: Path
) -> None:
    w = build(live, admin)
    api = w["api"]
    enroll(live.url, w["token"], tmp_path / "svm")
    svm = CenterClient(tmp_path / "svm")
    # Created before the poll starts: the assignment is the change the SVM waits for.
    p = api.post("/api/v1/profiles/file", json={"name": "std", "settings": {"level": "low"}}).json()
    v0 = svm.fetch_config()["version"]
    got: dict = {}

    def poll() -> None:
        got["t0"] = time.monotonic()
        got["cfg"] = svm.fetch_config(since=v0, wait=20)
        got["t1"] = time.monotonic()

    t = threading.Thread(target=poll)
    t.start()
    time.sleep(0.5)
    c = next(
        n for n in api.get("/api/v1/inventory").json()["children"][0]["children"][0]["children"]
    )
    assert c["kind"] == "cluster"
    api.put(
        f"/api/v1/inventory/nodes/{c['id']}/assignment/file",
        json={"mode": "profile", "profile_id": p["id"]},
    )
    t.join(25)
    cfg = got["cfg"]
    assert cfg["version"] > v0
    web1 = next(v for v in cfg["vms"] if v["name"] == "web1")
    assert web1["file"]["status"] == "protected"
    assert web1["file"]["settings"]["scope"] == "executables"  # the low preset
    assert web1["file"]["source"]["name"] == "C1"
    assert web1["ip_addresses"] == ["10.0.0.5"]
    # Database versions set by an operator reach the SVM as well.
    api.put("/api/v1/databases", json={"main": "1.2", "rules": "7"})
    assert svm.fetch_config(since=cfg["version"], wait=5)["db_versions"] == {
        "main": "1.2",
        "rules": "7",
    }
    svm.close()


def test_connection_credentials_encrypted_at_rest(live: RunningCenter, admin: dict) -> None:
    build(live, admin)
    from sqlalchemy import select

    from vmshield.center.db import Connection

    with live.ctx.store.sessions() as s:
        c = s.scalar(select(Connection))
        assert "s3cr3t" not in c.secret_enc and c.secret_enc
        assert live.ctx.store.connection_secret(s, c.id) == "s3cr3t"


def _ctx(ca: str):  # noqa: ANN202
    import ssl

    return ssl.create_default_context(cafile=ca)
