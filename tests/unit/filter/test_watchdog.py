"""The outage watchdog's state machine (the live kill tests are in tests/integration/filter)."""

from __future__ import annotations

import os
import sys

import pytest

from vmshield.filter import watchdog as W  # noqa: N812


def _watch(fail_closed: bool = False, mode: str = "standard") -> W.Watch:
    return W.Watch(
        name="vmsG2ab",
        mode=mode,
        queues=[1000, 1001] if mode == "standard" else [],
        fail_closed=fail_closed,
        pid=4242,
        started=1,
    )


def _states(events: list) -> list[str]:  # type: ignore[type-arg]
    return [e.data["filter"]["state"] for e in events]


def test_dead_service_is_reported_at_once_and_the_end_when_queues_are_bound_again() -> None:
    w = _watch()
    ev, done = w.step(True, {1000, 1001}, True, 0.0, 100.0)
    assert ev == [] and not done
    ev, done = w.step(False, set(), True, 0.1, 100.1)
    assert _states(ev) == ["bypass_active"] and not done
    assert ev[0].data["filter"]["traffic"] == "uninspected"
    assert ev[0].data["filter"]["queues_without_listener"] == [1000, 1001]
    # Reported once, not on every poll.
    assert w.step(False, set(), True, 0.2, 100.2)[0] == []
    ev, done = w.step(False, {1000, 1001}, True, 5.0, 105.1)
    assert _states(ev) == ["bypass_ended"] and done
    assert ev[0].data["filter"]["seconds"] == pytest.approx(5.0)


def test_fail_closed_outage_is_reported_as_blocked_traffic() -> None:
    w = _watch(fail_closed=True)
    ev, _ = w.step(False, set(), True, 0.0, 1.0)
    assert _states(ev) == ["traffic_blocked"]
    assert ev[0].data["filter"]["traffic"] == "blocked"


def test_a_queue_without_listener_is_reported_only_after_the_restart_grace() -> None:
    w = _watch()
    assert w.step(True, {1000}, True, 0.0, 0.0)[0] == []  # a worker restarting
    assert w.step(True, {1000}, True, W.WORKER_GRACE_SECONDS - 0.1, 1.0)[0] == []
    ev, _ = w.step(True, {1000}, True, W.WORKER_GRACE_SECONDS + 0.1, 2.0)
    assert _states(ev) == ["bypass_active"]
    assert ev[0].data["filter"]["reason"] == "queue without listener"
    assert ev[0].data["filter"]["queues_without_listener"] == [1001]
    ev, done = w.step(True, {1000, 1001}, True, 9.0, 9.0)
    assert _states(ev) == ["bypass_ended"] and not done  # the service lives on: keep watching


def test_removed_rules_end_the_watch_and_close_an_open_outage() -> None:
    w = _watch()
    assert w.step(True, {1000, 1001}, False, 0.0, 0.0) == ([], True)
    w = _watch()
    w.step(False, set(), True, 0.0, 0.0)
    ev, done = w.step(False, set(), False, 1.0, 1.0)
    assert _states(ev) == ["bypass_ended"] and done
    assert "no longer filtered" in ev[0].data["filter"]["reason"]


def test_monitoring_outage_ends_when_a_new_service_takes_over() -> None:
    w = _watch(mode="monitoring")
    ev, _ = w.step(False, set(), True, 0.0, 0.0)
    assert _states(ev) == ["bypass_active"]
    assert w.step(False, set(), True, 1.0, 1.0)[0] == []
    ev, done = w.step(False, set(), True, 2.0, 2.0, handed_over=True)
    assert _states(ev) == ["bypass_ended"] and done


def test_proc_parsing() -> None:
    text = (
        " 1000  12345     0 2 65531     0     0        7  1\n"
        " 1001  12346     3 2 65531     0     0        9  1\n"
    )
    assert W.queue_listeners(text) == {1000, 1001}
    assert W.queue_listeners("") == set()
    assert W.proc_start_time(os.getpid()) is not None
    assert W.parse_queues("7:9") == [7, 8, 9]
    for bad in ("x", "9:7", "0:999"):
        with pytest.raises(ValueError, match="--queues"):
            W.parse_queues(bad)


def test_vlan_mark_round_trip_and_scoped_addresses() -> None:
    from vmshield.filter import rules as R  # noqa: N812

    # What nft writes for VLAN 100: the tag's bytes 00 64 as they lie in memory, plus our flag.
    raw = int.from_bytes(b"\x00\x64", "big").to_bytes(2, "big")
    mark = R.VLAN_MARK_FLAG | int.from_bytes(raw, sys.byteorder)
    assert R.vlan_of(mark) == 100
    assert R.vlan_of(0x6400) == 0  # no flag: not written by us
    assert R.vlan_of(R.BYPASS_MARK | mark) == 100
    assert R.parse_scoped("10.0.0.1") == ("10.0.0.1", None)
    assert R.parse_scoped("10.0.0.1@4094") == ("10.0.0.1", 4094)
    for bad in ("10.0.0.1@0", "10.0.0.1@4095", "10.0.0.1@x"):
        with pytest.raises(ValueError, match="VLAN"):
            R.parse_scoped(bad)
    with pytest.raises(ValueError, match="subnet"):
        R._vlan_elem("10.0.0.0/24", 5)
