"""The SVM's durable spool: survives reopening, ignores re-spooled ids, bounded and never silent."""

from __future__ import annotations

import json
from pathlib import Path

from vmshield.events import Event
from vmshield.svm.spool import Spool


def ev(i: int) -> Event:
    return Event(event_type="file", id=f"ev-{i:06d}", vm="vm1", data={"n": i})


def test_spool_survives_reopen_and_acks(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "spool.db")
    sp.put_many(ev(i) for i in range(250))
    sp.put(ev(3))  # the same id again: kept once
    assert len(sp) == 250
    sp.close()
    sp = Spool(tmp_path / "spool.db")
    assert len(sp) == 250
    batch = sp.peek(100)
    assert [json.loads(b)["n"] for _, b in batch] == list(range(100))
    sp.ack(batch[-1][0])
    assert len(sp) == 150
    assert json.loads(sp.peek(1)[0][1])["event_id"] == "ev-000100"
    sp.close()
    sp = Spool(tmp_path / "spool.db")
    assert len(sp) == 150
    sp.close()


def test_spool_overflow_drops_oldest_and_says_so(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.db", max_events=100, host="esx1")
    sp.put_many(ev(i) for i in range(150))
    assert len(sp) <= 100
    assert sp.dropped >= 50
    bodies = [json.loads(b) for _, b in sp.peek(1000)]
    notes = [b for b in bodies if b["event_type"] == "svm"]
    assert notes and notes[0]["svm"]["event"] == "spool_overflow"
    assert notes[0]["host"] == "esx1"
    assert sum(n["svm"]["dropped"] for n in notes) == sp.dropped
    # The newest events are the ones kept.
    assert any(b.get("n") == 149 for b in bodies)
    assert not any(b.get("n") == 0 for b in bodies)


def test_spool_byte_bound(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.db", max_bytes=20_000)
    big = "x" * 1000
    sp.put_many(Event(event_type="file", data={"p": big}) for _ in range(50))
    total = sum(len(b) for _, b in sp.peek(1000))
    assert total <= 20_000
    assert sp.dropped > 0


def test_shipping_batches_stay_under_the_body_limit(tmp_path: Path, monkeypatch) -> None:
    from vmshield.svm import center_client

    sent: list[int] = []

    class FakeResponse:
        def __init__(self, n: int) -> None:
            self.n = n

        def raise_for_status(self) -> None:
            pass

        def json(self) -> dict:
            return {"accepted": self.n, "duplicates": 0, "rejected": []}

    class FakeHttp:
        def post(self, _path: str, content: bytes, headers: dict) -> FakeResponse:
            sent.append(len(content))
            return FakeResponse(len(json.loads(content)["events"]))

    # A stand-in for the HTTP connection only: the batching logic under test is the real one.
    client = center_client.CenterClient.__new__(center_client.CenterClient)
    client.http = FakeHttp()  # type: ignore[assignment]
    client.stats = center_client.ShipStats()
    monkeypatch.setattr(center_client, "MAX_BATCH_BYTES", 50_000)
    sp = Spool(tmp_path / "s.db")
    sp.put_many(Event(event_type="file", data={"p": "x" * 9000}) for _ in range(20))
    while len(sp):
        client.ship_once(sp, batch=1000)
    assert len(sent) >= 4 and max(sent) <= 50_000 + 10_000
    assert client.stats.accepted == 20
