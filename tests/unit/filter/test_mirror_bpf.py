"""The mirror's kernel-side bypass (filter/bpf.py) on the real kernel: frames of a flow put in the
map never reach the reader socket; SYN/FIN/RST, other flows, UDP and fragments always do.

Runs in a network namespace of its own (`unshare --net`): frames are written to and read from
its loopback, nothing leaves it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from vmshield.filter import bpf
from vmshield.filter.inject import tcp_packet

pytestmark = [pytest.mark.root]

_SCRIPT = textwrap.dedent(
    """
    import socket, subprocess, sys, time
    from vmshield.filter import bpf
    from vmshield.filter.inject import tcp_packet

    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    a, b = bytes([10, 231, 9, 1]), bytes([10, 231, 9, 2])

    def frame(ip: bytes) -> bytes:
        return b"\\x02\\0\\0\\0\\0\\x01" + b"\\x02\\0\\0\\0\\0\\x02" + b"\\x08\\x00" + ip

    def tcp(sport: int, dport: int, flags: int, src: bytes = a, dst: bytes = b) -> bytes:
        return frame(tcp_packet(src, dst, sport, dport, 1, 1, flags, b"data"))

    udp_ip = bytearray(tcp_packet(a, b, 4000, 80, 1, 1, 0x10, b"data"))
    udp_ip[9] = 17
    fragment = bytearray(tcp_packet(a, b, 4000, 80, 1, 1, 0x10, b"data"))
    fragment[6] = 0x20  # more fragments

    bp = bpf.MirrorBypass(max_flows=64)
    rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    bp.attach(rx)
    rx.bind(("lo", 3))
    rx.settimeout(0.3)
    tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    tx.bind(("lo", 0))

    def seen(f: bytes) -> bool:
        marker = f[-4:]
        tx.send(f[:-4] + b"MARK")
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            try:
                got, addr = rx.recvfrom(65535)
            except TimeoutError:
                return False
            if addr[2] != socket.PACKET_OUTGOING and got.endswith(b"MARK"):
                return got[:-4] == f[:-4]
        return False

    flow = tcp(4000, 80, 0x10)
    keys = bpf.flow_keys(flow)
    assert keys is not None and keys[2] == 0x10
    results = {"before": seen(flow)}
    bp.add(keys[0]); bp.add(keys[1])
    results["bypassed"] = seen(flow)
    results["reverse_bypassed"] = seen(tcp(80, 4000, 0x10, b, a))
    results["syn"] = seen(tcp(4000, 80, 0x02))
    results["fin"] = seen(tcp(4000, 80, 0x11))
    results["rst"] = seen(tcp(4000, 80, 0x04))
    results["other_flow"] = seen(tcp(4001, 80, 0x10))
    results["udp"] = seen(frame(bytes(udp_ip)))
    results["fragment"] = seen(frame(bytes(fragment)))
    results["runt"] = seen(b"\\x02" * 12 + b"\\x08\\x00" + b"\\x45" + b"\\0" * 10)
    bp.known.clear()  # as for a worker that died: its entries are removed all the same
    bp.remove(keys[0]); bp.remove(keys[1])
    results["after_remove"] = seen(flow)
    bp.close()
    print(results)
    """
)


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare"
)
def test_bypassed_flows_never_reach_the_reader_and_flow_boundaries_always_do() -> None:
    out = subprocess.run(
        ["unshare", "--net", sys.executable, "-c", _SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    res = eval(out.stdout.strip().splitlines()[-1])  # noqa: S307 (a dict we printed)
    assert res == {
        "before": True,
        "bypassed": False,
        "reverse_bypassed": False,
        "syn": True,
        "fin": True,
        "rst": True,
        "other_flow": True,
        "udp": True,
        "fragment": True,
        "runt": True,
        "after_remove": True,
    }


def test_flow_keys_are_the_programs_and_reverse_each_other() -> None:
    ip = tcp_packet(bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), 1234, 80, 1, 1, 0x18, b"x")
    frame = b"\x02" * 12 + b"\x08\x00" + ip
    fwd, rev, flags = bpf.flow_keys(frame) or (b"", b"", 0)
    assert flags == 0x18
    assert fwd == bytes.fromhex("0100000a0200000a") + ((1234 << 16) | 80).to_bytes(4, "little")
    back = b"\x02" * 12 + b"\x08\x00" + tcp_packet(ip[16:20], ip[12:16], 80, 1234, 1, 1, 0x10)
    assert bpf.flow_keys(back)[:2] == (rev, fwd)  # type: ignore[index]
    assert bpf.flow_keys(frame[:40]) is None  # truncated TCP header
    assert bpf.flow_keys(b"\x02" * 12 + b"\x86\xdd" + bytes(60)) is None  # not IPv4
    assert len(bpf.program(3)) % 8 == 0
