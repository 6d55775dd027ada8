"""Profiles and policies assigned on the inventory tree, inherited down, with sources."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from vmshield.center.app import CenterContext
from vmshield.integration.inventory import InventoryNode, diff


def tree(vm2_parent: str = "h2") -> list[InventoryNode]:
    return [
        InventoryNode("datacenter", "dc", "DC0", None),
        InventoryNode("folder", "f", "Prod", "dc"),
        InventoryNode("cluster", "c1", "Cluster1", "f"),
        InventoryNode("host", "h1", "esx1", "c1"),
        InventoryNode("host", "h2", "esx2", "c1"),
        InventoryNode("cluster", "c2", "Cluster2", "dc"),
        InventoryNode("host", "h3", "esx3", "c2"),
        InventoryNode("vm", "vm1", "web1", "h1", {"uuid": "4210-aaaa", "host": "h1"}),
        InventoryNode("vm", "vm2", "db1", vm2_parent, {"uuid": "4210-bbbb", "host": vm2_parent}),
        InventoryNode("vm", "vm3", "app3", "h3", {"uuid": "4210-cccc", "host": "h3"}),
    ]


@pytest.fixture
def world(center: CenterContext, client: TestClient, tokens: dict) -> dict:
    with center.store.sessions.begin() as s:
        conn = center.store.add_connection(s, "test", "lab", "static")
        conn_id = conn.id
    center.store.apply_changes(conn_id, diff([], tree()))
    inv = client.get("/api/v1/inventory", headers=tokens["viewer"]).json()
    ids: dict[str, int] = {}

    def walk(n: dict) -> None:
        ids[n["key"] or n["kind"]] = n["id"]
        for c in n["children"]:
            walk(c)

    walk(inv)
    op = tokens["operator"]
    p = {}
    for name, settings in (
        ("strict", {"level": "high"}),
        ("std", {"level": "recommended"}),
        ("custom1", {"level": "custom", "settings": {"scan_archives": True, "action": "report"}}),
    ):
        r = client.post(
            "/api/v1/profiles/file", json={"name": name, "settings": settings}, headers=op
        )
        assert r.status_code == 201, r.text
        p[name] = r.json()["id"]
    r = client.post("/api/v1/profiles/network", json={"name": "net", "settings": {}}, headers=op)
    p["net"] = r.json()["id"]
    return {"ids": ids, "profiles": p, "conn": conn_id, "op": op, "v": tokens["viewer"]}


def assign(
    client: TestClient, w: dict, key: str, mode: str, profile: str | None = None, kind: str = "file"
) -> dict:
    body = {"mode": mode, "profile_id": w["profiles"][profile] if profile else None}
    r = client.put(
        f"/api/v1/inventory/nodes/{w['ids'][key]}/assignment/{kind}", json=body, headers=w["op"]
    )
    assert r.status_code == 200, r.text
    return r.json()


def eff(client: TestClient, w: dict, vm: str) -> dict:
    r = client.get(f"/api/v1/vms/{vm}/effective", headers=w["v"])
    assert r.status_code == 200, r.text
    return r.json()


def test_nothing_assigned_is_unprotected(client: TestClient, world: dict) -> None:
    e = eff(client, world, "4210-aaaa")
    assert e["file"] == {"status": "unprotected", "source": None}
    assert e["network"]["status"] == "unprotected"
    inv = client.get("/api/v1/inventory", headers=world["v"]).json()
    assert "unprotected" in str(inv)


def test_cluster_assignment_inherited_by_vms_below_only(client: TestClient, world: dict) -> None:
    assign(client, world, "c1", "profile", "strict")
    unprot = client.get("/api/v1/vms", params={"status": "unprotected"}, headers=world["v"]).json()
    assert [v["name"] for v in unprot] == ["app3"]
    allv = client.get("/api/v1/vms", headers=world["v"]).json()
    assert {v["name"]: v["protection"]["file"]["status"] for v in allv} == {
        "app3": "unprotected",
        "db1": "protected",
        "web1": "protected",
    }
    e = eff(client, world, "4210-aaaa")
    assert e["file"]["status"] == "protected"
    assert e["file"]["profile"]["name"] == "strict"
    assert e["file"]["source"] == {
        "node_id": world["ids"]["c1"],
        "kind": "cluster",
        "name": "Cluster1",
    }
    # Every setting says where it came from: the node, and the preset.
    s = e["file"]["settings"]["scan_archives"]
    assert s == {"value": True, "from": "preset:high", "node": e["file"]["source"]}
    assert eff(client, world, "db1")["file"]["profile"]["name"] == "strict"
    # Cluster2's VM is not under Cluster1.
    assert eff(client, world, "app3")["file"]["status"] == "unprotected"


def test_explicit_override_and_root_default(client: TestClient, world: dict) -> None:
    assign(client, world, "root", "profile", "std")
    assign(client, world, "c1", "profile", "strict")
    assign(client, world, "vm1", "profile", "custom1")
    assert eff(client, world, "app3")["file"]["profile"]["name"] == "std"
    assert eff(client, world, "db1")["file"]["profile"]["name"] == "strict"
    e = eff(client, world, "web1")
    assert e["file"]["profile"]["name"] == "custom1"
    assert e["file"]["source"]["kind"] == "vm"
    # Custom: its own settings come from the profile, the rest from the recommended preset.
    assert e["file"]["settings"]["action"]["value"] == "report"
    assert e["file"]["settings"]["action"]["from"] == "profile"
    assert e["file"]["settings"]["scan_sfx"]["from"] == "preset:recommended"
    # Back to inherit: the cluster's profile again.
    assign(client, world, "vm1", "inherit")
    assert eff(client, world, "web1")["file"]["profile"]["name"] == "strict"


def test_exclusion_covers_children_unless_they_say_otherwise(
    client: TestClient, world: dict
) -> None:
    assign(client, world, "root", "profile", "std")
    assign(client, world, "c1", "exclude")
    assign(client, world, "vm2", "profile", "strict")
    e1 = eff(client, world, "web1")
    assert e1["file"]["status"] == "excluded"
    assert e1["file"]["source"]["name"] == "Cluster1"
    assert eff(client, world, "db1")["file"]["profile"]["name"] == "strict"
    assert eff(client, world, "app3")["file"]["status"] == "protected"


def test_file_and_network_inherit_independently(client: TestClient, world: dict) -> None:
    assign(client, world, "dc", "profile", "net", kind="network")
    assign(client, world, "h1", "profile", "std")
    e = eff(client, world, "web1")
    assert e["network"]["source"]["kind"] == "datacenter"
    assert e["network"]["settings"]["failure_mode"]["value"] == "fail_open"
    assert e["file"]["source"]["kind"] == "host"
    # A file profile cannot be assigned as a network policy.
    r = client.put(
        f"/api/v1/inventory/nodes/{world['ids']['h1']}/assignment/network",
        json={"mode": "profile", "profile_id": world["profiles"]["std"]},
        headers=world["op"],
    )
    assert r.status_code == 404


def test_moving_a_vm_changes_what_it_inherits(center, client: TestClient, world: dict) -> None:
    assign(client, world, "c2", "profile", "strict")
    assert eff(client, world, "db1")["file"]["status"] == "unprotected"
    center.store.apply_changes(world["conn"], diff(tree(), tree(vm2_parent="h3")))
    assert eff(client, world, "db1")["file"]["profile"]["name"] == "strict"
    # Deleted from the inventory: gone from the API, its assignment with it.
    assign(client, world, "vm2", "profile", "std")
    center.store.apply_changes(
        world["conn"], diff(tree("h3"), [n for n in tree("h3") if n.key != "vm2"])
    )
    assert client.get("/api/v1/vms/db1/effective", headers=world["v"]).status_code == 404
    r = client.delete(f"/api/v1/profiles/file/{world['profiles']['std']}", headers=world["op"])
    assert r.status_code == 204


def test_assigned_profile_cannot_be_deleted(client: TestClient, world: dict) -> None:
    assign(client, world, "c1", "profile", "strict")
    r = client.delete(f"/api/v1/profiles/file/{world['profiles']['strict']}", headers=world["op"])
    assert r.status_code == 409 and "assigned" in r.json()["detail"]


def test_profile_validation_names_the_problem(client: TestClient, world: dict) -> None:
    op = world["op"]
    cases = [
        ({"level": "high", "settings": {"scan_archives": False}}, "preset"),
        ({"level": "custom", "settings": {"action": "explode"}}, "action"),
        ({"level": "custom", "settings": {"exclusions": {"regexes": ["(unclosed"]}}}, "regexes[0]"),
        ({"level": "custom", "settings": {"detect": ["viruses", "ghosts"]}}, "ghosts"),
        ({"level": "custom", "settings": {"max_compound_mb": -1}}, "max_compound_mb"),
    ]
    for settings, needle in cases:
        r = client.post(
            "/api/v1/profiles/file", json={"name": "bad", "settings": settings}, headers=op
        )
        assert r.status_code == 422, settings
        assert needle in r.text, (needle, r.text)
    net_cases: list[tuple[dict[str, Any], str]] = [
        ({"exclusions": [{"address": "10.0.0.300"}]}, "10.0.0.300"),
        ({"url_block": ["phishing"], "url_allow": ["phishing"]}, "both blocked and allowed"),
        # the URL database's vocabulary: "unknown" (uncategorised) is no category of it
        ({"url_allow": ["social", "unknown"]}, "unknown URL categories ['unknown']"),
        ({"url_block": ["casino"]}, "known: malicious, phishing, adware, malware"),
        ({"trusted_urls": ["intranet.example", "https:///x"]}, "trusted URL 2"),
        ({"attack_action": "nuke"}, "attack_action"),
        ({"ids_categories": ["exploit", "nope"]}, "nope"),
    ]
    for settings, needle in net_cases:
        r = client.post(
            "/api/v1/profiles/network", json={"name": "bad", "settings": settings}, headers=op
        )
        assert r.status_code == 422, settings
        assert needle in r.text, (needle, r.text)
    ok = {
        "attack_action": "terminate_and_block",
        "block_minutes": 15,
        "exclusions": [{"address": "10.1.0.0/16", "mode": "do_not_block"}, {"vlan": 42}],
        "trusted_urls": ["https://intranet.example/"],
        "failure_mode": "fail_closed",
    }
    r = client.post("/api/v1/profiles/network", json={"name": "good", "settings": ok}, headers=op)
    assert r.status_code == 201, r.text
    assert r.json()["settings"]["exclusions"][0]["address"] == "10.1.0.0/16"
