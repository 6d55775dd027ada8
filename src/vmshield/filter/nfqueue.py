"""A lean NFQUEUE client speaking nfnetlink directly (no libnetfilter_queue).

Why our own: the data path needs batched verdicts (NFQNL_MSG_VERDICT_BATCH: one message accepts
every pending packet up to an id) and GSO super-packets (NFQA_CFG_F_GSO: the kernel hands over
64 KB segments instead of splitting them), which the netfilterqueue binding exposes neither of;
and setting a conntrack mark in a verdict (NFQA_CT/CTA_MARK) so the kernel stops queueing a flow.

Message layout (include/uapi/linux/netfilter/nfnetlink_queue.h): nlmsghdr, nfgenmsg (family,
version, queue number big-endian), then attributes (nlattr: u16 len, u16 type, 4-byte aligned;
values big-endian).
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
import sys
from collections.abc import Iterator
from operator import itemgetter
from typing import NamedTuple

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_NO_ENOBUFS = 5
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQNL_MSG_VERDICT_BATCH = 3
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLMSG_ERROR = 2
NLA_F_NESTED = 0x8000

NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_MARK = 3
NFQA_TIMESTAMP = 4
NFQA_IFINDEX_INDEV = 5
NFQA_IFINDEX_OUTDEV = 6
NFQA_IFINDEX_PHYSINDEV = 7
NFQA_IFINDEX_PHYSOUTDEV = 8
NFQA_HWADDR = 9
NFQA_PAYLOAD = 10
NFQA_CT = 11
NFQA_CAP_LEN = 13
NFQA_SKB_INFO = 14
NFQA_VLAN = 19
CTA_MARK = 8

NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQA_CFG_MASK = 4
NFQA_CFG_FLAGS = 5
NFQNL_CFG_CMD_BIND = 1
NFQNL_CFG_CMD_UNBIND = 2
NFQNL_COPY_PACKET = 2
NFQA_CFG_F_FAIL_OPEN = 1
NFQA_CFG_F_CONNTRACK = 2
NFQA_CFG_F_GSO = 4

NF_DROP = 0
NF_ACCEPT = 1
NF_REPEAT = 4

NFQA_SKB_CSUMNOTREADY = 1
NFQA_SKB_GSO = 2

_NLH = struct.Struct("=IHHII")
_NFG = struct.Struct("=BBH")  # res_id is big-endian: packed separately
_ATTR = struct.Struct("=HH")
_PACKET_TYPE = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET
_NLMSG_HEAD = struct.Struct("=IH").unpack_from


class NfqueueError(OSError):
    pass


class QueuedPacket(NamedTuple):
    """One queued packet. A tuple: the receive path builds it in one C call (no per-field
    Python assignments)."""

    packet_id: int
    payload: bytes  # the IP datagram (a GSO super-packet when large)
    mark: int = 0
    indev: int = 0
    outdev: int = 0
    physindev: int = 0
    physoutdev: int = 0
    hwaddr: bytes = b""  # source MAC of the frame, when the kernel knows it
    vlan: int = 0
    gso: bool = False
    cap_len: int = 0  # original length when the kernel truncated the payload (0: whole packet)


def _attr(atype: int, value: bytes) -> bytes:
    ln = _ATTR.size + len(value)
    return _ATTR.pack(ln, atype) + value + b"\0" * ((4 - ln % 4) % 4)


class NfQueue:
    """One bound queue. Not thread-safe; one per worker process."""

    def __init__(
        self,
        queue: int,
        *,
        maxlen: int = 8192,
        copy_range: int = 0xFFFF,
        gso: bool = True,
        fail_open: bool = True,
        rcvbuf: int = 16 << 20,
    ) -> None:
        if not 0 <= queue <= 65535:
            raise ValueError(f"queue number must be 0-65535, got {queue}")
        self.queue = queue
        self._seq = 0
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)  # SO_RCVBUFFORCE (root)
            except OSError:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            # Under overload the kernel fails open (flag below) rather than us getting ENOBUFS.
            self.sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
            self.sock.bind((0, 0))
            self._config(_attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, 0)))
            self._config(_attr(NFQA_CFG_PARAMS, struct.pack("!IB", copy_range, NFQNL_COPY_PACKET)))
            self._config(_attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", maxlen)))
            flags = (NFQA_CFG_F_GSO if gso else 0) | (NFQA_CFG_F_FAIL_OPEN if fail_open else 0)
            mask = NFQA_CFG_F_GSO | NFQA_CFG_F_FAIL_OPEN
            self._config(
                _attr(NFQA_CFG_FLAGS, struct.pack("!I", flags))
                + _attr(NFQA_CFG_MASK, struct.pack("!I", mask))
            )
        except BaseException:
            self.sock.close()
            raise
        # One system call receives up to RECV_BATCH messages (recvmmsg, each netlink message is
        # its own datagram), blocking until the first and taking the rest that are already
        # there (MSG_WAITFORONE); the timeout is the socket's SO_RCVTIMEO.
        self._rx = _RecvBatch(self.sock.fileno())
        self._timeout: float | None = -1.0  # SO_RCVTIMEO currently set (-1: not yet)
        self._out: list[bytes] = []

    # ------------------------------------------------------------------ messages
    def _msg(self, mtype: int, payload: bytes, flags: int = NLM_F_REQUEST) -> bytes:
        self._seq += 1
        body = _NFG.pack(socket.AF_UNSPEC, 0, socket.htons(self.queue)) + payload
        return (
            _NLH.pack(_NLH.size + len(body), (NFNL_SUBSYS_QUEUE << 8) | mtype, flags, self._seq, 0)
            + body
        )

    def _config(self, attrs: bytes) -> None:
        """Send a config message and wait for its ack, raising the kernel's error."""
        self.sock.send(self._msg(NFQNL_MSG_CONFIG, attrs, NLM_F_REQUEST | NLM_F_ACK))
        seq = self._seq
        self.sock.settimeout(5.0)
        try:
            while True:
                data = self.sock.recv(65536)
                for mtype, mseq, body in _split(data):
                    if mtype == NLMSG_ERROR and mseq == seq:
                        err = -struct.unpack_from("=i", body)[0]
                        if err:
                            raise NfqueueError(
                                err, f"NFQUEUE {self.queue} config failed: {os.strerror(err)}"
                            )
                        return
        finally:
            self.sock.settimeout(None)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        try:
            self.flush()
            self.sock.send(
                self._msg(
                    NFQNL_MSG_CONFIG,
                    _attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_UNBIND, 0)),
                )
            )
        except OSError:
            pass
        self.sock.close()

    # ------------------------------------------------------------------ receive
    def receive(self, max_packets: int = 256, timeout: float | None = None) -> list[QueuedPacket]:
        """Packets available now; waits up to `timeout` (None: forever, 0: not at all) for the
        first one. One system call per burst: a packet arriving on an idle queue is returned as
        soon as the process wakes."""
        if timeout != 0 and timeout != self._timeout:
            self._set_timeout(timeout)
        rx = self._rx
        n = rx.receive(min(max_packets, RECV_BATCH), timeout == 0)
        out: list[QueuedPacket] = []
        if n <= 0:
            return out
        buf = rx.view
        lens = rx.lengths(n)
        slot = RECV_SLOT
        for i in range(n):
            base = i * slot
            end = base + lens[i]
            pos = base
            # One datagram normally holds one message; walk in case the kernel packed more.
            while pos + 16 <= end:
                ln, mtype = _NLMSG_HEAD(buf, pos)
                if ln < 16 or pos + ln > end:
                    break
                if mtype == _PACKET_TYPE:
                    pkt = _parse_msg(buf, pos + 16, pos + ln)
                    if pkt is not None:
                        out.append(pkt)
                pos += (ln + 3) & ~3
        return out

    def _set_timeout(self, timeout: float | None) -> None:
        t = 0.0 if timeout is None else max(timeout, 0.001)
        sec = int(t)
        self.sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("=qq", sec, int((t - sec) * 1e6))
        )
        self._timeout = timeout

    # ------------------------------------------------------------------ verdicts
    def verdict(
        self,
        packet_id: int,
        verdict: int,
        *,
        mark: int | None = None,
        ct_mark: int | None = None,
        payload: bytes | None = None,
    ) -> None:
        """Queue one verdict (sent on `flush`). `ct_mark` sets the flow's conntrack mark."""
        attrs = _attr(NFQA_VERDICT_HDR, struct.pack("!II", verdict, packet_id))
        if mark is not None:
            attrs += _attr(NFQA_MARK, struct.pack("!I", mark))
        if ct_mark is not None:
            attrs += _attr(NFQA_CT | NLA_F_NESTED, _attr(CTA_MARK, struct.pack("!I", ct_mark)))
        if payload is not None:
            attrs += _attr(NFQA_PAYLOAD, payload)
        self._out.append(self._msg(NFQNL_MSG_VERDICT, attrs))

    def batch_accept(self, up_to_id: int) -> None:
        """Accept every packet still pending with an id ≤ `up_to_id` in one message."""
        self._out.append(
            self._msg(
                NFQNL_MSG_VERDICT_BATCH,
                _attr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, up_to_id)),
            )
        )

    def flush(self) -> None:
        if not self._out:
            return
        msgs, self._out = self._out, []
        # Netlink accepts several messages in one datagram; keep datagrams well under the rcvbuf.
        chunk: list[bytes] = []
        size = 0
        for m in msgs:
            if size + len(m) > 200_000 and chunk:
                self.sock.send(b"".join(chunk))
                chunk, size = [], 0
            chunk.append(m)
            size += len(m)
        if chunk:
            self.sock.send(b"".join(chunk))


def _split(data: bytes | memoryview) -> Iterator[tuple[int, int, memoryview]]:
    mv = memoryview(data)
    pos = 0
    end = len(mv)
    while pos + _NLH.size <= end:
        ln, mtype, _flags, seq, _pid = _NLH.unpack_from(mv, pos)
        if ln < _NLH.size or pos + ln > end:
            return
        yield mtype, seq, mv[pos + _NLH.size : pos + ln]
        pos += (ln + 3) & ~3


def _parse_packet(body: memoryview | bytes) -> QueuedPacket | None:
    """One NFQNL_MSG_PACKET body (nfgenmsg + attributes)."""
    return _parse_msg(body, 0, len(body))


_U32 = struct.Struct("!I").unpack_from
_U16 = struct.Struct("!H").unpack_from
_AHDR = _ATTR.unpack_from
_LEN = struct.Struct("=H").unpack_from
_new_packet = tuple.__new__
_DEFAULTS = (0, b"", 0, False, True)  # appended to a layout's values (after the payload)
# Canonical positions in `QueuedPacket`, and the u32 attributes read straight into them.
_U32_FIELD = {
    NFQA_MARK: 2,
    NFQA_IFINDEX_INDEV: 3,
    NFQA_IFINDEX_OUTDEV: 4,
    NFQA_IFINDEX_PHYSINDEV: 5,
    NFQA_IFINDEX_PHYSOUTDEV: 6,
    NFQA_CAP_LEN: 10,
}
MAX_LAYOUTS = 8


class _Layout:
    """The attribute layout of a packet message, learnt from one the kernel sent.

    The kernel writes the same attributes in the same order for every packet of a kind (the
    payload last), so a message whose attribute headers all equal a known layout's is read with
    two struct calls at fixed offsets instead of a walk; anything else is walked (and its layout
    learnt). `matches` compares every attribute header, so a hit reads exactly what the walk
    would have read."""

    __slots__ = ("heads", "expect", "values", "pick", "pick_gso", "payload_at", "size", "skb_info")

    def __init__(self, attrs: list[tuple[int, int, int, int]]) -> None:
        # attrs: (offset from the first attribute, length, type, HWADDR address length)
        head_fmt = ["="]
        expect: list[int] = []
        val_fmt = ["!"]
        at = 0
        vat = 0
        where: dict[int, int] = {}  # canonical field -> index in the values tuple
        nval = 0
        self.skb_info = -1
        for off, ln, atype, alen in attrs[:-1]:
            head_fmt.append(f"{off - at}xHH" if off > at else "HH")
            expect += [ln, atype]
            at = off + 4
            t = atype & 0x3FFF
            field = (
                0 if t == NFQA_PACKET_HDR else _U32_FIELD.get(t, 9 if t == NFQA_SKB_INFO else -1)
            )
            if t == NFQA_HWADDR:
                val_fmt.append(f"{off + 8 - vat}x{min(alen, 8)}s")
                vat = off + 8 + min(alen, 8)
                head_fmt.append("H")  # the address length is part of the layout (read natively)
                expect.append(int.from_bytes(alen.to_bytes(2, "big"), sys.byteorder))
                at += 2
                where[7] = nval
                nval += 1
            elif field >= 0:
                val_fmt.append(f"{off + 4 - vat}xI" if off + 4 > vat else "I")
                vat = off + 8
                if field == 9:
                    self.skb_info = nval
                where[field] = nval
                nval += 1
        off, _ln, atype, _alen = attrs[-1]  # the payload
        head_fmt.append(f"{off + 2 - at}xH" if off + 2 > at else "H")
        expect.append(atype)
        self.heads = struct.Struct("".join(head_fmt)).unpack_from
        self.size = struct.calcsize("".join(head_fmt))
        self.expect = tuple(expect)
        self.values = struct.Struct("".join(val_fmt)).unpack_from
        self.payload_at = off
        # values + (payload, 0, b"", 0, False, True) -> QueuedPacket order; absent fields take
        # defaults; `gso` is a flag of NFQA_SKB_INFO: False, or True with `pick_gso`.
        payload_i, zero_i, empty_i, false_i, true_i = nval, nval + 1, nval + 2, nval + 4, nval + 5
        order = [where.get(0, zero_i), payload_i]
        for f in range(2, 11):
            default = empty_i if f == 7 else false_i if f == 9 else zero_i
            order.append(default if f == 9 else where.get(f, default))
        self.pick = itemgetter(*order)
        order[9] = true_i
        self.pick_gso = itemgetter(*order)


_layouts: list[_Layout] = []


def _parse_msg(buf: memoryview | bytes, start: int, end: int) -> QueuedPacket | None:
    """The packet message body at buf[start:end]. The hot path: a known layout, read at fixed
    offsets; otherwise the generic walk."""
    a = start + 4  # attributes after nfgenmsg
    for i, lay in enumerate(_layouts):
        if a + lay.size > end or lay.heads(buf, a) != lay.expect:
            continue
        if i:
            _layouts.insert(0, _layouts.pop(i))  # the most recent kind first
        p = a + lay.payload_at
        pend = p + _LEN(buf, p)[0]
        if pend > end or end - pend > 3 or pend < p + 4:
            break  # the payload is not the message's last attribute here: walk
        vals = lay.values(buf, a) + (bytes(buf[p + 4 : pend]), *_DEFAULTS)
        if lay.skb_info >= 0 and vals[lay.skb_info] & NFQA_SKB_GSO:
            return _new_packet(QueuedPacket, lay.pick_gso(vals))  # type: ignore[no-any-return]
        return _new_packet(QueuedPacket, lay.pick(vals))  # type: ignore[no-any-return]
    return _parse_at(buf, start, end, learn=True)


def _parse_at(
    buf: memoryview | bytes, start: int, end: int, learn: bool = False
) -> QueuedPacket | None:
    """Walk the attributes of the packet message body at buf[start:end] (offsets into the
    receive buffer, no per-attribute slices), and learn its layout for the next ones."""
    pos = start + 4  # nfgenmsg
    first = pos
    pid = -1
    payload = b""
    mark = indev = outdev = physin = physout = vlan = cap = 0
    hw = b""
    gso = False
    attrs: list[tuple[int, int, int, int]] = []
    learnable = learn
    seen = 0
    while pos + 4 <= end:
        ln, atype = _AHDR(buf, pos)
        if ln < 4 or pos + ln > end:
            learnable = False
            break
        raw = atype
        atype &= 0x3FFF
        v = pos + 4
        vend = pos + ln
        alen = 0
        if atype < 32:
            if seen & (1 << atype):
                learnable = False  # a repeated attribute: walk those
            seen |= 1 << atype
        if atype == NFQA_PAYLOAD:
            payload = bytes(buf[v:vend])
        elif ln < 8:
            learnable = (
                learnable
                and atype not in _U32_FIELD
                and atype
                not in (
                    NFQA_PACKET_HDR,
                    NFQA_HWADDR,
                    NFQA_SKB_INFO,
                    NFQA_VLAN,
                )
            )
            attrs.append((pos - first, ln, raw, 0))
            pos += (ln + 3) & ~3
            continue  # every other attribute we read holds at least a u32: malformed, skip
        elif atype == NFQA_PACKET_HDR:
            pid = _U32(buf, v)[0]
        elif atype == NFQA_MARK:
            mark = _U32(buf, v)[0]
        elif atype == NFQA_IFINDEX_PHYSINDEV:
            physin = _U32(buf, v)[0]
        elif atype == NFQA_IFINDEX_INDEV:
            indev = _U32(buf, v)[0]
        elif atype == NFQA_IFINDEX_OUTDEV:
            outdev = _U32(buf, v)[0]
        elif atype == NFQA_IFINDEX_PHYSOUTDEV:
            physout = _U32(buf, v)[0]
        elif atype == NFQA_HWADDR:
            alen = _U16(buf, v)[0]
            hw = bytes(buf[v + 4 : min(v + 4 + min(alen, 8), vend)])
            learnable = learnable and v + 4 + min(alen, 8) <= vend
        elif atype == NFQA_CAP_LEN:
            cap = _U32(buf, v)[0]
        elif atype == NFQA_SKB_INFO:
            gso = bool(_U32(buf, v)[0] & NFQA_SKB_GSO)
        elif atype == NFQA_VLAN:
            learnable = False  # nested: walked every time (bridge-family queues only)
            # nested: NFQA_VLAN_PROTO (1), NFQA_VLAN_TCI (2)
            p = v
            while p + 4 <= vend:
                sl, st = _AHDR(buf, p)
                if sl < 4:
                    break
                if st & 0x3FFF == 2 and sl >= 6 and p + 6 <= vend:
                    vlan = _U16(buf, p + 4)[0] & 0x0FFF
                p += (sl + 3) & ~3
        attrs.append((pos - first, ln, raw, alen))
        pos += (ln + 3) & ~3
    if pid < 0:
        return None
    if (
        learnable
        and attrs
        and attrs[-1][2] & 0x3FFF == NFQA_PAYLOAD
        and attrs[0][2] & 0x3FFF == NFQA_PACKET_HDR
        and pos >= end
        and len(_layouts) < MAX_LAYOUTS  # bounded: messages of yet other kinds are walked
    ):
        _layouts.insert(0, _Layout(attrs))
    return QueuedPacket(pid, payload, mark, indev, outdev, physin, physout, hw, vlan, gso, cap)


# ---------------------------------------------------------------------------- batched receive

RECV_BATCH = 64  # messages per system call
RECV_SLOT = 0x10000 + 4096  # one message: a payload of up to copy_range (64 KB) + attributes
_MSG_WAITFORONE = 0x10000


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.POINTER(_IoVec)),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", _MsgHdr), ("len", ctypes.c_uint)]


_libc = ctypes.CDLL(None, use_errno=True)
_recvmmsg = _libc.recvmmsg
_recvmmsg.argtypes = [
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.c_uint,
    ctypes.c_int,
    ctypes.c_void_p,
]
_recvmmsg.restype = ctypes.c_int


class _RecvBatch:
    """recvmmsg(2) into RECV_BATCH fixed slots of one buffer (a slot always holds a whole
    message: copy_range is at most 64 KB)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = bytearray(RECV_BATCH * RECV_SLOT)
        self.view = memoryview(self.buf)
        self._cbuf = (ctypes.c_char * len(self.buf)).from_buffer(self.buf)
        base = ctypes.addressof(self._cbuf)
        self._iov = (_IoVec * RECV_BATCH)()
        self._hdrs = (_MMsgHdr * RECV_BATCH)()
        for i in range(RECV_BATCH):
            self._iov[i].base = base + i * RECV_SLOT
            self._iov[i].len = RECV_SLOT
            self._hdrs[i].hdr.iov = ctypes.pointer(self._iov[i])
            self._hdrs[i].hdr.iovlen = 1
        self._hdr_addr = ctypes.addressof(self._hdrs)
        self._hdr_mem = memoryview(self._hdrs).cast("B")
        self._lens: dict[int, struct.Struct] = {}

    def receive(self, vlen: int, nowait: bool) -> int:
        """Messages received (0: none before the timeout, or interrupted by a signal)."""
        flags = socket.MSG_DONTWAIT if nowait else _MSG_WAITFORONE
        n: int = _recvmmsg(self.fd, self._hdr_addr, max(1, vlen), flags, None)
        if n >= 0:
            return n
        err = ctypes.get_errno()
        if err in (errno.EAGAIN, errno.EINTR, errno.ENOBUFS):
            return 0
        raise OSError(err, f"NFQUEUE receive failed: {os.strerror(err)}")

    def lengths(self, n: int) -> tuple[int, ...]:
        lens = self._lens.get(n)
        if lens is None:
            stride = ctypes.sizeof(_MMsgHdr)
            first = ctypes.sizeof(_MsgHdr)
            fmt = "=" + f"{first}xI" + f"{stride - 4}xI" * (n - 1)
            lens = self._lens[n] = struct.Struct(fmt)
        return lens.unpack_from(self._hdr_mem, 0)
