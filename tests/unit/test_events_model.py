"""The shared event model: timestamps exactly as Suricata (and datetime) write them, unique ids."""

from __future__ import annotations

import datetime as dt
import os
import random

from vmshield.events import Event, format_timestamp, new_event_id


def _reference(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+0000")


def test_timestamp_matches_datetime_including_rounding_at_second_edges() -> None:
    rng = random.Random(7)
    values = [1_700_000_000 + rng.random() * 1e6 for _ in range(20_000)]
    # Half-microsecond ties, values that round up into the next second, the epoch itself.
    values += [1_700_000_000 + k + j * 0.5e-6 for k in range(20) for j in range(-4, 4)]
    values += [s + 0.9999995 for s in range(1_700_000_000, 1_700_000_050)]
    values += [0.0, 1e-7, 0.4999995, 1.9999996, 1_234_567_890.123456789, 4_102_444_799.9999999]
    # Midnights (the date is cached per day, the time of day computed): each side of them, a
    # value that rounds up into the next day, days out of order, and before 1970.
    midnights = [86_400 * d for d in (19_675, 19_676, 20_000, 0, -1, -365, 47_482)]
    values += [m + off for m in midnights for off in (-0.5, -1e-6, -4e-7, 0.0, 3e-7, 59.5, 3599.25)]
    values += [-0.25, -1.0, -86_399.999999, -1_000_000_000.5]
    values += [-(1_000 + k) + j * 0.5e-6 for k in range(5) for j in range(-4, 4)]  # ties, < 1970
    for v in values:
        assert format_timestamp(v) == _reference(v), v


def test_timestamp_of_consecutive_packets_in_different_seconds() -> None:
    # The per-day cache must not leak one second's time into the next.
    assert format_timestamp(1_700_000_000.5) == "2023-11-14T22:13:20.500000+0000"
    assert format_timestamp(1_700_000_001.25) == "2023-11-14T22:13:21.250000+0000"
    assert format_timestamp(1_700_000_000.75) == "2023-11-14T22:13:20.750000+0000"
    assert format_timestamp(1_700_006_399.5) == "2023-11-14T23:59:59.500000+0000"
    assert format_timestamp(1_700_006_400.0) == "2023-11-15T00:00:00.000000+0000"
    assert format_timestamp(1_700_000_000.0) == "2023-11-14T22:13:20.000000+0000"


def test_event_ids_unique_and_uuid_shaped() -> None:
    ids = {Event(event_type="x").id for _ in range(50_000)}
    assert len(ids) == 50_000
    for i in list(ids)[:100]:
        assert len(i) == 32 and int(i, 16) >= 0


def test_forked_child_draws_other_ids() -> None:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report a few ids and leave at once
        os.close(r)
        os.write(w, "\n".join(new_event_id() for _ in range(5)).encode())
        os._exit(0)
    os.close(w)
    parent = {new_event_id() for _ in range(5)}
    with os.fdopen(r) as f:
        child = set(f.read().split())
    os.waitpid(pid, 0)
    assert len(child) == 5
    assert not parent & child
    assert {i[:16] for i in child}.isdisjoint({i[:16] for i in parent})
