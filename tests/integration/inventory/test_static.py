"""Static TOML inventory: parsing, clear errors, and change detection by mtime."""

from __future__ import annotations

import os
import textwrap

import pytest

from vmshield.integration.inventory import InventoryNode, diff
from vmshield.integration.provider import ProviderError, open_provider

GOOD = textwrap.dedent(
    """
    [[datacenter]]
    name = "lab"
    [[cluster]]
    name = "c1"
    datacenter = "lab"
    [[host]]
    name = "host1"
    cluster = "c1"
    [[host]]
    name = "loose"
    [[vm]]
    name = "vm1"
    host = "host1"
    ip_addresses = ["10.231.0.11"]
    [[vm]]
    name = "vm2"
    host = "host1"
    uuid = "11111111-2222-3333-4444-555555555555"
    power_state = "off"
    """
)


def test_tree_and_defaults(tmp_path) -> None:
    path = tmp_path / "inv.toml"
    path.write_text(GOOD)
    nodes = {n.name: n for n in open_provider("static", {"path": str(path)}).snapshot()}
    assert nodes["c1"].parent_key == nodes["lab"].key
    assert nodes["host1"].parent_key == nodes["c1"].key
    assert nodes["loose"].parent_key is None
    assert nodes["vm1"].parent_key == nodes["host1"].key
    assert nodes["vm1"].attrs["ip_addresses"] == ["10.231.0.11"]
    # A VM without a uuid gets a stable one derived from its name
    again = {n.name: n for n in open_provider("static", {"path": str(path)}).snapshot()}
    assert nodes["vm1"].attrs["uuid"] == again["vm1"].attrs["uuid"]
    assert nodes["vm2"].attrs["power_state"] == "off"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[vm]]\nname = "x"\nhost = "nope"\n', "host 'nope' is not declared"),
        ("[[host]]\nname = 3\n", "needs a non-empty name"),
        ('[[host]]\nname = "a"\n[[host]]\nname = "a"\n', "duplicate host name 'a'"),
        ('[[vm]]\nname = "v"\npower_state = "maybe"\n', "power_state must be"),
        ('[[router]]\nname = "r"\n', "unknown section"),
        ("[[host]\n", "inv.toml"),
    ],
)
def test_errors_name_the_problem(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "inv.toml"
    path.write_text(text)
    with pytest.raises(ProviderError, match=message):
        open_provider("static", {"path": str(path)}).snapshot()


def test_change_is_noticed_by_mtime(tmp_path) -> None:
    path = tmp_path / "inv.toml"
    path.write_text(GOOD)
    provider = open_provider("static", {"path": str(path)})
    assert provider.wait_for_change(0.1) is False
    before = provider.snapshot()
    path.write_text(GOOD.replace('name = "vm2"', 'name = "vm3"'))
    st = path.stat()
    os.utime(path, (st.st_atime, st.st_mtime + 5))
    assert provider.wait_for_change(2) is True
    changes = diff(before, provider.snapshot())
    assert {(c.op, c.node.name) for c in changes} == {("upsert", "vm3"), ("delete", "vm2")}


def test_missing_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ProviderError, match="No such file"):
        open_provider("static", {"path": str(tmp_path / "absent.toml")})


def test_diff_orders_parents_before_children_and_deletes_children_first() -> None:
    dc = InventoryNode("datacenter", "dc", "dc", None)
    host = InventoryNode("host", "h", "h", "dc")
    vm = InventoryNode("vm", "v", "v", "h", {"power_state": "on"})
    changes = diff([], [vm, host, dc])
    assert [c.node.key for c in changes] == ["dc", "h", "v"]
    assert diff([dc, host, vm], [dc, host, vm]) == []
    off = InventoryNode("vm", "v", "v", "h", {"power_state": "off"})
    assert [(c.op, c.node) for c in diff([dc, host, vm], [dc, host, off])] == [("upsert", off)]
    gone = diff([dc, host, vm], [])
    assert [c.node.key for c in gone] == ["v", "h", "dc"] and all(c.op == "delete" for c in gone)
