"""Capture reader: pcap (both byte orders, micro/nano) and pcapng, truncation after the good part."""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import PcapNgWriter, wrpcap

from vmshield.engines.net.pcap import CaptureError, CaptureTruncated, read_packets


def _frames(n: int) -> list[Ether]:
    out = []
    for i in range(n):
        p = Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1000 + i, dport=53) / b"x"
        p.time = 1_700_000_000 + i + 0.25
        out.append(p)
    return out


def test_classic_pcap_little_endian(tmp_path: Path) -> None:
    path = tmp_path / "a.pcap"
    wrpcap(str(path), _frames(3))
    recs = list(read_packets(path.read_bytes()))
    assert len(recs) == 3
    assert recs[1].linktype == 1
    assert recs[1].ts == pytest.approx(1_700_000_001.25)
    assert recs[2].data == bytes(_frames(3)[2])


def _pcap_bytes(endian: str, nano: bool, frames: list[bytes], linktype: int = 1) -> bytes:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    for i, f in enumerate(frames):
        frac = 123456789 if nano else 123456
        out += struct.pack(endian + "IIII", 1000 + i, frac, len(f), len(f)) + f
    return out


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_byte_orders_and_resolution(endian: str, nano: bool) -> None:
    frames = [bytes(f) for f in _frames(2)]
    recs = list(read_packets(_pcap_bytes(endian, nano, frames)))
    assert [r.data for r in recs] == frames
    assert recs[0].ts == pytest.approx(1000.123456789 if nano else 1000.123456, abs=1e-9)


def test_pcapng_written_by_scapy(tmp_path: Path) -> None:
    path = tmp_path / "b.pcapng"
    frames = _frames(2)
    w = PcapNgWriter(str(path))
    for f in frames:
        w.write(f)
    w.close()
    recs = list(read_packets(path.read_bytes()))
    assert [r.data for r in recs] == [bytes(f) for f in frames]
    assert recs[0].ts == pytest.approx(1_700_000_000.25)


def test_pcapng_several_interfaces_and_link_types() -> None:
    # Two interfaces in one section: Ethernet "eth0" and raw IP "nfq0" (hand-built blocks).
    shb = _pcapng_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    name = b"nfq0"
    idb0 = _pcapng_block(1, struct.pack("<HHI", 1, 0, 0))
    idb1 = _pcapng_block(
        1,
        struct.pack("<HHI", 101, 0, 0) + struct.pack("<HH", 2, 4) + name + struct.pack("<HH", 0, 0),
    )
    eth = bytes(_frames(1)[0])
    raw = bytes(IP(src="10.9.9.9", dst="10.8.8.8") / UDP(dport=7))
    epb0 = _pcapng_block(6, struct.pack("<IIIII", 0, 0, 1_000_000, len(eth), len(eth)) + eth)
    epb1 = _pcapng_block(6, struct.pack("<IIIII", 1, 0, 2_000_000, len(raw), len(raw)) + raw)
    recs = list(read_packets(shb + idb0 + idb1 + epb0 + epb1))
    assert [(r.linktype, r.data) for r in recs] == [(1, eth), (101, raw)]
    assert recs[1].iface == "nfq0" and recs[0].iface == "if0"
    assert recs[1].ts == pytest.approx(2.0)


def _pcapng_block(btype: int, body: bytes) -> bytes:
    pad = (-len(body)) % 4
    ln = 12 + len(body) + pad
    return struct.pack("<II", btype, ln) + body + b"\0" * pad + struct.pack("<I", ln)


def test_pcapng_simple_packet_block_and_nanosecond_option() -> None:
    shb = _pcapng_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    opt = struct.pack("<HHB3x", 9, 1, 9) + struct.pack("<HH", 0, 0)  # if_tsresol = 10^-9
    idb = _pcapng_block(1, struct.pack("<HHI", 1, 0, 65535) + opt)
    f = bytes(_frames(1)[0])
    ts = 1_700_000_000_500_000_000
    epb = _pcapng_block(6, struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(f), len(f)) + f)
    spb = _pcapng_block(3, struct.pack("<I", len(f)) + f)
    recs = list(read_packets(shb + idb + epb + spb))
    assert [r.data for r in recs] == [f, f]
    assert recs[0].ts == pytest.approx(1_700_000_000.5)


def test_big_endian_pcapng() -> None:
    def blk(btype: int, body: bytes) -> bytes:
        pad = (-len(body)) % 4
        ln = 12 + len(body) + pad
        return struct.pack(">II", btype, ln) + body + b"\0" * pad + struct.pack(">I", ln)

    f = bytes(_frames(1)[0])
    data = (
        blk(0x0A0D0D0A, struct.pack(">IHHq", 0x1A2B3C4D, 1, 0, -1))
        + blk(1, struct.pack(">HHI", 1, 0, 0))
        + blk(6, struct.pack(">IIIII", 0, 0, 5_000_000, len(f), len(f)) + f)
    )
    recs = list(read_packets(data))
    assert recs[0].data == f and recs[0].ts == pytest.approx(5.0)


def test_truncated_pcap_yields_the_good_records_then_errors() -> None:
    frames = [bytes(f) for f in _frames(3)]
    data = _pcap_bytes("<", False, frames)
    got = []
    with pytest.raises(CaptureTruncated, match="after 2 packets"):
        for r in read_packets(data[:-10]):
            got.append(r.data)
    assert got == frames[:2]


def test_truncated_pcapng() -> None:
    shb = _pcapng_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb = _pcapng_block(1, struct.pack("<HHI", 1, 0, 0))
    f = bytes(_frames(1)[0])
    epb = _pcapng_block(6, struct.pack("<IIIII", 0, 0, 1, len(f), len(f)) + f)
    got = []
    with pytest.raises(CaptureTruncated):
        for r in read_packets(shb + idb + epb + epb[:20]):
            got.append(r)
    assert len(got) == 1


def test_not_a_capture() -> None:
    with pytest.raises(CaptureError, match="not a pcap"):
        list(read_packets(b"GIF89a this is a picture"))
    with pytest.raises(CaptureError, match="empty"):
        list(read_packets(b""))


def test_corrupt_record_length_is_refused() -> None:
    data = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    data += struct.pack("<IIII", 1, 0, 0x7FFFFFFF, 10) + b"x" * 100
    with pytest.raises(CaptureError, match="corrupt"):
        list(read_packets(data))


class _Pipe(io.RawIOBase):
    """A pipe: at most 7 bytes per system call, whatever was asked."""

    def __init__(self, data: bytes) -> None:
        self._data, self._pos = data, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        out = self._data[self._pos : self._pos + min(7, len(b))]
        b[: len(out)] = out
        self._pos += len(out)
        return len(out)


def test_capture_from_a_pipe_gives_the_same_records() -> None:
    # Records of every size up to 70 000 bytes, over 1 MB in total, from a stream that gives
    # 7 bytes per system call (as `vmshield nids --pcap /dev/stdin` reads a pipe): the same
    # records as from memory, and a cut last record still reported.
    frames = [bytes([i % 256]) * (i * 997 % 70_000 + 1) for i in range(60)]
    data = _pcap_bytes("<", False, frames)
    assert len(data) > 1 << 20
    assert [r.data for r in read_packets(io.BufferedReader(_Pipe(data)))] == frames
    with pytest.raises(CaptureTruncated, match=r"record 60 \(\d+ of \d+ bytes\) after 59"):
        list(read_packets(io.BufferedReader(_Pipe(data[:-5]))))


def test_every_cut_point_of_a_pcap() -> None:
    # Cut anywhere: the whole records before the cut come out, then the truncation is reported
    # (a cut on a record boundary is a clean end), whatever the reader's buffering.
    frames = [bytes(f) for f in _frames(3)]
    data = _pcap_bytes(">", True, frames)
    bounds = [24]
    for f in frames:
        bounds.append(bounds[-1] + 16 + len(f))
    for cut in range(24, len(data) + 1):
        whole = sum(1 for b in bounds[1:] if b <= cut)
        for src in (data[:cut], _Pipe(data[:cut])):
            got = []
            try:
                for r in read_packets(src):  # type: ignore[arg-type]
                    got.append(r.data)
            except CaptureTruncated as exc:
                assert cut not in bounds, cut
                assert f"after {whole} packets" in str(exc)
            else:
                assert cut in bounds, cut
            assert got == frames[:whole], cut
