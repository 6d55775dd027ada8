"""inotify through ctypes, for one job: see new directories under watched trees at once, so the
agent marks them before files in them are used (fanotify directory marks are not recursive)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct

IN_CREATE = 0x00000100
IN_MOVED_TO = 0x00000080
IN_DELETE_SELF = 0x00000400
IN_IGNORED = 0x00008000
IN_ISDIR = 0x40000000
IN_Q_OVERFLOW = 0x00004000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
DIR_MASK = IN_CREATE | IN_MOVED_TO | IN_DELETE_SELF | IN_ONLYDIR
_EVENT = struct.Struct("iIII")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]


def init() -> int:
    fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"inotify_init1: {os.strerror(err)}")
    return fd


def add_watch(fd: int, path: str, mask: int = DIR_MASK) -> int:
    wd = _libc.inotify_add_watch(fd, path.encode(), mask)
    if wd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"inotify_add_watch({path}): {os.strerror(err)}")
    return int(wd)


def read_events(fd: int) -> list[tuple[int, int, str]]:
    """(watch descriptor, mask, name) of every queued event."""
    try:
        buf = os.read(fd, 65536)
    except BlockingIOError:
        return []
    out = []
    off = 0
    while off + _EVENT.size <= len(buf):
        wd, mask, _cookie, length = _EVENT.unpack_from(buf, off)
        name = buf[off + _EVENT.size : off + _EVENT.size + length].split(b"\0", 1)[0]
        out.append((wd, mask, os.fsdecode(name)))
        off += _EVENT.size + length
    return out
