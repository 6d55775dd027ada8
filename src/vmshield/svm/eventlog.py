"""Where the SVM's events go: the center's spool when it exists, else an EVE JSON log file."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from vmshield.events import Event, eve_line


class EveFile:
    """Append-only EVE JSON lines, one write per event (atomic for lines under PIPE_BUF on O_APPEND)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self._lock = threading.Lock()
        self.written = 0

    def __call__(self, event: Event) -> None:
        line = eve_line(event)
        with self._lock:
            os.write(self._fd, line)
            self.written += 1

    def close(self) -> None:
        os.close(self._fd)
