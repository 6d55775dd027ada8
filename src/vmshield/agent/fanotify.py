"""Linux fanotify through ctypes: init, marks, event reading, permission responses."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from dataclasses import dataclass

FAN_ACCESS = 0x00000001
FAN_MODIFY = 0x00000002
FAN_CLOSE_WRITE = 0x00000008
FAN_CLOSE_NOWRITE = 0x00000010
FAN_OPEN = 0x00000020
FAN_Q_OVERFLOW = 0x00004000
FAN_OPEN_PERM = 0x00010000
FAN_ACCESS_PERM = 0x00020000
FAN_OPEN_EXEC_PERM = 0x00040000
FAN_ONDIR = 0x40000000
FAN_EVENT_ON_CHILD = 0x08000000

FAN_CLOEXEC = 0x00000001
FAN_NONBLOCK = 0x00000002
FAN_CLASS_CONTENT = 0x00000004
FAN_UNLIMITED_QUEUE = 0x00000010
FAN_UNLIMITED_MARKS = 0x00000020

FAN_MARK_ADD = 0x00000001
FAN_MARK_REMOVE = 0x00000002
FAN_MARK_DONT_FOLLOW = 0x00000004
FAN_MARK_ONLYDIR = 0x00000008
FAN_MARK_IGNORED_MASK = 0x00000020
FAN_MARK_IGNORED_SURV_MODIFY = 0x00000040
FAN_MARK_FLUSH = 0x00000080
FAN_MARK_MOUNT = 0x00000010
FAN_MARK_FILESYSTEM = 0x00000100

FAN_ALLOW = 0x01
FAN_DENY = 0x02
FAN_NOFD = -1
PERM_EVENTS = FAN_OPEN_PERM | FAN_OPEN_EXEC_PERM | FAN_ACCESS_PERM

AT_FDCWD = -100
_META = struct.Struct("IBBHQii")
_RESPONSE = struct.Struct("iI")
FANOTIFY_METADATA_VERSION = 3

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
_libc.fanotify_init.restype = ctypes.c_int
_libc.fanotify_mark.argtypes = [
    ctypes.c_int,
    ctypes.c_uint,
    ctypes.c_uint64,
    ctypes.c_int,
    ctypes.c_char_p,
]
_libc.fanotify_mark.restype = ctypes.c_int


@dataclass(frozen=True)
class FanEvent:
    mask: int
    fd: int
    pid: int

    @property
    def is_permission(self) -> bool:
        return bool(self.mask & PERM_EVENTS)


def init(flags: int = FAN_CLASS_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK) -> int:
    fd = _libc.fanotify_init(flags, os.O_RDONLY | os.O_LARGEFILE | os.O_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"fanotify_init: {os.strerror(err)} (needs root and CONFIG_FANOTIFY)")
    return fd


def mark(
    fan_fd: int, flags: int, mask: int, path: str | None = None, dirfd: int = AT_FDCWD
) -> None:
    p = path.encode() if path is not None else None
    if _libc.fanotify_mark(fan_fd, flags, mask, dirfd, p) < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"fanotify_mark({path or f'fd {dirfd}'}): {os.strerror(err)}")


def ignore_fd(fan_fd: int, event_fd: int, mask: int) -> None:
    """Kernel-side clean cache: ignore `mask` on this inode until it is modified.

    Without FAN_MARK_IGNORED_SURV_MODIFY the kernel drops the ignore mask on the first write, so a
    modified file is intercepted again.
    """
    mark(fan_fd, FAN_MARK_ADD | FAN_MARK_IGNORED_MASK, mask, None, event_fd)


def read_events(fan_fd: int, bufsize: int = 65536) -> list[FanEvent]:
    try:
        buf = os.read(fan_fd, bufsize)
    except BlockingIOError:
        return []
    events: list[FanEvent] = []
    off = 0
    while off + _META.size <= len(buf):
        event_len, vers, _res, _mlen, mask, fd, pid = _META.unpack_from(buf, off)
        if vers != FANOTIFY_METADATA_VERSION:
            raise OSError(f"fanotify metadata version {vers}, expected {FANOTIFY_METADATA_VERSION}")
        if event_len < _META.size:
            break
        events.append(FanEvent(mask, fd, pid))
        off += event_len
    return events


def respond(fan_fd: int, event_fd: int, allow: bool) -> None:
    os.write(fan_fd, _RESPONSE.pack(event_fd, FAN_ALLOW if allow else FAN_DENY))


def fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""
