"""The shared, content-addressed verdict cache: (SHA-256, database version) → result summary."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass(frozen=True)
class CachedResult:
    status: str
    detections: tuple[tuple[str, str], ...] = ()  # (signature name, inner path)
    limit: str | None = None
    size: int = 0


@dataclass
class VerdictCache:
    """LRU over every VM of the host; a new database version makes every old entry unreachable."""

    max_entries: int = 200_000
    hits: int = 0
    misses: int = 0
    _entries: OrderedDict[tuple[str, str], CachedResult] = field(default_factory=OrderedDict)

    def get(self, sha256: str, db_version: str) -> CachedResult | None:
        key = (sha256, db_version)
        r = self._entries.get(key)
        if r is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return r

    def put(self, sha256: str, db_version: str, result: CachedResult) -> None:
        key = (sha256, db_version)
        self._entries[key] = result
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def drop_versions_except(self, db_version: str) -> None:
        for key in [k for k in self._entries if k[1] != db_version]:
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)
