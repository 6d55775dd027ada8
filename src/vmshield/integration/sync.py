"""Keeps the center's copy of one connection's inventory current.

Full at start (diffed against what the center already stored, so a restart changes nothing that
did not change), then incremental: the provider blocks until its source reports a change, and the
new snapshot is diffed against the last one. A lost connection is reopened with exponential
backoff; every failure is reported through `on_error`, never swallowed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from vmshield.integration.inventory import InventoryChange, InventoryNode, diff
from vmshield.integration.provider import Provider, ProviderError


class InventorySync:
    def __init__(
        self,
        open_provider: Callable[[], Provider],
        apply: Callable[[list[InventoryChange]], None],
        *,
        known: list[InventoryNode] | None = None,
        wait_seconds: float = 5.0,
        backoff_min: float = 1.0,
        backoff_max: float = 60.0,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self._open = open_provider
        self._apply = apply
        self._last: list[InventoryNode] = list(known or [])
        self._wait = wait_seconds
        self._backoff_min = backoff_min
        self._backoff_max = backoff_max
        self._on_error = on_error or (lambda _msg: None)
        self._provider: Provider | None = None

    @property
    def nodes(self) -> list[InventoryNode]:
        return list(self._last)

    def sync_once(self) -> list[InventoryChange]:
        """Read the whole inventory now and apply what changed since the last sync."""
        if self._provider is None:
            self._provider = self._open()
        current = self._provider.snapshot()
        changes = diff(self._last, current)
        if changes:
            self._apply(changes)
        self._last = current
        return changes

    def run(self, stop: threading.Event) -> None:
        """Sync until `stop` is set: full first, then on every change the source reports."""
        backoff = self._backoff_min
        while not stop.is_set():
            try:
                self.sync_once()
                backoff = self._backoff_min
                while not stop.is_set():
                    assert self._provider is not None
                    if self._provider.wait_for_change(self._wait):
                        self.sync_once()
            except ProviderError as exc:
                self._on_error(str(exc))
                self._close()
                stop.wait(backoff)
                backoff = min(backoff * 2, self._backoff_max)
            except Exception as exc:  # noqa: BLE001 - e.g. the center's database is down: retry
                self._on_error(f"inventory sync failed: {type(exc).__name__}: {exc}")
                self._close()
                stop.wait(backoff)
                backoff = min(backoff * 2, self._backoff_max)
        self._close()

    def _close(self) -> None:
        if self._provider is not None:
            try:
                self._provider.close()
            finally:
                self._provider = None
