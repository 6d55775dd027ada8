"""Archive bombs and every limit end fast with LimitExceeded naming the limit."""

from __future__ import annotations

import gzip
import io
import struct
import zipfile
import zlib

import pytest
from container_testlib import EICAR, find_eicar, make_tar, make_zip

from vmshield.engines.file.containers import open_container
from vmshield.engines.file.containers.zipfmt import read_directory
from vmshield.engines.file.limits import LimitExceeded, Limits, ScanBudget

MiB = 1024 * 1024


def drain(blob: bytes, limits: Limits | None = None, name: str = "x", clock=None) -> list:  # type: ignore[no-untyped-def]
    it = open_container(blob, name, ScanBudget(limits or Limits(), clock=clock))
    assert it is not None
    return list(it)


def zeros_zip(size: int) -> bytes:
    return make_zip({"zeros.bin": b"\x00" * size})


def test_high_ratio_zip_refused_before_inflating() -> None:
    with pytest.raises(LimitExceeded) as ei:
        drain(zeros_zip(40 * MiB))
    assert ei.value.limit == "bomb_ratio"


def test_lying_declared_size_caught_while_inflating() -> None:
    """The header says 100 bytes; inflation stops at the ratio limit, not at 40 MiB."""
    blob = bytearray(zeros_zip(40 * MiB))
    d = read_directory(bytes(blob))
    e = d.entries[0]
    struct.pack_into("<I", blob, e.cen_offset + 24, 100)  # central: uncompressed size
    struct.pack_into("<I", blob, e.local_offset + 22, 100)  # local: uncompressed size
    with pytest.raises(LimitExceeded) as ei:
        drain(bytes(blob))
    assert ei.value.limit == "bomb_ratio"


def test_gzip_bomb_stops_while_streaming() -> None:
    with pytest.raises(LimitExceeded) as ei:
        drain(gzip.compress(b"\x00" * 40 * MiB, 9))
    assert ei.value.limit == "bomb_ratio"


def test_overlapping_zip_entries() -> None:
    """Fifield's non-recursive bomb: many central entries reuse one local file's bytes."""
    blob = make_zip({"kernel.bin": b"A" * 1000})
    d = read_directory(blob)
    cen = blob[d.cd_offset : d.cd_offset + d.cd_size]
    n = 50
    # n central records, all pointing at the one local header, then a new end record.
    fixed = bytearray()
    for i in range(n):
        rec = bytearray(cen[:46]) + b"k%05d.bin" % i
        struct.pack_into("<HHH", rec, 28, 10, 0, 0)
        fixed += rec
    eocd = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, n, n, len(fixed), d.cd_offset, 0)
    bomb = blob[: d.cd_offset] + bytes(fixed) + eocd
    # A reader that trusts the directory would inflate 50 members from the same bytes.
    assert len(zipfile.ZipFile(io.BytesIO(bomb)).namelist()) == n
    with pytest.raises(LimitExceeded) as ei:
        drain(bomb)
    assert ei.value.limit == "zip_overlap"


def test_42zip_style_nesting_ends_at_first_bomb_layer() -> None:
    leaf = zeros_zip(20 * MiB)
    level = leaf
    for _ in range(3):
        level = make_zip({f"l{i}.zip": level for i in range(16)})
    assert len(level) < 2 * MiB
    r = find_eicar(level)
    assert r["limit"] == ["bomb_ratio"]


def test_deep_nesting_hits_max_recursion() -> None:
    blob = EICAR
    for i in range(25):
        blob = make_zip({f"d{i}.zip" if i else "eicar.com": blob})
    r = find_eicar(blob, limits=Limits(max_recursion=17))
    assert r["limit"] == ["max_recursion"]
    assert r["found"] == []


def test_member_over_max_file_size() -> None:
    with pytest.raises(LimitExceeded) as ei:
        drain(make_zip({"big": b"x" * 5000}, zipfile.ZIP_STORED), Limits(max_file_size=1000))
    assert ei.value.limit == "max_file_size"


def test_tar_member_over_max_file_size() -> None:
    with pytest.raises(LimitExceeded) as ei:
        drain(make_tar({"big": b"x" * 5000}), Limits(max_file_size=1000))
    assert ei.value.limit == "max_file_size"


def test_tar_siblings_of_an_oversize_member_still_read() -> None:
    it = open_container(
        make_tar({"big": b"x" * 5000, "e.com": EICAR}),
        "a.tar",
        ScanBudget(Limits(max_file_size=1000)),
    )
    assert it is not None
    seen = []
    with pytest.raises(LimitExceeded) as ei:
        for m in it:
            seen.append(m.name)
    assert seen == ["e.com"] and ei.value.limit == "max_file_size" and "big" in ei.value.detail


def test_gzip_output_bounded_by_remaining_size() -> None:
    # Low-ratio data (random) but more than max_file_size once inflated.
    import os

    with pytest.raises(LimitExceeded) as ei:
        drain(gzip.compress(os.urandom(200_000)), Limits(max_file_size=100_000))
    assert ei.value.limit == "max_file_size"


def test_too_many_members() -> None:
    blob = make_zip({f"f{i}": b"" for i in range(200)})
    with pytest.raises(LimitExceeded) as ei:
        drain(blob, Limits(max_files=50))
    assert ei.value.limit == "max_files"


def test_scan_time_limit() -> None:
    t = [0.0]

    def clock() -> float:
        t[0] += 1.0  # every check costs a "second"
        return t[0]

    blob = make_zip({f"f{i}": b"data" for i in range(100)})
    with pytest.raises(LimitExceeded) as ei:
        drain(blob, Limits(max_scan_time=20), clock=clock)
    assert ei.value.limit == "max_scan_time"


def test_total_scan_size_counted_across_members() -> None:
    blob = make_zip({f"f{i}": bytes([i]) * 50_000 for i in range(20)}, zipfile.ZIP_STORED)
    r = find_eicar(blob, limits=Limits(max_scan_size=400_000))
    assert r["limit"] == ["max_scan_size"]


def test_deflate_member_declared_ratio_in_raw_stream() -> None:
    # Same bomb as a raw deflate member with data descriptor and no central directory.
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = raw.compress(b"\x00" * 30 * MiB) + raw.flush()
    local = (
        struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0x08, 8, 0, 0, 0, 0, 0, 1, 0) + b"z" + body
    )
    with pytest.raises(LimitExceeded) as ei:
        drain(local)
    assert ei.value.limit == "bomb_ratio"


def test_zip_siblings_of_a_bomb_are_yielded_before_the_limit() -> None:
    blob = make_zip({"bomb": b"\x00" * 40 * MiB, "after.com": EICAR})
    it = open_container(blob, "x.zip", ScanBudget(Limits()))
    assert it is not None
    seen = []
    with pytest.raises(LimitExceeded) as ei:
        for m in it:
            seen.append(m.name)
    assert seen == ["after.com"]
    assert ei.value.limit == "bomb_ratio" and "bomb" in ei.value.detail


def test_compressed_tar_members_limited_not_the_whole_tar() -> None:
    import random

    rnd = random.Random(1)
    words = [b"alpha ", b"bravo ", b"charlie ", b"delta ", b"echo ", b"foxtrot "]
    # Text that compresses ~3x (far from a bomb): the tar is 900 kB, each member 300 kB.
    files = {
        f"part{i}.txt": b"".join(rnd.choice(words) for _ in range(45_000))[:300_000]
        for i in range(3)
    }
    files["z/e.com"] = EICAR
    for mode in ("w:gz", "w:bz2", "w:xz"):
        r = find_eicar(make_tar(files, mode), limits=Limits(max_file_size=400_000))
        assert r["found"] == ["z/e.com"] and r["limit"] == [], mode
