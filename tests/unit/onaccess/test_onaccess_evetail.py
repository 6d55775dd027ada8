"""The enrolled SVM forwards the network protection's EVE file to the center's spool."""

from __future__ import annotations

import json
from pathlib import Path

from vmshield.events import Event, eve_line
from vmshield.svm.evetail import EveForwarder
from vmshield.svm.spool import Spool


def test_network_events_reach_the_spool_once_each(tmp_path: Path) -> None:
    eve = tmp_path / "eve-network.json"
    old = Event(event_type="attack", host="h", data={"src_ip": "10.0.0.9"})
    eve.write_bytes(eve_line(old))  # written before the SVM started: not forwarded again
    spool = Spool(tmp_path / "spool.db")
    fw = EveForwarder(eve, spool.put_many)
    new = [Event(event_type="block", host="h", data={"src_ip": f"10.0.0.{i}"}) for i in range(3)]
    with open(eve, "ab") as f:
        f.write(eve_line(new[0]) + b"this is not json\n" + eve_line(new[1]))
        f.write(eve_line(new[2])[:20])  # still being written
    fw.poll()
    got = [json.loads(b) for _, b in spool.peek()]
    assert [e["event_id"] for e in got] == [new[0].id, new[1].id]
    assert got[0]["src_ip"] == "10.0.0.0" and got[0]["event_type"] == "block"
    assert fw.bad_lines == 1
    with open(eve, "ab") as f:
        f.write(eve_line(new[2])[20:])
    fw.poll()
    fw.poll()
    assert [json.loads(b)["event_id"] for _, b in spool.peek()] == [e.id for e in new]
    # Rotated (a new, shorter file): read from its beginning.
    eve.unlink()
    last = Event(event_type="attack", host="h")
    eve.write_bytes(eve_line(last))
    fw.poll()
    assert len(spool) == 4 and fw.forwarded == 4
