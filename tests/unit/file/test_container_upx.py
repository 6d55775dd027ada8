"""UPX: the NRV2B/2D/2E decompressors against the test's own encoder (LZMA through Python's own
lzma), and unpacking a PE laid out
as UPX lays out Win32 files. No UPX packer is installable here (not in Debian's archive on this
machine, nor on PyPI as a binary), so no file packed by UPX itself is tested."""

from __future__ import annotations

import random
import struct

import pytest
from container_testlib import EICAR, find_eicar, make_upx_pe, nrv_compress

from vmshield.engines.file.containers import open_container
from vmshield.engines.file.containers._nrv import NrvError, nrv2b, nrv2d, nrv2e
from vmshield.engines.file.limits import LimitExceeded, Limits, ScanBudget


def sample(seed: int) -> bytes:
    rnd = random.Random(seed)
    words = [b"kernel32.dll", b"\x00" * 40, b"\xff\x25", EICAR, bytes(range(64))]
    return b"".join(rnd.choice(words) for _ in range(800)) + rnd.randbytes(2000) + b"A" * 9000


@pytest.mark.parametrize(("variant", "decode"), [("b", nrv2b), ("d", nrv2d), ("e", nrv2e)])
def test_nrv_round_trip(variant: str, decode) -> None:  # type: ignore[no-untyped-def]
    for seed in range(3):
        data = sample(seed)
        packed = nrv_compress(data, variant)
        assert len(packed) < len(data) // 2
        assert decode(packed, len(data)) == data


def test_nrv_bounded_and_corrupt() -> None:
    data = sample(1)
    packed = nrv_compress(data, "e")
    with pytest.raises(NrvError, match="larger than declared"):
        nrv2e(packed, len(data) // 2)
    with pytest.raises(NrvError):
        nrv2e(packed[: len(packed) // 3], len(data))
    with pytest.raises(NrvError, match="offset"):
        nrv2b(b"\x00\x00\x00\x68\x01", 100)  # bits 0,11,01: a match before any output


@pytest.mark.parametrize("method", [2, 5, 8, 14])
def test_upx_pe_unpacked_and_scanned(method: int) -> None:
    image = sample(2)
    exe = make_upx_pe(image, method)
    assert EICAR not in exe  # hidden by compression
    ms = list(open_container(exe, "packed.exe", ScanBudget(Limits())) or [])
    [m] = [m for m in ms if m.name == "upx-unpacked"]
    assert m.error is None and m.data == image


def test_upx_unpacked_eicar_found_at_start() -> None:
    exe = make_upx_pe(EICAR + b" " * 1000)
    assert find_eicar(exe)["found"] == ["upx-unpacked"]


def test_upx_checksum_and_size_limits() -> None:
    image = sample(0)
    exe = bytearray(make_upx_pe(image))
    ph = exe.index(b"UPX!")
    bad = bytearray(exe)
    bad[0x400 + 100] ^= 0xFF
    [m] = [
        m
        for m in open_container(bytes(bad), "x.exe", ScanBudget(Limits())) or []
        if m.name == "upx-unpacked"
    ]
    assert m.error and "checksum" in m.error
    struct.pack_into("<I", exe, ph + 16, 500 * 1024 * 1024)  # u_len: a 500 MiB image
    with pytest.raises(LimitExceeded) as ei:
        list(open_container(bytes(exe), "x.exe", ScanBudget(Limits())) or [])
    assert ei.value.limit == "max_file_size"


def test_random_bytes_never_crash_decoders() -> None:
    rnd = random.Random(7)
    for _ in range(300):
        blob = rnd.randbytes(rnd.randrange(0, 200))
        for dec in (nrv2b, nrv2d, nrv2e):
            try:
                out = dec(blob, 4096)
                assert len(out) <= 4096
            except NrvError:
                pass
