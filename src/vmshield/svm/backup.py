"""Backup copies kept before a file is disinfected, deleted or quarantined.

Uses the file engine's store (`vmshield.engines.file.quarantine`) when it offers one; otherwise a
content-addressed directory: `<dir>/<sha256>` (mode 0600) plus `<sha256>.json` with where it came from.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


class BackupStore:
    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._engine_store: Any = None
        try:
            from vmshield.engines.file import quarantine  # type: ignore[attr-defined]

            store_cls = getattr(quarantine, "QuarantineStore", None) or getattr(
                quarantine, "Store", None
            )
            if store_cls is not None:
                self._engine_store = store_cls(self.dir / "store")
        except Exception:
            self._engine_store = None

    def has(self, sha256: str) -> bool:
        return (self.dir / sha256).exists()

    def put(self, sha256: str, data: bytes, meta: dict[str, Any]) -> str:
        """Keep `data`; returns the backup id. Written and fsynced before the agent may act."""
        if self._engine_store is not None:
            add = getattr(self._engine_store, "add", None) or getattr(
                self._engine_store, "put", None
            )
            if add is not None:
                try:
                    ident = add(
                        data, **{k: v for k, v in meta.items() if k in ("path", "detection", "vm")}
                    )
                    self._record(sha256, meta | {"engine_store_id": str(ident)})
                except TypeError:
                    pass
        target = self.dir / sha256
        if not target.exists():
            tmp = self.dir / f".{sha256}.{os.getpid()}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, target)
        self._record(sha256, meta)
        return sha256

    def _record(self, sha256: str, meta: dict[str, Any]) -> None:
        with open(self.dir / f"{sha256}.json", "a", encoding="utf-8") as f:
            f.write(json.dumps({"time": time.time(), **meta}) + "\n")

    def get(self, sha256: str) -> bytes:
        return (self.dir / sha256).read_bytes()
