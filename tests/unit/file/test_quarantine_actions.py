"""Acting on infected files: a copy is always kept before the change, and it restores."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import zipfile
from pathlib import Path

from container_testlib import EICAR, find_eicar, make_zip

from vmshield.engines.file.quarantine import QuarantineStore, act_on_file


def test_quarantine_moves_the_file_into_the_store(tmp_path: Path) -> None:
    f = tmp_path / "e.com"
    f.write_bytes(EICAR)
    store = QuarantineStore(tmp_path / "q")
    out = act_on_file(f, "quarantine", store, detections=["Eicar"])
    assert out.ok and out.action == "quarantine" and not f.exists()
    [e] = store.list()
    assert e.reason == "quarantine" and e.detections == ["Eicar"] and e.original_path == str(f)
    store.restore(e.id)
    assert f.read_bytes() == EICAR


def test_delete_keeps_a_backup(tmp_path: Path) -> None:
    f = tmp_path / "e.com"
    f.write_bytes(EICAR)
    store = QuarantineStore(tmp_path / "q")
    out = act_on_file(f, "delete", store)
    assert out.ok and not f.exists()
    assert [e.reason for e in store.list()] == ["backup"]


def test_disinfect_rewrites_in_place_with_backup(tmp_path: Path) -> None:
    f = tmp_path / "docs.zip"
    original = make_zip({"a.txt": b"keep me", "bad/e.com": EICAR})
    f.write_bytes(original)
    os.chmod(f, 0o640)
    store = QuarantineStore(tmp_path / "q")
    out = act_on_file(
        f,
        "disinfect",
        store,
        inner_paths=["bad/e.com"],
        expected_sha256=hashlib.sha256(original).hexdigest(),
    )
    assert out.ok and out.action == "disinfect", out.message
    assert zipfile.ZipFile(io.BytesIO(f.read_bytes())).namelist() == ["a.txt"]
    assert find_eicar(f.read_bytes())["found"] == []
    assert stat.S_IMODE(f.stat().st_mode) == 0o640
    [e] = store.list()
    assert e.reason == "backup" and store.read(e.id) == original


def test_disinfect_impossible_applies_fallback(tmp_path: Path) -> None:
    f = tmp_path / "e.com"
    f.write_bytes(EICAR)
    store = QuarantineStore(tmp_path / "q")
    out = act_on_file(f, "disinfect", store, inner_paths=[""], fallback="quarantine")
    assert out.ok and out.action == "quarantine" and "cannot be disinfected" in out.message
    assert not f.exists()
    f.write_bytes(EICAR)
    out = act_on_file(f, "disinfect", store, inner_paths=[""])
    assert not out.ok and f.exists() and "cannot be disinfected" in out.message


def test_changed_file_is_left_alone(tmp_path: Path) -> None:
    f = tmp_path / "e.com"
    f.write_bytes(b"new content")
    store = QuarantineStore(tmp_path / "q")
    out = act_on_file(f, "quarantine", store, expected_sha256=hashlib.sha256(EICAR).hexdigest())
    assert not out.ok and "changed since" in out.message and f.exists() and store.list() == []


def test_no_copy_no_change(tmp_path: Path) -> None:
    f = tmp_path / "big.bin"
    f.write_bytes(b"x" * 5000)
    store = QuarantineStore(tmp_path / "q", max_bytes=1000)
    out = act_on_file(f, "delete", store)
    assert not out.ok and f.exists() and "no copy" in out.message


def test_symlink_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "real"
    target.write_bytes(EICAR)
    link = tmp_path / "link"
    link.symlink_to(target)
    out = act_on_file(link, "delete", QuarantineStore(tmp_path / "q"))
    assert not out.ok and target.exists()
