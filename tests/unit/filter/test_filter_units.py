"""Pure parts of the filter and the lab: netlink encoding, exclusions, crafted packets, config."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import pytest

from vmshield.filter import nfqueue as nfq
from vmshield.filter.exclusions import ExclusionError, decide, parse_exclusions
from vmshield.filter.inject import TcpView, block_page_response, checksum, tcp_packet
from vmshield.lab import craft
from vmshield.lab.servers import dns_answer


def _attr(t: int, v: bytes) -> bytes:
    return nfq._attr(t, v)


def _packet_msg(pid: int, payload: bytes, **extra: bytes) -> bytes:
    body = struct.pack("=BBH", socket.AF_INET, 0, socket.htons(3))
    body += _attr(nfq.NFQA_PACKET_HDR, struct.pack("!IHB", pid, 0x0800, 2))
    body += _attr(nfq.NFQA_IFINDEX_PHYSINDEV, struct.pack("!I", 7))
    body += _attr(nfq.NFQA_HWADDR, struct.pack("!HH", 6, 0) + b"\x02\x11\x22\x33\x44\x55\0\0")
    body += _attr(nfq.NFQA_PAYLOAD, payload)
    for v in extra.values():
        body += v
    return struct.pack("=IHHII", 16 + len(body), (3 << 8) | 0, 0, 0, 0) + body


def test_parses_queued_packets_from_a_netlink_datagram() -> None:
    ip = tcp_packet(b"\x0a\xe7\x01\x02", b"\x0a\xe7\x01\x03", 1234, 80, 1, 0, 0x02)
    data = _packet_msg(41, ip) + _packet_msg(
        42, ip, cap=_attr(nfq.NFQA_CAP_LEN, struct.pack("!I", 9000))
    )
    msgs = list(nfq._split(data))
    assert len(msgs) == 2
    pkts = [nfq._parse_packet(body) for _, _, body in msgs]
    assert [p.packet_id for p in pkts] == [41, 42]  # type: ignore[union-attr]
    assert pkts[0].payload == ip and pkts[0].physindev == 7  # type: ignore[union-attr]
    assert pkts[0].hwaddr == b"\x02\x11\x22\x33\x44\x55"  # type: ignore[union-attr]
    assert pkts[1].cap_len == 9000  # type: ignore[union-attr]


def test_truncated_or_garbage_netlink_never_raises() -> None:
    ip = tcp_packet(b"\x0a\xe7\x01\x02", b"\x0a\xe7\x01\x03", 1234, 80, 1, 0, 0x02)
    good = _packet_msg(5, ip)
    for cut in range(len(good)):
        for _, _, body in nfq._split(good[:cut]):
            nfq._parse_packet(body)
    assert nfq._parse_packet(memoryview(b"\0" * 4)) is None  # no packet header: not a packet


def test_batch_verdict_and_bypass_mark_messages() -> None:
    q = nfq.NfQueue.__new__(nfq.NfQueue)  # encoding only, no socket
    q.queue, q._seq, q._out = 3, 0, []
    q.verdict(7, nfq.NF_REPEAT, mark=0x40000000)
    q.batch_accept(99)
    ((t1, _, b1),) = nfq._split(q._out[0])
    ((t2, _, b2),) = nfq._split(q._out[1])
    assert t1 == (3 << 8) | nfq.NFQNL_MSG_VERDICT and t2 == (3 << 8) | nfq.NFQNL_MSG_VERDICT_BATCH
    assert struct.unpack_from("!H", b1, 2)[0] == 3  # queue number, big-endian
    # verdict header attribute: verdict, id
    assert struct.unpack_from("!II", b1, 8) == (nfq.NF_REPEAT, 7)
    assert struct.unpack_from("!I", b1, 20)[0] == 0x40000000
    assert struct.unpack_from("!II", b2, 8) == (nfq.NF_ACCEPT, 99)


def test_exclusions_first_match_wins_and_errors_name_the_line() -> None:
    ex = parse_exclusions(
        ["# lab", "no_block 10.231.1.200", "no_scan 10.231.1.0/24", "no_scan vlan 12"], "x.conf"
    )
    assert decide(ex, "10.231.1.200", "10.231.1.11") == "no_block"
    assert decide(ex, "10.231.1.11", "10.231.1.12") == "no_scan"
    assert decide(ex, "10.0.0.1", "10.0.0.2", vlan=12) == "no_scan"
    assert decide(ex, "10.0.0.1", "10.0.0.2") is None
    with pytest.raises(ExclusionError, match=r"x.conf:2: not an address"):
        parse_exclusions(["no_scan 10.0.0.0/8", "no_block 10.300.0.1"], "x.conf")
    with pytest.raises(ExclusionError, match=r"VLAN id"):
        parse_exclusions(["no_scan vlan 5000"])
    with pytest.raises(ExclusionError, match="expected"):
        parse_exclusions(["allow 10.0.0.1"])


def test_injected_tcp_segments_have_valid_checksums() -> None:
    from scapy.layers.inet import IP, TCP

    ip = tcp_packet(b"\x0a\xe7\x01\x02", b"\x0a\xe7\x01\x03", 80, 4321, 1000, 2000, 0x19, b"hello")
    assert checksum(ip[:20]) == 0
    pkt = IP(ip)
    again = IP(bytes(pkt.__class__(bytes(pkt))))
    del again[IP].chksum, again[TCP].chksum
    rebuilt = IP(bytes(again))
    assert rebuilt[TCP].chksum == pkt[TCP].chksum and rebuilt[IP].chksum == pkt[IP].chksum
    view = TcpView.parse(ip)
    assert view is not None and (view.sport, view.dport, view.seq, view.payload_len) == (
        80,
        4321,
        1000,
        5,
    )


def test_block_page_is_a_complete_http_response_with_escaped_url() -> None:
    resp = block_page_response("http://x.test/<script>", "malicious", "listed", "ev1")
    head, body = resp.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 403 ")
    assert f"Content-Length: {len(body)}".encode() in head
    assert b"<script>" not in body and b"&lt;script&gt;" in body


def test_crafted_attacks_have_the_shape_they_claim() -> None:
    src, dst = b"\x0a\xe7\x01\xc8", b"\x0a\xe7\x01\x0b"
    frags = craft.pingofdeath(src, dst, 7)
    end = max(((struct.unpack_from("!H", f, 6)[0] & 0x1FFF) * 8) + len(f) - 20 for f in frags)
    assert end > 65535 and all(len(f) <= 1500 for f in frags)
    a, b = craft.teardrop(src, dst, 8)
    off_b = (struct.unpack_from("!H", b, 6)[0] & 0x1FFF) * 8
    assert off_b < len(a) - 20  # the second fragment overlaps the first
    (land,) = craft.land(dst, 9)
    assert land[12:16] == land[16:20] and checksum(land[:20]) == 0


def test_craft_refuses_addresses_outside_the_lab_range(capsys: pytest.CaptureFixture[str]) -> None:
    assert craft.main(["land", "--to", "192.0.2.1", "--from-address", "10.231.1.200"]) == 2
    assert "refusing" in capsys.readouterr().err


def test_lab_dns_answers_a_queries_and_ignores_garbage() -> None:
    q = (
        struct.pack("!6H", 0x1234, 0x0100, 1, 0, 0, 0)
        + b"\x03www\x03vm1\x03lab\x00"
        + struct.pack("!HH", 1, 1)
    )
    r = dns_answer(q, "10.231.1.11")
    assert r is not None and r[:2] == b"\x12\x34" and r.endswith(socket.inet_aton("10.231.1.11"))
    assert dns_answer(b"\x00" * 5, "10.231.1.11") is None
    assert dns_answer(q[:-3], "10.231.1.11") is None


def test_service_config_errors_name_the_key(tmp_path: Path) -> None:
    from vmshield.filter.service import ProtectionConfig, ProtectionError, load_config_file

    cfg = ProtectionConfig(name="x", bridge="lo", ports=["lo"])
    bad = tmp_path / "svc.toml"
    bad.write_text("worker = 3\n")
    with pytest.raises(ProtectionError, match="unknown key 'worker'"):
        load_config_file(str(bad), cfg)
    bad.write_text('exclusions = ["no_scan 10.0.0.0/8", "no_block nonsense"]\n')
    with pytest.raises(ProtectionError, match=r"exclusions\[2\]"):
        load_config_file(str(bad), cfg)
    bad.write_text("[attacks.syn_flood]\nthreshold = 0\n")
    with pytest.raises(ProtectionError, match="syn_flood.threshold"):
        load_config_file(str(bad), cfg)
    with pytest.raises(ProtectionError, match="does not exist"):
        ProtectionConfig(name="x", bridge="no-such-br0", ports=["lo"]).validate()
    with pytest.raises(ProtectionError, match="standard or monitoring"):
        ProtectionConfig(name="x", bridge="lo", ports=["lo"], mode="inline").validate()


def _kernel_msg(
    pid: int,
    payload: bytes,
    *,
    mark: int = 0,
    gso: bool | None = None,
    cap: int = 0,
    physin: int = 7,
    hw: bytes = b"\x02\x11\x22\x33\x44\x55",
) -> bytes:
    """A packet message with the attributes in the order nfqnl_build_packet_message writes them."""
    body = struct.pack("=BBH", socket.AF_INET, 0, socket.htons(3))
    body += _attr(nfq.NFQA_PACKET_HDR, struct.pack("!IHB", pid, 0x0800, 2))
    body += _attr(nfq.NFQA_IFINDEX_INDEV, struct.pack("!I", 28))
    body += _attr(nfq.NFQA_IFINDEX_PHYSINDEV, struct.pack("!I", physin))
    body += _attr(nfq.NFQA_IFINDEX_OUTDEV, struct.pack("!I", 28))
    body += _attr(nfq.NFQA_IFINDEX_PHYSOUTDEV, struct.pack("!I", 32))
    if mark:
        body += _attr(nfq.NFQA_MARK, struct.pack("!I", mark))
    body += _attr(nfq.NFQA_HWADDR, struct.pack("!HH", len(hw), 0) + hw.ljust(8, b"\0"))
    body += _attr(nfq.NFQA_TIMESTAMP, struct.pack("!QQ", 1_700_000_000, pid))
    if gso is not None:
        flags = nfq.NFQA_SKB_CSUMNOTREADY | (nfq.NFQA_SKB_GSO if gso else 0)
        body += _attr(nfq.NFQA_SKB_INFO, struct.pack("!I", flags))
    if cap:
        body += _attr(nfq.NFQA_CAP_LEN, struct.pack("!I", cap))
    body += _attr(nfq.NFQA_PAYLOAD, payload)
    return struct.pack("=IHHII", 16 + len(body), 3 << 8, 0, 0, 0) + body


def test_known_layouts_read_at_fixed_offsets_give_what_the_walk_gives() -> None:
    nfq._layouts.clear()
    kinds = [
        {},
        {"mark": 0x40000000},
        {"gso": False},
        {"gso": True, "mark": 0x2000_0064},
        {"cap": 9000, "gso": True},
        {"hw": b"\x02\x01\x02\x03\x04\x05\x06\x07"},
    ]
    for round_ in range(3):  # the first message of a kind is walked, the next read by layout
        for i, kind in enumerate(kinds):
            pid = 100 * round_ + i
            ip = tcp_packet(b"\x0a\xe7\x01\x02", b"\x0a\xe7\x01\x03", 1000 + pid, 80, pid, 0, 0x10)
            ip += bytes(pid % 7)  # payload lengths differ within a kind
            msg = memoryview(bytearray(_kernel_msg(pid, ip, physin=pid + 1, **kind)))  # type: ignore[arg-type]
            fast = nfq._parse_msg(msg, 16, len(msg))
            walked = nfq._parse_at(msg, 16, len(msg))
            assert fast == walked
            assert fast is not None and fast.packet_id == pid and fast.payload == ip
            assert fast.physindev == pid + 1
            assert fast.mark == kind.get("mark", 0) and fast.gso == kind.get("gso", False)
            assert fast.cap_len == kind.get("cap", 0)
    assert 0 < len(nfq._layouts) <= len(kinds)


def test_an_attribute_after_the_payload_is_not_lost_to_a_known_layout() -> None:
    nfq._layouts.clear()
    ip = tcp_packet(b"\x0a\xe7\x01\x02", b"\x0a\xe7\x01\x03", 1234, 80, 1, 0, 0x02)
    plain = _kernel_msg(1, ip)
    assert nfq._parse_msg(memoryview(plain), 16, len(plain)) is not None  # layout learnt
    # Same attributes, then one more after the payload: the fixed offsets must not be trusted.
    extra = _attr(nfq.NFQA_CAP_LEN, struct.pack("!I", 4000))
    body = plain[16:] + extra
    msg = struct.pack("=IHHII", 16 + len(body), 3 << 8, 0, 0, 0) + body
    pkt = nfq._parse_msg(memoryview(msg), 16, len(msg))
    assert pkt is not None and pkt.payload == ip and pkt.cap_len == 4000


def test_layout_cache_is_bounded_whatever_arrives() -> None:
    nfq._layouts.clear()
    ip = b"\x45" + bytes(39)
    for n in range(40):  # forty different kinds: unknown attribute types of growing sizes
        body = struct.pack("=BBH", socket.AF_INET, 0, 0)
        body += _attr(nfq.NFQA_PACKET_HDR, struct.pack("!IHB", n, 0x0800, 2))
        body += _attr(20 + n % 10, bytes(n))
        body += _attr(nfq.NFQA_PAYLOAD, ip)
        msg = struct.pack("=IHHII", 16 + len(body), 3 << 8, 0, 0, 0) + body
        pkt = nfq._parse_msg(memoryview(msg), 16, len(msg))
        assert pkt is not None and pkt.packet_id == n and pkt.payload == ip
    assert len(nfq._layouts) == nfq.MAX_LAYOUTS
