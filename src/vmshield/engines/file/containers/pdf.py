"""PDF: embedded files (attachments) and the decoded content of compressed streams (pypdf)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

from ..limits import LimitExceeded, ScanBudget
from ._base import Member, member_cap, sanitize_name, unique_names

MAX_OBJECTS = 100_000
logging.getLogger("pypdf").setLevel(logging.ERROR)  # hostile PDFs make pypdf very talkative


def walk(data: bytes, name: str, budget: ScanBudget) -> Iterator[Member]:
    from pypdf import PdfReader
    from pypdf.generic import IndirectObject, StreamObject

    start = data.find(b"%PDF-")
    try:
        reader = PdfReader(io.BytesIO(data[start:] if start > 0 else data), strict=False)
    except Exception as exc:  # noqa: BLE001 - pypdf raises many kinds on bad input
        yield Member("(pdf)", None, error=f"malformed PDF: {exc}")
        return
    if reader.is_encrypted:
        try:
            if not reader.decrypt(""):  # empty user password: opens, like readers do
                yield Member("(pdf)", None, encrypted=True)
                return
        except Exception:  # noqa: BLE001
            yield Member("(pdf)", None, encrypted=True)
            return
    uniq = unique_names()
    seen_embedded: set[int] = set()
    # Attachments: /EmbeddedFiles name tree and file-attachment annotations.
    try:
        for fname, contents in reader.attachments.items():
            for body in contents:
                budget.check_time()
                if len(body) > member_cap(budget):
                    raise LimitExceeded("max_file_size", f"embedded file of {len(body)} bytes")
                yield Member(uniq(sanitize_name(fname, "embedded")), body)
                seen_embedded.add(hash(body))
    except LimitExceeded:
        raise
    except Exception as exc:  # noqa: BLE001
        yield Member("(pdf-attachments)", None, error=f"unreadable attachments: {exc}")
    # Every compressed stream, decoded: scripts, fonts and hidden payloads live there.
    count = 0
    for gen_objs in list(reader.xref.values()):
        for idnum in list(gen_objs):
            count += 1
            if count > MAX_OBJECTS:
                raise LimitExceeded("max_files", f"PDF has more than {MAX_OBJECTS} objects")
            budget.check_time()
            try:
                obj = reader.get_object(IndirectObject(idnum, 0, reader))
                # Compressed streams, and embedded files even when stored (hash signatures match
                # the file, not the PDF); the PDF body itself is scanned by the caller.
                if not isinstance(obj, StreamObject) or (
                    "/Filter" not in obj and obj.get("/Type") != "/EmbeddedFile"
                ):
                    continue
                raw_len = len(obj._data)
                body = obj.get_data()
            except LimitExceeded:
                raise
            except Exception as exc:  # noqa: BLE001
                yield Member(f"stream-{idnum}", None, error=f"undecodable stream: {exc}")
                continue
            if len(body) > member_cap(budget):
                raise LimitExceeded(
                    "max_file_size", f"PDF stream {idnum} decodes to {len(body)} bytes"
                )
            budget.check_ratio(raw_len, len(body))
            if hash(body) in seen_embedded:
                continue
            yield Member(uniq(f"stream-{idnum}"), body)
