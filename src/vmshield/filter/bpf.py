"""Monitoring mode's kernel-side bypass: an eBPF socket filter on the mirror reader.

tc mirrors every frame of the protected ports; without this, the reader copies each one into
its ring and the Python worker decodes it, even for flows the engine has finished with (bulk
transfers past the inspection depth, encrypted TLS). Here the workers tell the kernel which TCP
flows are done: a BPF LRU hash map of 4-tuples (both directions), and a socket filter on each
reader socket that drops the frames of those flows before they reach the ring. Frames with SYN,
FIN or RST always pass, so the worker sees a connection end or a new connection reusing the
same ports, and removes the entry (a new connection is inspected from its first packet).

No compiler: the program is a few dozen eBPF instructions assembled here, loaded with the bpf(2)
system call through ctypes. The map and program live as long as the processes holding their
file descriptors (the service creates them before forking its workers): nothing is pinned,
nothing is left behind.

This kernel has no `matchall` classifier and no BPF actions in tc (CONFIG_NET_ACT_BPF unset), so
the filter sits on the socket: tc still clones each frame to the mirror port (cheap), but the
copy into the ring and the Python work are saved.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct

SYS_BPF = 321  # x86_64
BPF_MAP_CREATE = 0
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_PROG_LOAD = 5
BPF_MAP_TYPE_LRU_HASH = 9
BPF_PROG_TYPE_SOCKET_FILTER = 1
BPF_PSEUDO_MAP_FD = 1
SO_ATTACH_BPF = 50
MAX_FLOWS = 65536  # entries; the LRU map forgets the oldest when full (they are then read again)

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_syscall.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint]

_KEY = struct.Struct("=III")


class BpfError(OSError):
    pass


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    r = int(_syscall(SYS_BPF, cmd, ctypes.addressof(attr), len(attr)))
    if r < 0:
        err = ctypes.get_errno()
        raise BpfError(err, f"bpf({cmd}) failed: {os.strerror(err)}")
    return r


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("=BBhi", code, (src << 4) | dst, off, imm)


# opcodes (linux/bpf.h, linux/bpf_common.h)
_LD_ABS_B, _LD_ABS_H, _LD_ABS_W, _LD_IND_B, _LD_IND_W = 0x30, 0x28, 0x20, 0x50, 0x40
_MOV_X, _MOV_K, _AND_K, _LSH_K, _ADD_K = 0xBF, 0xB7, 0x57, 0x67, 0x07
_JNE_K, _JEQ_K, _JSET_K, _JLT_K, _JGT_X = 0x55, 0x15, 0x45, 0xA5, 0x2D
_LDX_W, _STX_W, _CALL, _EXIT, _LD_IMM64 = 0x61, 0x63, 0x85, 0x95, 0x18
_MAP_LOOKUP = 1
_R0, _R1, _R2, _R6, _R7, _R8, _R10 = 0, 1, 2, 6, 7, 8, 10


def program(map_fd: int) -> bytes:
    """The socket filter: keep every frame (return all bytes) unless it is an untagged IPv4 TCP
    segment, not a fragment, without SYN/FIN/RST, whose (src, dst, ports) is in the map."""
    keep = "KEEP"
    code: list[bytes | tuple[int, int, int, int, str]] = [
        _insn(_MOV_X, _R6, _R1),  # r6 = skb (LD_ABS needs it there)
        _insn(_LDX_W, _R7, _R6, 0),  # r7 = skb->len
        (_JLT_K, _R7, 0, 34, keep),  # shorter than Ethernet + IPv4 header: the engine's
        _insn(_LD_ABS_H, imm=12),  # ethertype
        (_JNE_K, _R0, 0, 0x0800, keep),
        _insn(_LD_ABS_B, imm=23),  # protocol
        (_JNE_K, _R0, 0, 6, keep),
        _insn(_LD_ABS_H, imm=20),  # flags + fragment offset
        (_JSET_K, _R0, 0, 0x3FFF, keep),  # a fragment (or more fragments): no ports to key on
        _insn(_LD_ABS_B, imm=14),
        _insn(_AND_K, _R0, imm=0x0F),
        _insn(_LSH_K, _R0, imm=2),
        _insn(_MOV_X, _R8, _R0),  # r8 = IPv4 header length
        _insn(_ADD_K, _R0, imm=14 + 14),  # through the TCP flags byte
        (_JGT_X, _R0, _R7, 0, keep),  # truncated TCP header: the engine reports it
        _insn(_LD_IND_B, src=_R8, imm=14 + 13),  # TCP flags
        (_JSET_K, _R0, 0, 0x07, keep),  # FIN, SYN, RST: the worker sees flows start and end
        _insn(_LD_ABS_W, imm=26),
        _insn(_STX_W, _R10, _R0, -16),
        _insn(_LD_ABS_W, imm=30),
        _insn(_STX_W, _R10, _R0, -12),
        _insn(_LD_IND_W, src=_R8, imm=14),  # source and destination ports
        _insn(_STX_W, _R10, _R0, -8),
        _insn(_LD_IMM64, _R1, BPF_PSEUDO_MAP_FD, 0, map_fd),
        _insn(0),
        _insn(_MOV_X, _R2, _R10),
        _insn(_ADD_K, _R2, imm=-16),
        _insn(_CALL, imm=_MAP_LOOKUP),
        (_JEQ_K, _R0, 0, 0, keep),
        _insn(_MOV_K, _R0, imm=0),  # a bypassed flow: drop before the ring
        _insn(_EXIT),
    ]
    keep_at = len(code)
    code += [_insn(_MOV_K, _R0, imm=-1), _insn(_EXIT)]  # keep the whole frame
    out = []
    for i, ins in enumerate(code):
        if isinstance(ins, tuple):
            op, dst, src, imm, _label = ins
            out.append(_insn(op, dst, src, keep_at - i - 1, imm))
        else:
            out.append(ins)
    return b"".join(out)


def flow_keys(frame: bytes) -> tuple[bytes, bytes, int] | None:
    """(key, reverse key, TCP flags) of an untagged IPv4 TCP frame, as the program builds them."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
        return None
    if int.from_bytes(frame[20:22], "big") & 0x3FFF:
        return None
    ihl = (frame[14] & 0x0F) * 4
    t = 14 + ihl
    if len(frame) < t + 14:
        return None
    src = int.from_bytes(frame[26:30], "big")
    dst = int.from_bytes(frame[30:34], "big")
    sport = int.from_bytes(frame[t : t + 2], "big")
    dport = int.from_bytes(frame[t + 2 : t + 4], "big")
    return (
        _KEY.pack(src, dst, (sport << 16) | dport),
        _KEY.pack(dst, src, (dport << 16) | sport),
        frame[t + 13],
    )


class MirrorBypass:
    """The map and the program, shared by the mirror workers (created before they fork)."""

    def __init__(self, max_flows: int = MAX_FLOWS) -> None:
        attr = ctypes.create_string_buffer(
            struct.pack("=5I", BPF_MAP_TYPE_LRU_HASH, 12, 4, max_flows, 0), 128
        )
        self.map_fd = _bpf(BPF_MAP_CREATE, attr)
        try:
            insns = program(self.map_fd)
            self._insns = ctypes.create_string_buffer(insns, len(insns))
            self._license = ctypes.create_string_buffer(b"GPL")
            log = ctypes.create_string_buffer(16384)
            attr = ctypes.create_string_buffer(128)
            struct.pack_into(
                "=IIQQIIQ",
                attr,
                0,
                BPF_PROG_TYPE_SOCKET_FILTER,
                len(insns) // 8,
                ctypes.addressof(self._insns),
                ctypes.addressof(self._license),
                1,
                len(log),
                ctypes.addressof(log),
            )
            try:
                self.prog_fd = _bpf(BPF_PROG_LOAD, attr)
            except BpfError as exc:
                raise BpfError(
                    exc.errno, f"{exc.strerror}: {log.value.decode(errors='replace')[-500:]}"
                ) from None
        except BaseException:
            os.close(self.map_fd)
            raise
        self._value = ctypes.create_string_buffer(4)
        self._key = ctypes.create_string_buffer(12)
        self._attr = ctypes.create_string_buffer(128)
        struct.pack_into(
            "=I4xQQQ",
            self._attr,
            0,
            self.map_fd,
            ctypes.addressof(self._key),
            ctypes.addressof(self._value),
            0,
        )
        self._del_attr = ctypes.create_string_buffer(128)  # fields after the key must be 0
        struct.pack_into("=I4xQ", self._del_attr, 0, self.map_fd, ctypes.addressof(self._key))
        self.known: set[bytes] = set()  # keys this process added (a worker's own flows)
        self.added = 0  # flow directions handed to the kernel

    def attach(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, self.prog_fd)

    def add(self, key: bytes) -> None:
        """Stop reading this direction of a flow."""
        if key in self.known:
            return
        ctypes.memmove(self._key, key, 12)
        _bpf(BPF_MAP_UPDATE_ELEM, self._attr)
        self.known.add(key)
        self.added += 1
        if len(self.known) > 4 * MAX_FLOWS:
            self.known.clear()  # the LRU map forgot most of these anyway

    def remove(self, key: bytes) -> None:
        """Read this direction again (a connection ends, or new one reuses its ports). Also
        for keys another process added (a worker that died): the map is the truth."""
        self.known.discard(key)
        ctypes.memmove(self._key, key, 12)
        try:
            _bpf(BPF_MAP_DELETE_ELEM, self._del_attr)
        except BpfError:
            pass  # already evicted by the LRU

    def close(self) -> None:
        for fd in (getattr(self, "prog_fd", -1), self.map_fd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
