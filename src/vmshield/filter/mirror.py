"""Monitoring mode: mirror the VM ports with tc and read the copy from an AF_PACKET mmap ring.

Each protected port gets an ingress qdisc and a `u32 match u32 0 0` filter (the `matchall`
classifier is not built into this kernel) with `mirred egress mirror` to a veth pair whose far
end the engine reads. Every frame a VM sends enters the bridge through its port's ingress, so
mirroring ingress of every port sees each frame once. Nothing is ever dropped here.

The reader uses TPACKET_V3 (blocks of frames shared with the kernel, no copy per recv) and
PACKET_FANOUT (a classic BPF program hashing the address pair), so several worker processes
share one mirror port and all traffic between two hosts lands on one worker.
"""

from __future__ import annotations

import ctypes
import mmap
import select
import socket
import struct
from collections.abc import Iterator, Sequence

from vmshield.filter import sysnet

SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_VERSION = 10
PACKET_FANOUT = 18
PACKET_FANOUT_HASH = 0
PACKET_FANOUT_CBPF = 6
PACKET_FANOUT_DATA = 22
PACKET_FANOUT_FLAG_DEFRAG = 0x8000
TPACKET_V3 = 2
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 1 << 4
ETH_P_ALL = 0x0003


def mirror_names(name: str) -> tuple[str, str]:
    return f"{name}-mir", f"{name}-mirp"


def install_mirror(name: str, ports: Sequence[str]) -> str:
    """Create the mirror veth and the tc mirrors; returns the interface to read."""
    tx, rx = mirror_names(name)
    remove_mirror(name, ports)
    sysnet.run(["ip", "link", "add", tx, "type", "veth", "peer", "name", rx])
    for dev in (tx, rx):
        sysnet.set_sysctl(f"net.ipv6.conf.{dev}.disable_ipv6", "1")
        sysnet.run(["ip", "link", "set", dev, "up"])
    for port in ports:
        sysnet.run(["tc", "qdisc", "add", "dev", port, "ingress"])
        sysnet.run(
            [
                "tc",
                "filter",
                "add",
                "dev",
                port,
                "parent",
                "ffff:",
                "protocol",
                "all",
                "u32",
                "match",
                "u32",
                "0",
                "0",
                "action",
                "mirred",
                "egress",
                "mirror",
                "dev",
                tx,
            ]
        )
    return rx


def remove_mirror(name: str, ports: Sequence[str]) -> list[str]:
    removed = []
    for port in ports:
        if sysnet.try_run(["tc", "qdisc", "del", "dev", port, "ingress"]):
            removed.append(f"tc ingress on {port}")
    tx, _ = mirror_names(name)
    if sysnet.try_run(["ip", "link", "del", tx]):
        removed.append(f"link {tx}")
    return removed


class RingReader:
    """A TPACKET_V3 receive ring on one interface, optionally in a fanout group."""

    def __init__(
        self,
        ifname: str,
        *,
        fanout_group: int | None = None,
        block_size: int = 1 << 20,
        block_nr: int = 32,
        retire_ms: int = 10,
        fanout_members: int = 1,
    ) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            self.sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            frame_size = 1 << 11
            req = struct.pack(
                "=7I",
                block_size,
                block_nr,
                frame_size,
                block_size * block_nr // frame_size,
                retire_ms,
                0,
                0,
            )
            self.sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
            self.sock.bind((ifname, ETH_P_ALL))
            if fanout_group is not None:
                self._join_fanout(fanout_group, fanout_members)
            self.ring = mmap.mmap(
                self.sock.fileno(),
                block_size * block_nr,
                mmap.MAP_SHARED,
                mmap.PROT_READ | mmap.PROT_WRITE,
            )
        except BaseException:
            self.sock.close()
            raise
        self.block_size = block_size
        self.block_nr = block_nr
        self._cur = 0
        self._poll = select.poll()
        self._poll.register(self.sock.fileno(), select.POLLIN | select.POLLERR)
        self.frames = 0

    def _join_fanout(self, group: int, members: int) -> None:
        """Join a fanout group that spreads frames by IPv4 address pair (src ^ dst) % members.

        The kernel's own PACKET_FANOUT_HASH hashes the 5-tuple, which would split one scanner's
        probes over several workers; detectors need every packet between two hosts in one place,
        like NFQUEUE's --queue-balance. Non-IPv4 frames are spread by whatever sits at those offsets.
        """
        # No PACKET_FANOUT_FLAG_DEFRAG: the kernel's defragmenter would silently drop overlapping
        # and oversized fragments (teardrop, ping of death) that the engine must see and report.
        # Fragments of one datagram share the address pair, so they reach the same worker anyway.
        arg = (group & 0xFFFF) | (PACKET_FANOUT_CBPF << 16)
        self.sock.setsockopt(SOL_PACKET, PACKET_FANOUT, struct.pack("=I", arg))
        prog = [
            (0x20, 0, 0, 12),  # ld [12]   source address (offsets from the IP header)
            (0x07, 0, 0, 0),  # tax
            (0x20, 0, 0, 16),  # ld [16]   destination address
            (0xAC, 0, 0, 0),  # xor x
            (0x94, 0, 0, max(1, members)),  # mod #members
            (0x16, 0, 0, 0),  # ret a
        ]
        buf = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *ins) for ins in prog))
        self._fprog = buf  # kept alive while the kernel copies it
        fprog = struct.pack("=H6xQ", len(prog), ctypes.addressof(buf))
        self.sock.setsockopt(SOL_PACKET, PACKET_FANOUT_DATA, fprog)

    def close(self) -> None:
        self.ring.close()
        self.sock.close()

    def read(self, timeout: float | None = 0.2) -> Iterator[tuple[float, bytes, int]]:
        """Yield (timestamp, frame, vlan) for the frames of the next ready block(s)."""
        ring = self.ring
        base = self._cur * self.block_size
        status = struct.unpack_from("=I", ring, base + 8)[0]
        if not status & TP_STATUS_USER:
            self._poll.poll(None if timeout is None else int(timeout * 1000))
        handled = 0
        while handled < self.block_nr:
            base = self._cur * self.block_size
            status, num, first = struct.unpack_from("=III", ring, base + 8)
            if not status & TP_STATUS_USER:
                return
            off = base + first
            for _ in range(num):
                nxt, sec, nsec, snaplen, _ln, pstatus, mac = struct.unpack_from(
                    "=IIIIIIH", ring, off
                )
                vlan = 0
                if pstatus & TP_STATUS_VLAN_VALID:
                    vlan = struct.unpack_from("=I", ring, off + 32)[0] & 0x0FFF
                yield sec + nsec / 1e9, ring[off + mac : off + mac + snaplen], vlan
                self.frames += 1
                if not nxt:
                    break
                off += nxt
            struct.pack_into("=I", ring, base + 8, TP_STATUS_KERNEL)  # hand the block back
            self._cur = (self._cur + 1) % self.block_nr
            handled += 1
