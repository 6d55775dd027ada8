"""Scan one file (or buffer): hashes, signatures and YARA in one read, then containers, recursively.

The scanner is pure: it reads the file it is given and nothing else, writes nothing, keeps no
state between files but the database. Containers come from `containers.open_container`; the
per-file `ScanBudget` bounds depth, members, bytes and time, and every limit hit is reported
(`limits_exceeded` naming the limit), never turned into `clean`.
"""

from __future__ import annotations

import io
import os
import stat
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

from vmshield.engines.file.database import Database
from vmshield.engines.file.limits import LimitExceeded, Limits, ScanBudget
from vmshield.engines.file.results import Detection, Hashes, ScanResult, Status, worst

try:  # containers are another part of the engine; scanning plain files works without them
    from vmshield.engines.file.containers import open_container as _open_container
except ImportError:  # pragma: no cover - only while that part is absent
    _open_container = None  # type: ignore[assignment]

OpenContainer = Callable[[bytes, str, ScanBudget], "Iterator[Any] | None"]

# A member that is too big or too deep is skipped and reported; its siblings are still scanned.
# The other limits (files, bytes, time) are spent for the whole top-level file: scanning stops.
_PER_MEMBER_LIMITS = frozenset({"max_file_size", "max_recursion", "bomb_ratio"})


class Scanner:
    """Scans files against one Database. Not thread-safe: the Database's compiled matcher holds
    one Hyperscan scratch space, shared by every Scanner of that Database. Scan from one thread
    per Database, or from worker processes (the Database pickles cheaply), as the SVM does."""

    def __init__(
        self,
        db: Database,
        limits: Limits | None = None,
        *,
        containers: bool = True,
        open_container: OpenContainer | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.db = db
        self.limits = limits or Limits()
        self.matcher = db.matcher
        self._open = open_container or (_open_container if containers else None)
        self._clock = clock

    # --- entry points ---------------------------------------------------------------------------

    def scan_bytes(self, data: bytes, name: str = "(buffer)") -> ScanResult:
        result = ScanResult(path=name, size=len(data), db_version=self.db.version)
        budget = ScanBudget(self.limits, self._clock)
        try:
            self._layer(data, os.path.basename(name), "", 0, budget, result)
        except LimitExceeded as exc:
            self._limit(result, exc, "")
        except Exception as exc:  # noqa: BLE001 - one bad file never ends a scan
            result.errors.append(f"internal error: {type(exc).__name__}: {exc}")
            result.status = worst(result.status, Status.ERROR)
        return result

    def scan_path(self, path: str | os.PathLike[str]) -> ScanResult:
        spath = os.fspath(path)
        try:
            # O_NOFOLLOW is not used: the caller decides about symlinks (the walker skips them).
            fd = os.open(spath, os.O_RDONLY | getattr(os, "O_NOATIME", 0))
        except PermissionError:
            try:
                fd = os.open(spath, os.O_RDONLY)
            except OSError as exc:
                return _error(spath, exc.strerror or str(exc), self.db.version)
        except OSError as exc:
            return _error(spath, exc.strerror or str(exc), self.db.version)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return _error(spath, "not a regular file", self.db.version)
            if st.st_size > self.limits.max_file_size:
                # Not read at all: reading 50 GB to say "too big" helps nobody.
                res = ScanResult(path=spath, size=st.st_size, db_version=self.db.version)
                self._limit(
                    res,
                    LimitExceeded("max_file_size", f"{st.st_size} > {self.limits.max_file_size}"),
                    "",
                )
                return res
            with os.fdopen(fd, "rb", closefd=False) as fh:
                data = fh.read(self.limits.max_file_size + 1)
        except OSError as exc:
            return _error(spath, exc.strerror or str(exc), self.db.version)
        finally:
            os.close(fd)
        result = self.scan_bytes(data, spath)
        result.path = spath
        return result

    # --- recursion ------------------------------------------------------------------------------

    def _layer(
        self,
        data: bytes,
        name: str,
        inner: str,
        depth: int,
        budget: ScanBudget,
        result: ScanResult,
        # Formats of the containers holding this, outermost first (Container:, Intermediates:).
        chain: tuple[str | frozenset[str] | None, ...] = (),
    ) -> None:
        budget.charge_file(len(data))
        digests, hits, allowed = self.matcher.match(
            data,
            want_sha=depth == 0,
            time_left=budget.deadline - budget._clock(),
            container=chain[-1] if chain else None,
            chain=chain,
        )
        if depth == 0:
            result.hashes = Hashes(digests["md5"], digests["sha1"], digests["sha256"])
        if allowed:
            return  # on the .fp/.sfp allow-list: neither it nor anything inside is reported
        for h in hits:
            result.detections.append(Detection(h.name, inner, h.engine))
            result.status = worst(result.status, Status.INFECTED)
        if self._open is None:
            return
        members = self._open(data, name, budget)
        if members is None:
            return
        kind = _detect(data) if self.db.uses_container else None
        budget.check_depth(depth + 1)
        it = iter(members)
        # Encrypted members of a carved archive count once that archive has read without error:
        # a real self-extracting archive with encrypted content is reported as encrypted.
        pending_encrypted: list[str] = []
        guess_failed = False
        while True:
            try:
                member = next(it)
            except StopIteration:
                break
            except LimitExceeded as exc:
                # Raised by the walker itself: that container ends here (a generator cannot
                # go on after raising); the caller's siblings are still scanned.
                if exc.limit not in _PER_MEMBER_LIMITS:
                    raise
                self._limit(result, exc, inner)
                break
            mpath = f"{inner}//{member.name}" if inner else member.name
            # A carved archive (`sfx@0x…`) is a guess: executables often hold archive magic bytes
            # (Go binaries do). What fails inside a guess is noted, but it does not make a clean
            # system binary "encrypted" or an "error"; its detections count in full.
            speculative = _is_speculative(mpath)
            if member.encrypted:
                if speculative:
                    pending_encrypted.append(mpath)
                    continue
                result.encrypted.append(mpath)
                result.status = worst(result.status, Status.ENCRYPTED)
                continue
            if member.error:
                if speculative:
                    guess_failed = True
                    result.errors.append(f"(speculative) {mpath}: {member.error}")
                else:
                    result.errors.append(f"{mpath}: {member.error}")
                    result.status = worst(result.status, Status.ERROR)
            if member.data is None:
                continue
            try:
                self._layer(
                    member.data, member.name, mpath, depth + 1, budget, result, (*chain, kind)
                )
            except LimitExceeded as exc:
                if exc.limit not in _PER_MEMBER_LIMITS:
                    raise
                self._limit(result, exc, mpath)
        if pending_encrypted and not guess_failed:
            result.encrypted.extend(pending_encrypted)
            result.status = worst(result.status, Status.ENCRYPTED)
        else:
            result.errors.extend(f"(speculative) {p}: encrypted" for p in pending_encrypted)

    @staticmethod
    def _limit(result: ScanResult, exc: LimitExceeded, where: str) -> None:
        if result.limit is None:
            result.limit = exc.limit
            result.limit_path = where or None
        else:
            result.errors.append(f"{where or '(file)'}: limit {exc.limit} also hit")
        result.status = worst(result.status, Status.LIMITS_EXCEEDED)


def _detect(data: bytes) -> str | frozenset[str] | None:
    try:
        from vmshield.engines.file.containers import detect
    except ImportError:  # pragma: no cover
        return None
    kind = detect(data)
    if kind == "zip":
        ooxml = _ooxml_kind(data)
        if ooxml is not None:
            return frozenset(("zip", ooxml))
    return kind


_OOXML_PARTS = (("word/", "ooxml_word"), ("xl/", "ooxml_xl"), ("ppt/", "ooxml_ppt"))


def _ooxml_kind(data: bytes) -> str | None:
    """Word, Excel or PowerPoint OOXML: a zip with `[Content_Types].xml` and that application's
    part folder (the central directory only is read)."""
    if b"[Content_Types].xml" not in data:
        return None
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return None
    if "[Content_Types].xml" not in names:
        return None
    for prefix, kind in _OOXML_PARTS:
        if any(n.startswith(prefix) for n in names):
            return kind
    return None


def _is_speculative(mpath: str) -> bool:
    return any(part.startswith("sfx@") for seg in mpath.split("//") for part in seg.split("/"))


def _error(path: str, reason: str, version: str) -> ScanResult:
    return ScanResult(path=path, status=Status.ERROR, errors=[reason], db_version=version)
