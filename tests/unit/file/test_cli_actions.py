"""`vmshield scan --action`: a copy is kept before any change; disinfect, quarantine, delete."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from sig_testlib import EICAR, EICAR_MD5, make_zip, write_db

from vmshield.cli import main
from vmshield.cli._actions import apply
from vmshield.engines.file.database import Database
from vmshield.engines.file.quarantine import QuarantineStore
from vmshield.engines.file.scanner import Scanner


@pytest.fixture()
def setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    db = write_db(tmp_path / "db", {"t.hdb": f"{EICAR_MD5}:68:Eicar.Hash\n"})
    t = tmp_path / "tree"
    t.mkdir()
    return db, t, tmp_path / "store"


def test_disinfect_zip_keeps_others_and_a_backup(
    setup: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    db, t, store = setup
    original = make_zip({"ok.txt": b"keep me" * 50, "bad.com": EICAR, "z.txt": b"me too"})
    (t / "a.zip").write_bytes(original)
    rc = main(
        [
            "scan",
            "--db",
            str(db),
            "--action",
            "disinfect",
            "--quarantine-dir",
            str(store),
            str(t / "a.zip"),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 1 and "Disinfected (removed bad.com" in out
    with zipfile.ZipFile(t / "a.zip") as z:
        assert z.namelist() == ["ok.txt", "z.txt"]
        assert z.read("ok.txt") == b"keep me" * 50
    entries = QuarantineStore(store).list()
    assert len(entries) == 1 and entries[0].reason == "backup"
    assert QuarantineStore(store).read(entries[0].id) == original
    main(["scan", "--db", str(db), str(t / "a.zip")])
    assert f"{t}/a.zip: OK" in capsys.readouterr().out


def test_cannot_disinfect_falls_back_to_quarantine(
    setup: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    db, t, store = setup
    (t / "e.com").write_bytes(EICAR)
    rc = main(
        [
            "scan",
            "--db",
            str(db),
            "--action",
            "disinfect",
            "--quarantine-dir",
            str(store),
            str(t / "e.com"),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 1 and "(left in place)" in out and (t / "e.com").exists()
    main(
        [
            "scan",
            "--db",
            str(db),
            "--action",
            "disinfect",
            "--fallback",
            "quarantine",
            "--quarantine-dir",
            str(store),
            str(t / "e.com"),
        ]
    )
    assert "moved to quarantine" in capsys.readouterr().out
    assert not (t / "e.com").exists()
    (entry,) = QuarantineStore(store).list()
    assert entry.original_path == str(t / "e.com") and entry.detections == ["Eicar.Hash"]
    # Stored neutralised: the store directory itself scans clean.
    rc = main(["scan", "-r", "--db", str(db), str(store)])
    assert rc == 0


def test_delete_keeps_backup(
    setup: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    db, t, store = setup
    (t / "e.com").write_bytes(EICAR)
    (t / "clean.txt").write_text("fine\n")
    main(
        [
            "scan",
            "-r",
            "--db",
            str(db),
            "--action",
            "delete",
            "--quarantine-dir",
            str(store),
            str(t),
        ]
    )
    assert "Removed. (backup" in capsys.readouterr().out
    assert not (t / "e.com").exists() and (t / "clean.txt").exists()
    (entry,) = QuarantineStore(store).list()
    assert QuarantineStore(store).read(entry.id) == EICAR


def test_file_changed_since_scan_is_left_alone(setup: tuple[Path, Path, Path]) -> None:
    db, t, store = setup
    p = t / "e.com"
    p.write_bytes(EICAR)
    result = Scanner(Database.load(db)).scan_path(p)
    p.write_bytes(EICAR + b"changed")
    line = apply("delete", result, str(store))
    assert line is not None and "changed since" in line and p.exists()


def test_unusable_store_means_no_change(setup: tuple[Path, Path, Path]) -> None:
    db, t, _ = setup
    p = t / "e.com"
    p.write_bytes(EICAR)
    result = Scanner(Database.load(db)).scan_path(p)
    blocker = t / "not-a-dir"
    blocker.write_text("x")
    line = apply("quarantine", result, str(blocker / "store"))
    assert line is not None and "left alone" in line and p.read_bytes() == EICAR
