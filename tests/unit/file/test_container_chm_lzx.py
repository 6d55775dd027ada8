"""CHM files whose content sits in the LZX-compressed section.

Two sources of LZX: Halibut (Debian `halibut`), a real CHM writer with a real LZX compressor,
whose files 7-Zip also extracts (the test checks every member against 7-Zip's output); and the
test-side `lzx_compress`, which writes the block types Halibut does not (stored blocks) and
controls the reset interval. EICAR is written by the tests, never stored."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest
from container_testlib import EICAR, find_eicar, have, lzx_compress, make_chm

from vmshield.engines.file.containers import open_container
from vmshield.engines.file.containers.lzx import LzxError, decompress
from vmshield.engines.file.database import Database
from vmshield.engines.file.limits import LimitExceeded, Limits, ScanBudget
from vmshield.engines.file.results import Status
from vmshield.engines.file.scanner import Scanner


def _halibut_chm(tmp_path: Path) -> Path:
    """A CHM of ~400 KB of text (a dozen LZX frames, several decoder resets), a random binary
    and EICAR, all in the LZX section."""
    rnd = random.Random(7)
    words = ["scan", "virus", "frame", "window", "reset", "block", "tree", "match", "literal"]
    (tmp_path / "eicar.com").write_bytes(EICAR)
    (tmp_path / "rnd.bin").write_bytes(rnd.randbytes(70_000))
    lines = [
        "\\cfg{chm-filename}{big.chm}",
        "\\cfg{chm-extra-file}{eicar.com}{deep/dir/e.com}",
        "\\cfg{chm-extra-file}{rnd.bin}",
        "",
        "\\title Help",
        "",
    ]
    for c in range(25):
        lines += [f"\\C{{c{c}}} Chapter {c}", ""]
        for _ in range(20):
            lines += [" ".join(rnd.choice(words) + str(rnd.randint(0, 999)) for _ in range(60)), ""]
    (tmp_path / "big.but").write_text("\n".join(lines))
    subprocess.run(["halibut", "--chm", "big.but"], cwd=tmp_path, check=True, capture_output=True)
    return tmp_path / "big.chm"


@pytest.mark.skipif(not have("halibut"), reason="halibut (scripts/apt-packages.txt) not installed")
def test_real_lzx_chm_members_match_7zip_and_eicar_found(tmp_path: Path) -> None:
    chm = _halibut_chm(tmp_path)
    data = chm.read_bytes()
    members = list(open_container(data, "big.chm", ScanBudget(Limits())) or [])
    assert all(m.error is None for m in members), [m.error for m in members if m.error]
    got = {m.name: m.data for m in members}
    assert got["deep/dir/e.com"] == EICAR
    assert got["rnd.bin"] == (tmp_path / "rnd.bin").read_bytes()
    assert sum(len(v or b"") for v in got.values()) > 6 * 0x8000  # several frames and resets
    if have("7zz"):  # an independent LZX decoder agrees on every member
        out = tmp_path / "x"
        subprocess.run(["7zz", "x", "-bd", f"-o{out}", str(chm)], check=True, capture_output=True)
        for name, body in got.items():
            assert (out / name).read_bytes() == body, name
    assert find_eicar(data, "big.chm")["found"] == ["deep/dir/e.com"]


@pytest.mark.skipif(not have("halibut"), reason="halibut (scripts/apt-packages.txt) not installed")
def test_scanner_reports_inner_path_in_lzx_chm(tmp_path: Path) -> None:
    chm = _halibut_chm(tmp_path)
    db = Database.from_texts({"e.ndb": "Eicar-Test-Signature:0:0:" + EICAR[:40].hex() + "\n"})
    res = Scanner(db).scan_path(chm)
    assert res.status is Status.INFECTED
    assert [(d.name, d.inner_path) for d in res.detections] == [
        ("Eicar-Test-Signature", "deep/dir/e.com")
    ]


def test_stored_and_verbatim_blocks_with_resets_round_trip() -> None:
    rnd = random.Random(3)
    data = (
        b"hello world, hello help file. " * 3000
        + rnd.randbytes(20_000)
        + b"\x00" * 40_001
        + bytes(range(256)) * 90
    )
    for reset in (1, 2, 4):
        comp, offsets = lzx_compress(data, reset_frames=reset, stored_every=2)
        assert len(offsets) == -(-len(data) // 0x8000)
        assert decompress(comp, len(data), 16, reset) == data


def test_lzx_chm_from_test_encoder_eicar_after_reset() -> None:
    # EICAR lands in the fifth frame, after two decoder resets and a stored block.
    text = b"".join(b"<p>line %d of the help text</p>\n" % i for i in range(4500))
    blob = make_chm(
        {"plain.html": b"<html>x</html>"},
        lzx_files={"index.html": text, "sub/e.com": EICAR, "z.bin": os.urandom(3000)},
    )
    members = {m.name: m for m in open_container(blob, "h.chm", ScanBudget(Limits())) or []}
    assert members["index.html"].data == text
    assert members["sub/e.com"].data == EICAR
    assert find_eicar(blob, "h.chm")["found"] == ["sub/e.com"]


def test_truncated_or_corrupt_lzx_is_an_error_not_clean() -> None:
    text = b"".join(b"<p>line %d</p>\n" % i for i in range(6000))
    comp, _ = lzx_compress(text + EICAR)
    with pytest.raises(LzxError):
        decompress(comp[: len(comp) // 2], len(text) + len(EICAR), 16, 2)
    bad = bytearray(comp)
    bad[0] ^= 0xFF  # the first block header: a bad block type or bad trees
    with pytest.raises(LzxError):
        decompress(bytes(bad), len(text) + len(EICAR), 16, 2)
    # Inside a CHM: the members of the LZX section are reported as errors, never as clean.
    blob = make_chm({}, lzx_files={"a.html": text, "e.com": EICAR})
    i = blob.index(comp[:64])
    broken = blob[: i + 40] + b"\xff" * (len(comp) - 40) + blob[i + len(comp) :]
    ms = list(open_container(broken, "h.chm", ScanBudget(Limits())) or [])
    assert {m.name for m in ms if m.error and "LZX" in m.error} == {"a.html", "e.com"}


def test_lzx_section_beyond_the_size_limit_is_refused_before_decoding() -> None:
    # 200 KB of compressed content, a 100 KB member limit: the section is not decoded at all.
    text = b"".join(b"<p>line %d</p>\n" % i for i in range(14_000))
    assert len(text) > 200_000
    blob = make_chm({"small.html": b"<html>ok</html>"}, lzx_files={"a.html": text})
    res = find_eicar(blob, "h.chm", Limits(max_file_size=100_000))
    assert res["limit"] == ["max_file_size"]


def test_aligned_offset_blocks_and_e8_translation_round_trip() -> None:
    # x86-like code: CALL (E8) with small relative targets, which the E8 translation rewrites.
    rnd = random.Random(5)
    code = b"".join(
        b"\x55\x89\xe5\xe8"
        + rnd.randrange(-5000, 5000).to_bytes(4, "little", signed=True)
        + b"\xc9\xc3 help "
        for _ in range(9000)
    )
    plain, _ = lzx_compress(code)
    for aligned_every, e8 in ((1, 0), (2, len(code)), (0, len(code) + 4096)):
        comp, _ = lzx_compress(code, aligned_every=aligned_every, e8_size=e8)
        if e8:
            assert comp != plain  # the translation really changed the compressed stream
        assert decompress(comp, len(code), 16, 2) == code
    # Inside a CHM, EICAR after E8-translated, aligned-block content is still found.
    blob = make_chm(
        {}, lzx_files={"a.exe": code, "z/e.com": EICAR}, aligned_every=1, e8_size=len(code) + 68
    )
    assert find_eicar(blob, "h.chm")["found"] == ["z/e.com"]


def test_many_blocks_per_frame_and_the_budget_is_checked_per_block() -> None:
    text = b"".join(b"<p>line %d of the help</p>\n" % i for i in range(3000))
    comp, _ = lzx_compress(text, block_size=1000, aligned_every=2)
    assert decompress(comp, len(text), 16, 2) == text
    blocks = -(-0x8000 // 1000) * (len(text) // 0x8000) + 1
    ticks: list[int] = []
    decompress(comp, len(text), 16, 2, lambda: ticks.append(1))
    assert len(ticks) >= blocks  # once per block at least, not only once per frame

    # Out of time in the middle of a frame: the budget's exception ends the decoding.
    def tick() -> None:
        ticks.append(1)
        if len(ticks) > 5:
            raise LimitExceeded("max_scan_time", "test")

    ticks.clear()
    with pytest.raises(LimitExceeded):
        decompress(comp, len(text), 16, 2, tick)
