#!/usr/bin/env python3
"""Write the demo tree and database `make run` scans.

The tree holds the EICAR test string (written by this code, never stored in the repository),
a few clean files, a zip and a tar.gz with EICAR inside, and a nested archive; the database has
one signature of each kind (.hdb, .hsb, .ndb, .ldb, .yar) that detects them.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import sys
import tarfile
import zipfile
from pathlib import Path

# EICAR, assembled from two halves so this source file is not itself detected by scanners.
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-" + b"STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _targz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def main(out: str) -> None:
    root = Path(out)
    tree, db = root / "tree", root / "db"
    for d in (tree, db):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
    dropper = b"#!/bin/sh\n# demo dropper\necho 'vmshield-demo-dropper: fetch and run payload'\n"
    macro = b'Sub AutoOpen()\n  Shell "cmd /c vmshield-demo-macro"\nEnd Sub\n'
    (tree / "readme.txt").write_text("A clean text file.\n")
    (tree / "notes.md").write_text("# Notes\n\nNothing to see here.\n")
    (tree / "data.bin").write_bytes(bytes(range(256)) * 16)
    (tree / "eicar.com").write_bytes(EICAR)
    (tree / "dropper.sh").write_bytes(dropper)
    (tree / "macro.vba").write_bytes(macro)
    (tree / "clean.zip").write_bytes(_zip({"a.txt": b"hello\n", "b.txt": b"world\n"}))
    (tree / "eicar.zip").write_bytes(_zip({"docs/readme.txt": b"ok\n", "docs/eicar.com": EICAR}))
    inner = _targz({"bin/tool.sh": dropper})
    (tree / "nested.zip").write_bytes(_zip({"pkg/payload.tar.gz": inner, "pkg/ok.txt": b"ok"}))

    (db / "demo.hdb").write_text(f"{hashlib.md5(EICAR).hexdigest()}:{len(EICAR)}:Demo.EICAR.HDB\n")
    (db / "demo.hsb").write_text(
        f"{hashlib.sha256(dropper).hexdigest()}:{len(dropper)}:Demo.Dropper.SHA256\n"
    )
    (db / "demo.ndb").write_text(
        "Demo.EICAR.NDB:0:0:" + EICAR[:20].hex() + "*" + b"ANTIVIRUS-TEST".hex() + "\n"
    )
    (db / "demo.ldb").write_text(
        "Demo.Macro.LDB;Target:0;0&1;" + b"AutoOpen".hex() + "::i;" + b"Shell".hex() + "\n"
    )
    (db / "demo.yar").write_text(
        'rule Demo_Dropper_YARA {\n  strings:\n    $a = "vmshield-demo-dropper"\n'
        "  condition:\n    $a\n}\n"
    )
    print(f"demo tree in {tree}, database in {db}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "var/demo")
