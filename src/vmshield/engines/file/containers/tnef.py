"""TNEF (winmail.dat, [MS-OXTNEF]): the attachments Outlook wraps for non-Outlook recipients."""

from __future__ import annotations

import struct
from collections.abc import Iterator

from ..limits import LimitExceeded, ScanBudget
from ._base import Member, member_cap, sanitize_name, unique_names

SIGNATURE = 0x223E9F78
ATT_ATTACH_REND_DATA = 0x00069002  # starts a new attachment
ATT_ATTACH_TITLE = 0x00018010  # its (short) file name
ATT_ATTACH_DATA = 0x0006800F  # its bytes
LVL_ATTACHMENT = 2


def walk(data: bytes, name: str, budget: ScanBudget) -> Iterator[Member]:
    if len(data) < 6 or struct.unpack_from("<I", data)[0] != SIGNATURE:
        yield Member("(tnef)", None, error="bad TNEF signature")
        return
    uniq = unique_names()
    pos = 6
    n = 0
    title: str | None = None
    body: bytes | None = None

    def flush() -> Iterator[Member]:
        if body is not None:
            yield Member(uniq(sanitize_name(title or "", f"attachment{n}")), body)

    while pos < len(data):
        budget.check_time()
        if pos + 9 > len(data):
            yield from flush()
            yield Member("(tnef)", None, error=f"truncated TNEF attribute at offset {pos}")
            return
        level = data[pos]
        attr, length = struct.unpack_from("<II", data, pos + 1)
        start = pos + 9
        value = data[start : start + length]
        if len(value) < length or start + length + 2 > len(data):
            yield from flush()
            yield Member(
                "(tnef)", None, error=f"truncated TNEF attribute 0x{attr:08x} at offset {pos}"
            )
            return
        if (sum(value) & 0xFFFF) != struct.unpack_from("<H", data, start + length)[0]:
            yield Member("(tnef)", None, error=f"TNEF checksum mismatch at offset {pos}")
        if level == LVL_ATTACHMENT:
            if attr == ATT_ATTACH_REND_DATA:
                yield from flush()
                n += 1
                if n > budget.limits.max_files:
                    raise LimitExceeded("max_files", "too many TNEF attachments")
                title, body = None, None
            elif attr == ATT_ATTACH_TITLE:
                title = value.split(b"\x00", 1)[0].decode("latin-1")
            elif attr == ATT_ATTACH_DATA:
                if length > member_cap(budget):
                    raise LimitExceeded("max_file_size", f"TNEF attachment of {length} bytes")
                body = value
        pos = start + length + 2
    yield from flush()
