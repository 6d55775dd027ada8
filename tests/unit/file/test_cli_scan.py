"""`vmshield scan` and `vmshield db`: clamscan-like output, exit codes, JSON, jobs, walking."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sig_testlib import EICAR, EICAR_MD5, make_zip, write_db

from vmshield.cli import main

VMSHIELD = Path(sys.executable).parent / "vmshield"


@pytest.fixture()
def tree(tmp_path: Path) -> tuple[Path, Path]:
    db = write_db(
        tmp_path / "db",
        {
            "t.hdb": f"{EICAR_MD5}:68:Eicar.Hash\n",
            "t.ndb": "Dropper.Body:0:*:" + b"evil-dropper".hex() + "\n",
        },
    )
    t = tmp_path / "tree"
    (t / "sub" / "deeper").mkdir(parents=True)
    (t / "clean.txt").write_text("clean\n")
    (t / "eicar.com").write_bytes(EICAR)
    (t / "sub" / "dropper.sh").write_bytes(b"#!/bin/sh\n# evil-dropper\n")
    (t / "sub" / "deeper" / "arch.zip").write_bytes(make_zip({"in/e.com": EICAR, "ok": b"ok"}))
    (t / "sub" / "notes.log").write_text("log\n")
    return db, t


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["scan", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_output_like_clamscan_and_exit_1(
    tree: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    db, t = tree
    rc, out, _ = run(capsys, "-r", "--db", str(db), str(t))
    assert rc == 1
    lines = out.splitlines()
    assert f"{t}/eicar.com: Eicar.Hash FOUND" in lines
    assert f"{t}/sub/dropper.sh: Dropper.Body FOUND" in lines
    assert f"{t}/sub/deeper/arch.zip//in/e.com: Eicar.Hash FOUND" in lines
    assert f"{t}/clean.txt: OK" in lines
    assert "----------- SCAN SUMMARY -----------" in lines
    summary = out.split("----------- SCAN SUMMARY -----------")[1]
    assert "Known viruses: 2" in summary
    assert "Scanned files: 5" in summary
    assert "Infected files: 3" in summary
    assert "Engine version: vmshield" in summary and "Database version: " in summary
    assert "Data scanned: " in summary and "Time: " in summary


def test_clean_exit_0_and_missing_path_exit_2(
    tree: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    db, t = tree
    rc, out, _ = run(capsys, "--db", str(db), str(t / "clean.txt"))
    assert rc == 0 and f"{t}/clean.txt: OK" in out
    rc, out, _ = run(capsys, "--db", str(db), str(t / "clean.txt"), str(t / "nope"))
    assert rc == 2 and f"{t}/nope: ERROR No such file or directory" in out


def test_not_recursive_without_r(
    tree: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    db, t = tree
    rc, out, _ = run(capsys, "--db", str(db), "--no-summary", str(t))
    assert sorted(out.splitlines()) == [f"{t}/clean.txt: OK", f"{t}/eicar.com: Eicar.Hash FOUND"]
    assert rc == 1


def test_json_one_object_per_file(
    tree: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    db, t = tree
    rc, out, _ = run(capsys, "-r", "--json", "--db", str(db), str(t))
    objs = [json.loads(line) for line in out.splitlines()]
    assert rc == 1 and len(objs) == 5
    by = {Path(o["path"]).name: o for o in objs}
    assert by["arch.zip"]["status"] == "infected"
    assert by["arch.zip"]["detections"] == [
        {"name": "Eicar.Hash", "inner_path": "in/e.com", "engine": "hash"}
    ]
    assert by["eicar.com"]["hashes"]["md5"] == EICAR_MD5
    assert by["clean.txt"]["status"] == "clean"


def test_jobs_2_gives_the_same_results(
    tree: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    db, t = tree
    _, one, _ = run(capsys, "-r", "--no-summary", "--db", str(db), str(t))
    rc, two, _ = run(capsys, "-r", "--no-summary", "--jobs", "2", "--db", str(db), str(t))
    assert rc == 1
    assert sorted(one.splitlines()) == sorted(two.splitlines())


def test_exclude_glob_and_regex(
    tree: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    db, t = tree
    _, out, _ = run(
        capsys,
        "-r",
        "--db",
        str(db),
        "--exclude",
        "*.zip",
        "--exclude",
        "re:/sub/.*\\.log$",
        str(t),
    )
    assert "arch.zip" not in out and "notes.log" not in out
    assert "Excluded: 2" in out
    _, out, _ = run(capsys, "-r", "--db", str(db), "--exclude", "deeper", str(t))
    assert "arch.zip" not in out  # an excluded directory is not entered


def test_symlinks_out_of_the_tree_are_not_followed(
    tmp_path: Path, tree: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    db, t = tree
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "eicar2.com").write_bytes(EICAR)
    (t / "link_dir").symlink_to(outside)
    (t / "link_file").symlink_to(outside / "eicar2.com")
    _, out, _ = run(capsys, "-r", "--db", str(db), str(t))
    assert "eicar2" not in out and "link_" not in out
    assert "Skipped symlinks: 2" in out


def test_limits_options_and_line(
    tree: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    db, t = tree
    rc, out, _ = run(
        capsys, "--db", str(db), "--max-filesize", "10", "--no-summary", str(t / "eicar.com")
    )
    assert out.strip() == f"{t}/eicar.com: Limits exceeded (max_file_size)"
    assert rc == 0
    rc, out, _ = run(
        capsys,
        "--db",
        str(db),
        "--max-recursion",
        "0",
        "--no-summary",
        str(t / "sub/deeper/arch.zip"),
    )
    assert "Limits exceeded (max_recursion)" in out


def test_bad_database_lines_are_reported_and_scan_goes_on(
    tmp_path: Path, tree: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    db, t = tree
    (db / "broken.ndb").write_text("Good.Extra:0:*:" + b"clean".hex() + "\nBroken:0:*:zz\n")
    rc, out, err = run(capsys, "--db", str(db), str(t / "clean.txt"))
    assert f"{db}/broken.ndb:2: hex signature" in err
    assert "1 rejected" in out
    assert rc == 1  # the good extra line still loaded, and matches "clean"


def test_empty_database_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "e.hdb").write_text("")
    rc, _, err = run(capsys, "--db", str(tmp_path / "e.hdb"), str(tmp_path))
    assert rc == 2 and "no usable signature" in err


def test_bad_option_values_are_named(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["scan", "--max-filesize", "lots", "x"])
    assert "bad size 'lots'" in capsys.readouterr().err


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
)
def test_unreadable_file_reported_and_skipped(tree: tuple[Path, Path]) -> None:
    db, t = tree
    secret = t / "secret.bin"
    secret.write_bytes(EICAR)
    secret.chmod(0o000)
    # Root reads anything; without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH it obeys the mode bits.
    proc = subprocess.run(
        [
            "setpriv",
            "--bounding-set=-dac_override,-dac_read_search",
            str(VMSHIELD),
            "scan",
            "-r",
            "--db",
            str(db),
            str(t),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert f"{secret}: ERROR Permission denied" in proc.stdout
    assert f"{t}/eicar.com: Eicar.Hash FOUND" in proc.stdout
    assert "Total errors: 1" in proc.stdout
    assert proc.returncode == 2


def test_real_binary_exit_codes(tree: tuple[Path, Path]) -> None:
    db, t = tree
    p = subprocess.run(
        [str(VMSHIELD), "scan", "--no-summary", "--db", str(db), "-"],
        input=make_zip({"x/e.com": EICAR}),
        capture_output=True,
        timeout=120,
    )
    assert p.returncode == 1 and p.stdout.decode() == "stdin//x/e.com: Eicar.Hash FOUND\n"
    p = subprocess.run(
        [str(VMSHIELD), "scan", "--db", str(db), str(t / "eicar.com")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 1 and f"{t}/eicar.com: Eicar.Hash FOUND" in p.stdout


def test_db_info_and_hash_match_sigtool(
    tree: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    db, t = tree
    rc = main(["db", "info", str(db)])
    out = capsys.readouterr().out
    assert (
        rc == 0 and "MD5 hash (.hdb): 1" in out and "Body (.ndb): 1" in out and "Rejected: 0" in out
    )
    (db / "bad.hdb").write_text("xyz:1:Bad\n")
    rc = main(["db", "info", "--json", str(db)])
    info = json.loads(capsys.readouterr().out)
    assert rc == 1 and info["rejected"][0]["line"] == 1 and info["stats"]["md5"] == 1
    rc = main(["db", "hash", str(t / "eicar.com")])
    ours = capsys.readouterr().out.splitlines()
    assert ours[0] == f"{EICAR_MD5}:68:eicar.com"
    if shutil.which("sigtool"):
        for opt, line in (("--md5", ours[0]), ("--sha1", ours[1]), ("--sha256", ours[2])):
            ref = subprocess.run(
                ["sigtool", opt, "eicar.com"], cwd=t, capture_output=True, text=True, timeout=60
            )
            assert ref.stdout.strip() == line


def test_worker_crash_costs_one_file_not_the_scan(
    tree: tuple[Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stand-in for a C library crashing on a hostile file: the worker process dies outright.
    import signal

    from vmshield.engines.file.scanner import Scanner

    real = Scanner.scan_path

    def fragile(self: Scanner, path: str | os.PathLike[str]):  # type: ignore[no-untyped-def]
        if "crashme" in os.fspath(path):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, path)

    monkeypatch.setattr(Scanner, "scan_path", fragile)
    db, t = tree
    (t / "sub" / "crashme.bin").write_bytes(b"boom")
    rc, out, _ = run(capsys, "-r", "--jobs", "2", "--no-summary", "--db", str(db), str(t))
    lines = out.splitlines()
    assert f"{t}/sub/crashme.bin: ERROR the scanning process crashed on this file" in lines
    assert f"{t}/eicar.com: Eicar.Hash FOUND" in lines
    assert f"{t}/sub/deeper/arch.zip//in/e.com: Eicar.Hash FOUND" in lines
    assert f"{t}/clean.txt: OK" in lines
    assert len([ln for ln in lines if ln.startswith(str(t))]) == 6  # every file answered once
    assert rc == 2


def test_progress_only_on_request_or_terminal(
    tree: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    db, t = tree
    _, out, err = run(capsys, "-r", "--db", str(db), str(t))
    assert err == ""  # stderr is not a terminal here: no progress bar
    _, out2, err2 = run(capsys, "-r", "--progress", "always", "--db", str(db), str(t))
    assert "files, " in err2 and " MB] " in err2 and "\x1b[K" in err2
    assert "\x1b" not in out2  # results stay clean on stdout


def test_file_names_cannot_forge_output_lines(
    tmp_path: Path, tree: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    db, _ = tree
    d = tmp_path / "names"
    d.mkdir()
    (d / "new\nline: Fake.Virus FOUND").write_bytes(b"harmless")
    os.close(os.open(os.fsencode(d) + b"/bad\xffname", os.O_CREAT | os.O_WRONLY, 0o644))
    rc, out, _ = run(capsys, "-r", "--no-summary", "--db", str(db), str(d))
    assert rc == 0
    assert sorted(out.splitlines()) == [
        f"{d}/bad\\xffname: OK",
        f"{d}/new\\x0aline: Fake.Virus FOUND: OK",
    ]
