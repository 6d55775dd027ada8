"""Backup copies kept before a file is disinfected, deleted or quarantined: the file engine's store
(`vmshield.engines.file.quarantine.QuarantineStore`: encrypted at rest, atomic, capped), one entry
per file and VM, so `vmshield quarantine list|restore --dir DIR` works on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vmshield.engines.file.quarantine import QuarantineStore


class BackupStore:
    def __init__(self, directory: str | Path) -> None:
        self.store = QuarantineStore(directory)

    def put(self, data: bytes, meta: dict[str, Any]) -> str:
        """Keep `data` (raises QuarantineError when it cannot: the caller then must not act)."""
        entry = self.store.add(
            data,
            original_path=str(meta.get("path", "")),
            reason="quarantine" if meta.get("action") == "quarantine" else "backup",
            detections=list(meta.get("detections", ())),
            vm=meta.get("vm"),
            host=meta.get("host"),
        )
        return entry.id
