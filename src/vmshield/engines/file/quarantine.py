"""The backup / quarantine store: a directory that keeps a copy of a file before any change.

Layout of the directory it is given (the only place the file engine writes):

    store.key            32 random bytes, 0600: the store's AES-256-GCM key
    items/<id>.bin       "VMSQ1" + nonce + AES-GCM(content), 0600, never executable
    items/<id>.json      metadata; written last, so its presence commits the item
    tmp/                 partial writes, renamed into items/ when complete

Content is encrypted with a per-store key so a scanner (ours, or any other) walking the store
never sees the malware in place and nothing in it can be executed. Writers may run concurrently
(several scan workers, the SVM): each item is written under a unique id and published by atomic
renames; eviction runs under an advisory lock.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

GiB = 1024**3
DEFAULT_MAX_BYTES = 1 * GiB
DEFAULT_MAX_AGE = 30 * 24 * 3600.0
MAGIC = b"VMSQ1"
REASONS = ("backup", "quarantine")
_ID = re.compile(r"^[0-9a-f]{32}$")
ORPHAN_AGE = 3600.0  # a content file without metadata this old is a crashed writer's leftover


class QuarantineError(Exception):
    """A store operation failed; the message names the item or path."""


@dataclass
class Entry:
    id: str
    original_path: str
    reason: str  # backup | quarantine
    time: float  # seconds since the epoch, when the copy was kept
    size: int
    stored_size: int
    md5: str
    sha1: str
    sha256: str
    detections: list[str] = field(default_factory=list)
    uid: int | None = None
    gid: int | None = None
    mode: int | None = None  # permission bits of the original
    vm: str | None = None
    host: str | None = None

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        d["time_iso"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.time))
        return d

    @classmethod
    def from_json(cls, d: dict[str, object]) -> Entry:
        d = dict(d)
        d.pop("time_iso", None)
        known = {f for f in cls.__dataclass_fields__}
        e = cls(**{k: v for k, v in d.items() if k in known})  # type: ignore[arg-type]
        if not _ID.match(e.id) or e.reason not in REASONS or not isinstance(e.size, int):
            raise ValueError("invalid metadata")
        return e


class QuarantineStore:
    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_age: float = DEFAULT_MAX_AGE,
        clock: Callable[[], float] = time.time,
        create: bool = True,
    ) -> None:
        self.dir = Path(directory)
        self.items = self.dir / "items"
        self.tmp = self.dir / "tmp"
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.clock = clock
        if create:
            for d in (self.dir, self.items, self.tmp):
                d.mkdir(mode=0o700, parents=True, exist_ok=True)
        elif not self.items.is_dir():
            raise QuarantineError(f"{self.dir}: not a quarantine store (no items/ directory)")
        self._aead = AESGCM(self._key(create))
        self.problems: list[str] = []  # unreadable items met by list(), by id

    # --- key ---------------------------------------------------------------------------------

    def _key(self, create: bool) -> bytes:
        path = self.dir / "store.key"
        try:
            key = path.read_bytes()
        except FileNotFoundError:
            if not create:
                raise QuarantineError(f"{path}: missing store key") from None
            key = secrets.token_bytes(32)
            tmp = self.tmp / f"key.{secrets.token_hex(8)}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(key)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)  # fails if a concurrent writer made the key first: use theirs
            except FileExistsError:
                key = path.read_bytes()
            finally:
                tmp.unlink(missing_ok=True)
        if len(key) != 32:
            raise QuarantineError(f"{path}: corrupt store key ({len(key)} bytes)")
        return key

    # --- adding ------------------------------------------------------------------------------

    def add(
        self,
        data: bytes,
        *,
        original_path: str,
        reason: str = "quarantine",
        detections: Sequence[str] = (),
        uid: int | None = None,
        gid: int | None = None,
        mode: int | None = None,
        vm: str | None = None,
        host: str | None = None,
    ) -> Entry:
        """Keep `data`; returns its entry. Raises QuarantineError when it cannot be kept, so the
        caller never changes the original without its copy."""
        if reason not in REASONS:
            raise QuarantineError(f"reason must be one of {REASONS}, not {reason!r}")
        stored_size = len(MAGIC) + 12 + len(data) + 16
        if stored_size > self.max_bytes:
            raise QuarantineError(
                f"{original_path}: {len(data)} bytes is larger than the store cap ({self.max_bytes})"
            )
        # Ids sort by time (milliseconds, then random): eviction needs no metadata reads.
        eid = f"{int(self.clock() * 1000) & 0xFFFFFFFFFFFF:012x}{secrets.token_hex(10)}"
        nonce = secrets.token_bytes(12)
        blob = MAGIC + nonce + self._aead.encrypt(nonce, data, eid.encode())
        entry = Entry(
            id=eid,
            original_path=str(original_path),
            reason=reason,
            time=self.clock(),
            size=len(data),
            stored_size=len(blob),
            md5=hashlib.md5(data).hexdigest(),
            sha1=hashlib.sha1(data).hexdigest(),
            sha256=hashlib.sha256(data).hexdigest(),
            detections=list(detections),
            uid=uid,
            gid=gid,
            mode=None if mode is None else stat.S_IMODE(mode),
            vm=vm,
            host=host,
        )
        self._publish(f"{eid}.bin", blob)
        self._publish(f"{eid}.json", json.dumps(entry.to_json(), sort_keys=True).encode())
        self.enforce(keep=eid)
        return entry

    def add_file(self, path: str | os.PathLike[str], **meta: object) -> Entry:
        """Keep a copy of the file at `path`, with its owner and mode."""
        p = Path(path)
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            raise QuarantineError(f"{p}: cannot read: {exc.strerror}") from exc
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise QuarantineError(f"{p}: not a regular file")
            if st.st_size > self.max_bytes:
                raise QuarantineError(
                    f"{p}: {st.st_size} bytes is larger than the store cap ({self.max_bytes})"
                )
            data = f.read()
        return self.add(
            data,
            original_path=str(p.absolute()),
            uid=st.st_uid,
            gid=st.st_gid,
            mode=st.st_mode,
            **meta,  # type: ignore[arg-type]
        )

    def _publish(self, name: str, blob: bytes) -> None:
        tmp = self.tmp / f"{name}.{secrets.token_hex(6)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, self.items / name)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    # --- reading -----------------------------------------------------------------------------

    def _check_id(self, eid: str) -> str:
        if not isinstance(eid, str) or not _ID.match(eid):
            raise QuarantineError(f"{eid!r}: not a quarantine id (32 hex digits)")
        return eid

    def get(self, eid: str) -> Entry:
        self._check_id(eid)
        try:
            raw = (self.items / f"{eid}.json").read_bytes()
        except FileNotFoundError:
            raise QuarantineError(f"{eid}: no such item") from None
        try:
            entry = Entry.from_json(json.loads(raw))
        except (ValueError, TypeError) as exc:
            raise QuarantineError(f"{eid}: corrupt metadata: {exc}") from exc
        if entry.id != eid:
            raise QuarantineError(f"{eid}: metadata names another item")
        return entry

    def read(self, eid: str) -> bytes:
        """The original content, decrypted and checked against its SHA-256."""
        entry = self.get(eid)
        try:
            blob = (self.items / f"{eid}.bin").read_bytes()
        except FileNotFoundError:
            raise QuarantineError(f"{eid}: content missing") from None
        if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 28:
            raise QuarantineError(f"{eid}: content is not a vmshield quarantine item")
        nonce = blob[len(MAGIC) : len(MAGIC) + 12]
        try:
            data = self._aead.decrypt(nonce, blob[len(MAGIC) + 12 :], eid.encode())
        except InvalidTag:
            raise QuarantineError(
                f"{eid}: content fails authentication (tampered, or another store's key)"
            ) from None
        if hashlib.sha256(data).hexdigest() != entry.sha256:
            raise QuarantineError(f"{eid}: content does not match its recorded SHA-256")
        return data

    def list(self) -> list[Entry]:
        """Every committed item, oldest first. Unreadable ones are named in `self.problems`."""
        out: list[Entry] = []
        self.problems = []
        for meta in self.items.glob("*.json"):
            eid = meta.stem
            if not _ID.match(eid):
                continue
            try:
                out.append(self.get(eid))
            except QuarantineError as exc:
                self.problems.append(str(exc))
        out.sort(key=lambda e: (e.time, e.id))
        return out

    def total_bytes(self) -> int:
        return sum(size for _eid, _t, size in self._scan())

    def _scan(self) -> builtins.list[tuple[str, float, int]]:
        """(id, time, stored size) of committed items, oldest first, from names and sizes only."""
        out = []
        with os.scandir(self.items) as it:
            for de in it:
                if not de.name.endswith(".json") or not _ID.match(de.name[:-5]):
                    continue
                eid = de.name[:-5]
                try:
                    size = os.stat(self.items / f"{eid}.bin").st_size
                except FileNotFoundError:
                    size = 0
                out.append((eid, int(eid[:12], 16) / 1000, size))
        out.sort()
        return out

    # --- restore / delete --------------------------------------------------------------------

    def restore(
        self,
        eid: str,
        to: str | os.PathLike[str] | None = None,
        *,
        force: bool = False,
        keep: bool = False,
    ) -> Path:
        """Write the item back to its original path (or `to`); refuse to overwrite unless
        `force`. The item leaves the store unless `keep`."""
        entry = self.get(eid)
        data = self.read(eid)
        target = Path(to) if to is not None else Path(entry.original_path)
        if target.is_dir():
            target = target / Path(entry.original_path).name
        if not target.parent.is_dir():
            raise QuarantineError(f"{target.parent}: directory does not exist")
        if (target.exists() or target.is_symlink()) and not force:
            raise QuarantineError(f"{target}: exists; use --force to overwrite")
        tmp = target.parent / f".{target.name}.vmshield-restore.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                if entry.mode is not None:
                    os.fchmod(f.fileno(), entry.mode)
                if entry.uid is not None and os.geteuid() == 0:
                    os.fchown(f.fileno(), entry.uid, entry.gid if entry.gid is not None else -1)
                os.fsync(f.fileno())
            if force:
                os.rename(tmp, target)  # atomic: replaces a symlink itself, never follows it
            else:
                try:
                    os.link(tmp, target)  # atomic "create only if absent": no race with a new file
                except FileExistsError:
                    raise QuarantineError(f"{target}: exists; use --force to overwrite") from None
                finally:
                    tmp.unlink(missing_ok=True)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if not keep:
            self.delete(eid)
        return target

    def delete(self, eid: str) -> None:
        self._check_id(eid)
        meta = self.items / f"{eid}.json"
        if not meta.exists():
            raise QuarantineError(f"{eid}: no such item")
        meta.unlink(
            missing_ok=True
        )  # uncommit first: a half-deleted item is an orphan, not a ghost
        (self.items / f"{eid}.bin").unlink(missing_ok=True)

    # --- caps --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def enforce(self, keep: str | None = None) -> builtins.list[str]:
        """Drop items older than the age limit, then the oldest until under the size cap.
        Returns the evicted ids. `keep` (the item just added) is never evicted."""
        evicted: builtins.list[str] = []
        now = self.clock()
        with self._locked():
            items = self._scan()
            for eid, t, _size in items:
                if now - t > self.max_age and eid != keep:
                    self._drop(eid, evicted)
            items = [i for i in items if i[0] not in evicted]
            total = sum(size for _e, _t, size in items)
            for eid, _t, size in items:
                if total <= self.max_bytes:
                    break
                if eid == keep:
                    continue
                self._drop(eid, evicted)
                total -= size
            # Crashed writers' leftovers: on explicit runs, and now and then after an add.
            if keep is None or secrets.randbelow(64) == 0:
                self._clean_orphans(now)
        return evicted

    def _drop(self, eid: str, evicted: builtins.list[str]) -> None:
        try:
            self.delete(eid)
        except QuarantineError:
            return  # a concurrent process removed it first
        evicted.append(eid)

    def _clean_orphans(self, now: float) -> None:
        for d, pattern in ((self.items, "*.bin"), (self.tmp, "*")):
            for p in d.glob(pattern):
                if d is self.items and (self.items / f"{p.stem}.json").exists():
                    continue
                try:
                    if time.time() - p.stat().st_mtime > ORPHAN_AGE:
                        p.unlink()
                except OSError as exc:
                    if exc.errno != errno.ENOENT:
                        raise


# --- acting on an infected file: a backup first, then the change ---------------------------------

ACTIONS = ("report", "disinfect", "quarantine", "delete")


@dataclass
class ActionOutcome:
    action: str  # what was done in the end: report | disinfect | quarantine | delete | none
    ok: bool
    message: str
    entry_id: str | None = None  # the store item (backup or quarantined copy)


def act_on_file(
    path: str | os.PathLike[str],
    action: str,
    store: QuarantineStore,
    *,
    detections: Sequence[str] = (),
    inner_paths: Sequence[str] = (),
    fallback: str | None = None,
    expected_sha256: str | None = None,
    vm: str | None = None,
    host: str | None = None,
) -> ActionOutcome:
    """Apply a profile's action to an infected file, keeping a copy in `store` before any change.

    `inner_paths` are the detections' paths inside the file ("" for the file itself), used by
    disinfection; when it is impossible, `fallback` (quarantine | delete | report) is applied.
    `expected_sha256` (the scanned content's hash) refuses to touch a file that changed since.
    """
    if action not in ACTIONS or (
        fallback is not None and fallback not in ACTIONS[2:] + ("report",)
    ):
        return ActionOutcome("none", False, f"unknown action {action!r} / fallback {fallback!r}")
    p = Path(path)
    if action == "report":
        return ActionOutcome("report", True, "reported only")
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        return ActionOutcome("none", False, f"{p}: cannot open: {exc.strerror}")
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            return ActionOutcome("none", False, f"{p}: not a regular file")
        data = f.read()
    if expected_sha256 and hashlib.sha256(data).hexdigest() != expected_sha256:
        return ActionOutcome("none", False, f"{p}: changed since it was scanned; nothing done")
    meta: dict[str, object] = {
        "original_path": str(p.absolute()),
        "detections": list(detections),
        "uid": st.st_uid,
        "gid": st.st_gid,
        "mode": st.st_mode,
        "vm": vm,
        "host": host,
    }
    if action == "disinfect":
        from .disinfect import disinfect

        r = disinfect(data, list(inner_paths))
        if not r.ok or r.data is None:
            if fallback and fallback != "report":
                out = act_on_file(
                    p,
                    fallback,
                    store,
                    detections=detections,
                    expected_sha256=expected_sha256,
                    vm=vm,
                    host=host,
                )
                out.message = f"{r.reason}; {out.message}"
                return out
            return ActionOutcome("report", False, r.reason)
        try:
            entry = store.add(data, reason="backup", **meta)  # type: ignore[arg-type]
        except QuarantineError as exc:
            return ActionOutcome(
                "none", False, f"no backup could be kept, file left unchanged: {exc}"
            )
        tmp = p.parent / f".{p.name}.vmshield-disinfect.{secrets.token_hex(4)}"
        try:
            wfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(wfd, "wb") as w:
                w.write(r.data)
                w.flush()
                os.fchmod(w.fileno(), stat.S_IMODE(st.st_mode))
                if os.geteuid() == 0:
                    os.fchown(w.fileno(), st.st_uid, st.st_gid)
                os.fsync(w.fileno())
            os.rename(tmp, p)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            return ActionOutcome(
                "none", False, f"{p}: cannot write the disinfected file: {exc.strerror}", entry.id
            )
        return ActionOutcome(
            "disinfect", True, f"disinfected ({r.reason}); backup {entry.id}", entry.id
        )
    # quarantine or delete: the copy is kept (as quarantine or as backup), then the file goes.
    try:
        entry = store.add(data, reason="quarantine" if action == "quarantine" else "backup", **meta)  # type: ignore[arg-type]
    except QuarantineError as exc:
        return ActionOutcome("none", False, f"no copy could be kept, file left in place: {exc}")
    try:
        p.unlink()
    except OSError as exc:
        return ActionOutcome(
            "none",
            False,
            f"{p}: copy kept ({entry.id}) but cannot remove: {exc.strerror}",
            entry.id,
        )
    verb = "quarantined" if action == "quarantine" else "deleted (backup kept)"
    return ActionOutcome(action, True, f"{verb} as {entry.id}", entry.id)
