"""Fuzz the whole scanner with a database of every kind: any bytes give a ScanResult with a valid
status (never an exception), within the limits, detections naming a loaded signature."""

from __future__ import annotations

from vmshield.engines.file.database import Database
from vmshield.engines.file.limits import Limits
from vmshield.engines.file.results import Status
from vmshield.engines.file.scanner import Scanner

DB = Database.from_texts(
    {
        "f.hdb": "44d88612fea8a8f36de82e1278abb02f:68:F.Hash\n",
        "f.ndb": "F.Star:0:*:504b*0304\nF.Gap:0:*:4d5a{2-40}5045\nF.Eof:0:EOF-4:ffd9??\n"
        "F.Ep:1:EP+0:e8????????\n",
        "f.ldb": "F.Logic;Target:0;(0|1)&2>1;7a69;(42|43)44;0000\n",
        "f.yar": 'rule F_Yara { strings: $a = "PK" $b = { 1f 8b 08 } condition: any of them }\n',
    }
)
NAMES = {"F.Hash", "F.Star", "F.Gap", "F.Eof", "F.Ep", "F.Logic", "F_Yara"}
SCANNER = Scanner(
    DB,
    Limits(max_file_size=1 << 20, max_scan_size=4 << 20, max_files=200, max_scan_time=20.0),
)


def TestOneInput(data: bytes) -> None:
    r = SCANNER.scan_bytes(data, "fuzz.bin")
    assert r.status in Status
    assert not any(e.startswith("internal error") for e in r.errors), r.errors
    assert all(d.name in NAMES for d in r.detections)
    assert (r.status is Status.LIMITS_EXCEEDED) == (
        r.limit is not None
    ) or r.status is Status.INFECTED
