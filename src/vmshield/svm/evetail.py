"""Forward the events of the network protection (its worker processes write an EVE file) to the
center's spool of an enrolled SVM.

The network protection gets its own EVE file so that only its events are read here (the file
protection's events are spooled directly). Followed from its end at start; a truncated or
replaced file is read again from its beginning. A line that is not an event is counted and
logged, never dropped silently; a line still being written waits for its newline.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from vmshield.events import Event

log = logging.getLogger("vmshield.svm.evetail")

MAX_READ = 4 * 1024 * 1024  # bytes read per poll: a burst is forwarded over several polls
MAX_LINE = 1024 * 1024  # a longer "line" without a newline is skipped and counted as bad


class EveForwarder:
    def __init__(
        self,
        path: str | Path,
        sink: Callable[[Iterable[Event]], None],
        interval: float = 0.5,
        from_start: bool = False,
    ) -> None:
        self.path = Path(path)
        self.sink = sink
        self.interval = interval
        self.forwarded = 0
        self.bad_lines = 0
        self._offset = 0
        self._ino = 0
        if not from_start:
            try:
                st = os.stat(self.path)
                self._offset, self._ino = st.st_size, st.st_ino
            except OSError:
                pass
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="eve-forward", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.poll()  # what was written up to the stop

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                while self.poll() >= MAX_READ:
                    pass
            except Exception:  # the forwarder must keep going; the sink reports its own failures
                log.exception("forwarding network events failed")

    def poll(self) -> int:
        """Forward the complete lines written since the last poll; returns bytes consumed."""
        try:
            st = os.stat(self.path)
        except OSError:
            return 0
        if st.st_ino != self._ino or st.st_size < self._offset:
            self._ino, self._offset = st.st_ino, 0  # rotated or truncated: a new file
        if st.st_size == self._offset:
            return 0
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            chunk = f.read(MAX_READ)
        end = chunk.rfind(b"\n")
        if end < 0:
            if len(chunk) >= MAX_LINE:  # no newline in a megabyte: not an event line
                self.bad_lines += 1
                self._offset += len(chunk)
                log.error("%s: %d bytes without a newline skipped", self.path, len(chunk))
                return len(chunk)
            return 0
        events = []
        for line in chunk[: end + 1].splitlines():
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                events.append(Event.from_eve(obj))
            except (ValueError, KeyError, TypeError) as exc:
                self.bad_lines += 1
                log.error("%s: not an event (%s): %.200r", self.path, exc, line)
        if events:
            self.sink(events)
            self.forwarded += len(events)
        self._offset += end + 1
        return end + 1
