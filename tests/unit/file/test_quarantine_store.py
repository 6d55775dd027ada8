"""The backup/quarantine store: round trip, neutralised storage, caps, concurrency, CLI."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from container_testlib import EICAR

from vmshield.engines.file.quarantine import QuarantineError, QuarantineStore

VMSHIELD = [sys.executable, "-m", "vmshield"]


def test_round_trip_keeps_content_and_metadata(tmp_path: Path) -> None:
    src = tmp_path / "work" / "dropper.exe"
    src.parent.mkdir()
    src.write_bytes(EICAR + b"\x00tail")
    os.chmod(src, 0o751)
    store = QuarantineStore(tmp_path / "q")
    e = store.add_file(
        src, reason="quarantine", detections=["Eicar-Test-Signature"], vm="vm-1", host="esx-1"
    )
    assert e.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    assert e.md5 == hashlib.md5(src.read_bytes()).hexdigest()
    assert (e.mode, e.original_path, e.vm, e.host) == (0o751, str(src), "vm-1", "esx-1")
    src.unlink()
    [listed] = store.list()
    assert listed == e
    out = store.restore(e.id)
    assert out == src and src.read_bytes() == EICAR + b"\x00tail"
    assert stat.S_IMODE(src.stat().st_mode) == 0o751
    assert store.list() == []  # restored items leave the store


def test_stored_neutralised(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path / "q")
    e = store.add(EICAR, original_path="/x/eicar.com", detections=["Eicar"])
    for f in (tmp_path / "q").rglob("*"):
        if f.is_file():
            body = f.read_bytes()
            assert EICAR not in body and b"EICAR-STANDARD" not in body, f
            assert not f.stat().st_mode & 0o111, f"{f} is executable"
            assert stat.S_IMODE(f.stat().st_mode) & 0o077 == 0
    assert store.read(e.id) == EICAR


@pytest.mark.skipif(not os.path.exists("/usr/bin/clamscan"), reason="clamscan")
def test_other_scanners_find_nothing_in_the_store(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path / "q")
    store.add(EICAR, original_path="/x/eicar.com")
    db = tmp_path / "eicar.hdb"
    db.write_text(f"{hashlib.md5(EICAR).hexdigest()}:{len(EICAR)}:Eicar-Hash\n")
    (tmp_path / "control.com").write_bytes(EICAR)
    r = subprocess.run(
        ["clamscan", "--no-summary", "-r", "-d", str(db), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = [line for line in r.stdout.splitlines() if line.endswith("FOUND")]
    assert found == [f"{tmp_path / 'control.com'}: Eicar-Hash.UNOFFICIAL FOUND"]


def test_restore_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path / "q")
    target = tmp_path / "f.txt"
    target.write_bytes(b"new content")
    e = store.add(b"old content", original_path=str(target), reason="backup")
    with pytest.raises(QuarantineError, match="exists"):
        store.restore(e.id)
    assert target.read_bytes() == b"new content"
    store.restore(e.id, force=True, keep=True)
    assert target.read_bytes() == b"old content"
    other = tmp_path / "elsewhere"
    other.mkdir()
    assert store.restore(e.id, to=other) == other / "f.txt"
    assert (other / "f.txt").read_bytes() == b"old content"


def test_restore_over_symlink_replaces_the_link(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path / "q")
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    link = tmp_path / "link"
    link.symlink_to(victim)
    e = store.add(b"restored", original_path=str(link))
    store.restore(e.id, force=True)
    assert victim.read_bytes() == b"precious"
    assert not link.is_symlink() and link.read_bytes() == b"restored"


def test_delete_and_bad_ids(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path / "q")
    e = store.add(b"x", original_path="/a")
    store.delete(e.id)
    assert store.list() == []
    with pytest.raises(QuarantineError, match="no such item"):
        store.delete(e.id)
    for bad in ("../../etc/passwd", "a" * 31, "../" + "a" * 32, ""):
        with pytest.raises(QuarantineError, match="not a quarantine id"):
            store.get(bad)


def test_tampered_content_detected(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path / "q")
    e = store.add(b"hello world", original_path="/a")
    p = tmp_path / "q" / "items" / f"{e.id}.bin"
    b = bytearray(p.read_bytes())
    b[-1] ^= 1
    p.write_bytes(bytes(b))
    with pytest.raises(QuarantineError, match="authentication"):
        store.read(e.id)


def test_size_cap_evicts_oldest(tmp_path: Path) -> None:
    now = [1000.0]
    store = QuarantineStore(tmp_path / "q", max_bytes=10_000, clock=lambda: now[0])
    ids = []
    for i in range(6):
        now[0] += 1
        ids.append(store.add(bytes([i]) * 3000, original_path=f"/f{i}").id)
    left = [e.id for e in store.list()]
    assert left == ids[-3:]  # 3 x ~3033 bytes fit in 10 000
    assert store.total_bytes() <= 10_000
    with pytest.raises(QuarantineError, match="larger than the store cap"):
        store.add(b"z" * 20_000, original_path="/big")


def test_age_limit(tmp_path: Path) -> None:
    now = [0.0]
    store = QuarantineStore(tmp_path / "q", max_age=30 * 86400, clock=lambda: now[0])
    old = store.add(b"old", original_path="/old")
    now[0] = 20 * 86400
    mid = store.add(b"mid", original_path="/mid")
    now[0] = 31 * 86400
    assert store.enforce() == [old.id]
    assert [e.id for e in store.list()] == [mid.id]


def _writer(directory: str, n: int, tag: int) -> None:
    store = QuarantineStore(directory, max_bytes=10**9)
    for i in range(n):
        store.add(os.urandom(200) + bytes([tag, i]), original_path=f"/p{tag}/{i}")


def test_concurrent_writers(tmp_path: Path) -> None:
    d = str(tmp_path / "q")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(d, 20, t)) for t in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    store = QuarantineStore(d)
    entries = store.list()
    assert len(entries) == 80 and not store.problems
    for e in entries:
        assert hashlib.sha256(store.read(e.id)).hexdigest() == e.sha256
    assert list((tmp_path / "q" / "tmp").iterdir()) == []


def test_cli_list_restore_delete(tmp_path: Path) -> None:
    q = tmp_path / "q"
    store = QuarantineStore(q)
    target = tmp_path / "doc.docm"
    a = store.add(
        b"macro doc", original_path=str(target), detections=["Doc.Macro.X"], reason="backup"
    )
    b = store.add(EICAR, original_path=str(tmp_path / "e.com"), detections=["Eicar"])
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3] / "src")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*VMSHIELD, "quarantine", "--dir", str(q), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    r = cli("list")
    assert r.returncode == 0, r.stderr
    assert a.id in r.stdout and "Doc.Macro.X" in r.stdout and str(target) in r.stdout
    r = cli("list", "--json")
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert {x["id"] for x in rows} == {a.id, b.id}
    assert all({"original_path", "sha256", "detections", "time", "reason"} <= set(x) for x in rows)
    r = cli("restore", a.id)
    assert r.returncode == 0 and target.read_bytes() == b"macro doc"
    r = cli("restore", b.id, "--to", str(target))
    assert r.returncode == 2 and "exists" in r.stderr
    r = cli("delete", b.id)
    assert r.returncode == 0
    assert store.list() == []
    r = cli("delete", "../../../etc/passwd")
    assert r.returncode == 2 and "not a quarantine id" in r.stderr
    r = subprocess.run(
        [*VMSHIELD, "quarantine", "--dir", str(tmp_path / "nope"), "list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 2 and "not a quarantine store" in r.stderr
