"""Entry point and sections of PE and ELF files, for the EP/Sx/SEx/SL signature offsets.

Pure and bounded: reads only the headers it is given, never trusts a count or offset beyond the
buffer. Returns None for anything that is not a well-formed PE/ELF header.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAX_SECTIONS = 96  # PE allows 96; an ELF with more is not worth resolving offsets for


@dataclass(frozen=True)
class ExeInfo:
    entry: int | None  # file offset of the entry point
    sections: tuple[tuple[int, int], ...]  # (file offset, size on disk) per section, in order


def _rva_to_off(rva: int, sections: list[tuple[int, int, int, int]], headers: int) -> int | None:
    for va, vsize, raw_off, raw_size in sections:
        if va <= rva < va + max(vsize, raw_size):
            off = rva - va + raw_off
            return off if rva - va < raw_size else None
    return rva if rva < headers else None


def pe_info(data: bytes) -> ExeInfo | None:
    if len(data) < 0x40 or data[:2] != b"MZ":
        return None
    e = struct.unpack_from("<I", data, 0x3C)[0]
    if e + 24 > len(data) or data[e : e + 4] != b"PE\x00\x00":
        return None
    (nsec,) = struct.unpack_from("<H", data, e + 6)
    (opt_size,) = struct.unpack_from("<H", data, e + 20)
    opt = e + 24
    if opt + 20 > len(data) or nsec > MAX_SECTIONS:
        return None
    (entry_rva,) = struct.unpack_from("<I", data, opt + 16)
    headers = struct.unpack_from("<I", data, opt + 60)[0] if opt + 64 <= len(data) else 0
    table = opt + opt_size
    secs = []
    for i in range(nsec):
        p = table + 40 * i
        if p + 40 > len(data):
            break
        vsize, va, raw_size, raw_off = struct.unpack_from("<IIII", data, p + 8)
        secs.append((va, vsize, raw_off, raw_size))
    return ExeInfo(
        _rva_to_off(entry_rva, secs, headers),
        tuple((raw_off, raw_size) for _va, _vs, raw_off, raw_size in secs),
    )


def elf_info(data: bytes) -> ExeInfo | None:
    if len(data) < 52 or data[:4] != b"\x7fELF" or data[4] not in (1, 2) or data[5] not in (1, 2):
        return None
    is64 = data[4] == 2
    end = "<" if data[5] == 1 else ">"
    try:
        if is64:
            entry, phoff, shoff = struct.unpack_from(end + "QQQ", data, 24)
            phentsize, phnum, shentsize, shnum = struct.unpack_from(end + "HHHH", data, 54)
        else:
            entry, phoff, shoff = struct.unpack_from(end + "III", data, 24)
            phentsize, phnum, shentsize, shnum = struct.unpack_from(end + "HHHH", data, 42)
        ep = None
        for i in range(min(phnum, MAX_SECTIONS)):
            p = phoff + i * phentsize
            if is64:
                ptype, _flags, off, vaddr, _pa, filesz = struct.unpack_from(end + "IIQQQQ", data, p)
            else:
                ptype, off, vaddr, _pa, filesz = struct.unpack_from(end + "IIIII", data, p)
            if ptype == 1 and vaddr <= entry < vaddr + filesz:  # PT_LOAD holding the entry
                ep = entry - vaddr + off
                break
        secs = []
        for i in range(min(shnum, MAX_SECTIONS)):
            p = shoff + i * shentsize
            if is64:
                off, size = struct.unpack_from(end + "QQ", data, p + 24)
            else:
                off, size = struct.unpack_from(end + "II", data, p + 16)
            secs.append((off, size))
    except (struct.error, OverflowError):  # offsets from the file point past it
        return None
    return ExeInfo(ep if ep is not None and ep < len(data) else None, tuple(secs))


def exe_info(data: bytes) -> ExeInfo | None:
    return pe_info(data) if data[:2] == b"MZ" else elf_info(data)
