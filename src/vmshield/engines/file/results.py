"""What a scan answers: one `ScanResult` per top-level file."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    CLEAN = "clean"
    INFECTED = "infected"
    LIMITS_EXCEEDED = "limits_exceeded"
    ENCRYPTED = "encrypted"
    ERROR = "error"


# When a scan meets several outcomes (an infected member and an encrypted one), the worst wins.
_RANK = {
    Status.CLEAN: 0,
    Status.ENCRYPTED: 1,
    Status.ERROR: 2,
    Status.LIMITS_EXCEEDED: 3,
    Status.INFECTED: 4,
}


def worst(a: Status, b: Status) -> Status:
    return a if _RANK[a] >= _RANK[b] else b


@dataclass(frozen=True)
class Detection:
    name: str  # signature name, as in the database (ClamAV adds nothing: we print it as loaded)
    inner_path: str = ""  # "" for the file itself, else "dir/b.tar.gz//x.exe" inside it
    engine: str = "hash"  # hash | body | logical | yara | heuristic


@dataclass(frozen=True)
class Hashes:
    md5: str
    sha1: str
    sha256: str


@dataclass
class ScanResult:
    path: str
    status: Status = Status.CLEAN
    detections: list[Detection] = field(default_factory=list)
    limit: str | None = None  # which limit, when status is limits_exceeded
    limit_path: str | None = None  # where inside the file the limit was hit
    encrypted: list[str] = field(default_factory=list)  # inner paths of encrypted members
    errors: list[str] = field(default_factory=list)  # "inner/path: reason"
    hashes: Hashes | None = None
    size: int = 0
    db_version: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "status": self.status.value,
            "detections": [
                {"name": d.name, "inner_path": d.inner_path, "engine": d.engine}
                for d in self.detections
            ],
            "limit": self.limit,
            "limit_path": self.limit_path,
            "encrypted": self.encrypted,
            "errors": self.errors,
            "hashes": None
            if self.hashes is None
            else {"md5": self.hashes.md5, "sha1": self.hashes.sha1, "sha256": self.hashes.sha256},
            "size": self.size,
            "db_version": self.db_version,
        }
