"""Scan limits (ClamAV's defaults) and the budget one scan spends against them.

A file that hits a limit is reported `limits_exceeded` naming the limit, never `clean`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    max_file_size: int = 100 * MiB  # a single file or container member
    max_scan_size: int = 400 * MiB  # bytes scanned in total for one top-level file
    max_recursion: int = 17  # container nesting depth
    max_files: int = 10_000  # members scanned for one top-level file
    max_scan_time: float = 120.0  # seconds for one top-level file
    max_ratio: int = 250  # decompressed/compressed size above which a member is a bomb
    max_ratio_min_size: int = 4 * MiB  # the ratio check applies only to members at least this big


class LimitExceeded(Exception):
    """Raised inside a scan; carries which limit (`max_file_size`, …, `bomb_ratio`, `zip_overlap`)."""

    def __init__(self, limit: str, detail: str = "") -> None:
        super().__init__(f"{limit}: {detail}" if detail else limit)
        self.limit = limit
        self.detail = detail


class ScanBudget:
    """What one top-level scan has spent: bytes, files, time. Shared by every nested container."""

    def __init__(self, limits: Limits, clock: Callable[[], float] | None = None) -> None:
        self.limits = limits
        self._clock = clock or time.monotonic
        self.deadline = self._clock() + limits.max_scan_time
        self.bytes_scanned = 0
        self.files = 0

    def charge_file(self, size: int) -> None:
        """Account for one more file (or member) of `size` bytes about to be scanned."""
        self.check_time()
        if size > self.limits.max_file_size:
            raise LimitExceeded("max_file_size", f"{size} > {self.limits.max_file_size}")
        self.files += 1
        if self.files > self.limits.max_files:
            raise LimitExceeded("max_files", f"more than {self.limits.max_files}")
        self.bytes_scanned += size
        if self.bytes_scanned > self.limits.max_scan_size:
            raise LimitExceeded("max_scan_size", f"more than {self.limits.max_scan_size} bytes")

    def check_depth(self, depth: int) -> None:
        if depth > self.limits.max_recursion:
            raise LimitExceeded("max_recursion", f"depth {depth} > {self.limits.max_recursion}")

    def check_ratio(self, compressed: int, uncompressed: int) -> None:
        """Refuse a member whose declared or actual expansion is that of an archive bomb."""
        if (
            uncompressed >= self.limits.max_ratio_min_size
            and compressed >= 0
            and uncompressed > max(compressed, 1) * self.limits.max_ratio
        ):
            raise LimitExceeded(
                "bomb_ratio",
                f"{uncompressed} bytes from {compressed} (ratio > {self.limits.max_ratio})",
            )

    def check_time(self) -> None:
        if self._clock() > self.deadline:
            raise LimitExceeded("max_scan_time", f"over {self.limits.max_scan_time} s")

    def remaining_member_size(self) -> int:
        """Largest member that may still be extracted: the smaller of the file and scan limits left."""
        return max(
            0, min(self.limits.max_file_size, self.limits.max_scan_size - self.bytes_scanned)
        )
