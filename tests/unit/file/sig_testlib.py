"""Helpers for the signature/scanner/CLI tests: EICAR written by code, databases from text."""

from __future__ import annotations

import hashlib
import io
import re
import subprocess
import tarfile
import zipfile
from pathlib import Path

from vmshield.engines.file.database import Database
from vmshield.engines.file.scanner import Scanner

# The standard 68-byte EICAR test string, joined at run time so this file is not itself flagged.
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-" + b"STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
assert len(EICAR) == 68
EICAR_MD5 = hashlib.md5(EICAR).hexdigest()


def db_of(**files: str) -> Database:
    """db_of(a_ndb="...") → a Database built from in-memory files (underscore → dot)."""
    return Database.from_texts({k.replace("_", "."): v for k, v in files.items()})


def names(db: Database, data: bytes) -> set[str]:
    return {d.name for d in Scanner(db, containers=False).scan_bytes(data, "x").detections}


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for n, d in members.items():
            z.writestr(n, d)
    return buf.getvalue()


def make_targz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for n, d in members.items():
            info = tarfile.TarInfo(n)
            info.size = len(d)
            t.addfile(info, io.BytesIO(d))
    return buf.getvalue()


def write_db(dirpath: Path, files: dict[str, str]) -> Path:
    dirpath.mkdir(parents=True, exist_ok=True)
    for n, content in files.items():
        (dirpath / n).write_text(content)
    return dirpath


def clamscan(db: Path, files: list[Path]) -> dict[str, set[str]]:
    """What ClamAV's clamscan reports for each file (by name): every match, bytecode off,
    the `.UNOFFICIAL` suffix of unsigned databases removed."""
    proc = subprocess.run(
        [
            "clamscan",
            "--no-summary",
            "--allmatch",
            "--bytecode=no",
            "-d",
            str(db),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode in (0, 1), proc.stderr
    found: dict[str, set[str]] = {f.name: set() for f in files}
    for m in re.finditer(r"^(.*): (\S+) FOUND$", proc.stdout, re.M):
        found[Path(m.group(1)).name].add(m.group(2).removesuffix(".UNOFFICIAL"))
    return found
