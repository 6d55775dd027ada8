"""RTF embedded objects (\\objdata, OLE1 in hex), through oletools' rtfobj which copes with the
obfuscations exploit kits use."""

from __future__ import annotations

from collections.abc import Iterator

from ..limits import LimitExceeded, ScanBudget
from ._base import Member, member_cap, sanitize_name, unique_names

MAX_OBJECTS = 1000


def walk(data: bytes, name: str, budget: ScanBudget) -> Iterator[Member]:
    from oletools.rtfobj import RtfObjParser

    parser = RtfObjParser(data)
    try:
        parser.parse()
    except Exception as exc:  # noqa: BLE001
        yield Member("(rtf)", None, error=f"malformed RTF: {exc}")
        return
    uniq = unique_names()
    for n, obj in enumerate(parser.objects, 1):
        budget.check_time()
        if n > MAX_OBJECTS:
            raise LimitExceeded("max_files", f"RTF has more than {MAX_OBJECTS} objects")
        if obj.is_package and obj.olepkgdata is not None:
            body, label = obj.olepkgdata, obj.filename or f"object{n}"
        elif obj.is_ole and obj.oledata is not None:
            cls = (
                obj.class_name.decode("latin-1", "replace")
                if isinstance(obj.class_name, bytes)
                else ""
            )
            body, label = obj.oledata, f"object{n}-{cls or 'ole'}"
        else:
            body, label = obj.rawdata, f"object{n}.bin"
        if body is None:
            continue
        if len(body) > member_cap(budget):
            raise LimitExceeded("max_file_size", f"RTF object of {len(body)} bytes")
        yield Member(uniq(sanitize_name(str(label), f"object{n}")), bytes(body))
