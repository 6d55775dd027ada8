"""--action for `vmshield scan`: disinfect, quarantine or delete an infected file.

Every change is preceded by a copy in the backup/quarantine store (engines.file.quarantine);
if that copy cannot be made, the file is left alone. The file must still be the one that was
scanned (same MD5): a file changed since its scan is left alone too.
"""

from __future__ import annotations

import hashlib
import os
import tempfile

from vmshield.engines.file.results import ScanResult, Status
from vmshield.engines.file.scanner import Scanner


def _current_md5(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "md5").hexdigest()
    except OSError:
        return None


def _store(quarantine_dir: str):  # type: ignore[no-untyped-def]
    from vmshield.engines.file.quarantine import QuarantineStore

    return QuarantineStore(quarantine_dir)


def _replace(path: str, data: bytes) -> None:
    """Write `data` over `path` atomically, keeping owner and mode."""
    st = os.stat(path)
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".vmshield-", dir=d)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, st.st_mode & 0o7777)
        try:
            os.chown(tmp, st.st_uid, st.st_gid)
        except PermissionError:
            pass
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def apply(
    action: str,
    result: ScanResult,
    quarantine_dir: str,
    scanner: Scanner | None = None,
    fallback: str = "report",
) -> str | None:
    """Do `action` to the infected file of `result`; returns what happened, for the output."""
    if action == "report" or result.status is not Status.INFECTED:
        return None
    path = result.path
    names = sorted({d.name for d in result.detections})
    if result.hashes is None or _current_md5(path) != result.hashes.md5:
        return "ERROR file changed since it was scanned: left alone"
    try:
        store = _store(quarantine_dir)
    except Exception as exc:  # noqa: BLE001 - any store failure means: change nothing
        return f"ERROR quarantine store {quarantine_dir}: {exc}: left alone"

    if action == "disinfect":
        from vmshield.engines.file.disinfect import disinfect

        with open(path, "rb") as fh:
            data = fh.read()
        res = disinfect(data, [d.inner_path for d in result.detections])
        if res.ok and res.data is not None and scanner is not None:
            again = scanner.scan_bytes(res.data, path)
            if again.status is Status.INFECTED:
                res.ok = False
                res.reason = "cannot be disinfected: still infected after rebuilding"
        if not res.ok or res.data is None:
            if fallback in ("quarantine", "delete"):
                line = apply(fallback, result, quarantine_dir, scanner)
                return f"{res.reason}; {line}"
            return f"{res.reason} (left in place)"
        try:
            entry = store.add_file(path, reason="backup", detections=names)
        except Exception as exc:  # noqa: BLE001
            return f"ERROR backup failed ({exc}): left alone"
        try:
            _replace(path, res.data)
        except OSError as exc:
            return f"ERROR cannot rewrite ({exc.strerror}); backup {entry.id} kept"
        removed = ", ".join(res.removed) or "infected part"
        return f"Disinfected (removed {removed}; backup {entry.id})"

    if action in ("quarantine", "delete"):
        reason = "quarantine" if action == "quarantine" else "backup"
        try:
            entry = store.add_file(path, reason=reason, detections=names)
        except Exception as exc:  # noqa: BLE001
            return f"ERROR {reason} copy failed ({exc}): left alone"
        try:
            os.unlink(path)
        except OSError as exc:
            return f"ERROR cannot remove ({exc.strerror}); copy {entry.id} kept"
        return (
            f"moved to quarantine ({entry.id})"
            if action == "quarantine"
            else f"Removed. (backup {entry.id})"
        )
    raise ValueError(f"unknown action {action!r}")
