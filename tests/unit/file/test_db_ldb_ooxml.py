"""`Container:CL_TYPE_OOXML_WORD|XL|PPT`: a signature for members of one kind of Office document.
clamscan (checked here with the same database) treats an OOXML document as that type *and* as a
zip: a member of a .docx matches both Container:CL_TYPE_OOXML_WORD and Container:CL_TYPE_ZIP."""

from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

import pytest
from sig_testlib import clamscan, db_of, write_db

from vmshield.engines.file.database import Database
from vmshield.engines.file.scanner import Scanner

MARK = b"MARKER-OOXML-PAYLOAD"
TYPES = ("ZIP", "OOXML_WORD", "OOXML_XL", "OOXML_PPT")
LDB = "".join(f"C.{t};Engine:81-255,Container:CL_TYPE_{t},Target:0;0;{MARK.hex()}\n" for t in TYPES)
PARTS = {"word": "word/document.xml", "xl": "xl/workbook.xml", "ppt": "ppt/presentation.xml"}
EXPECTED = {
    "word": {"C.ZIP", "C.OOXML_WORD"},
    "xl": {"C.ZIP", "C.OOXML_XL"},
    "ppt": {"C.ZIP", "C.OOXML_PPT"},
    "plain": {"C.ZIP"},
}


def make_ooxml(kind: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        part = PARTS.get(kind)
        if part:
            z.writestr(
                "[Content_Types].xml",
                '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/'
                f'2006/content-types"><Override PartName="/{part}" ContentType="application/xml"/>'
                "</Types>",
            )
            z.writestr(
                "_rels/.rels",
                '<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/'
                'package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.'
                'openxmlformats.org/officeDocument/2006/relationships/officeDocument" '
                f'Target="{part}"/></Relationships>',
            )
            z.writestr("docProps/app.xml", '<?xml version="1.0"?><Properties/>')
            z.writestr(part, "<x>hello</x>")
        z.writestr("payload.bin", MARK + b"-0123456789 " * 4)
    return buf.getvalue()


def test_ooxml_container_types() -> None:
    db = db_of(t_ldb=LDB)
    assert not db.rejected, db.rejected
    scanner = Scanner(db)
    for kind, want in EXPECTED.items():
        res = scanner.scan_bytes(make_ooxml(kind), f"{kind}.zip")
        assert {d.name for d in res.detections} == want, kind
        assert {d.inner_path for d in res.detections} == {"payload.bin"}
    # The marker on its own, outside any container: none of them.
    assert not scanner.scan_bytes(MARK + b" alone", "x").detections


@pytest.mark.skipif(shutil.which("clamscan") is None, reason="clamscan not installed")
def test_agrees_with_clamscan(tmp_path: Path) -> None:
    db_dir = write_db(tmp_path / "db", {"t.ldb": LDB})
    files = []
    for kind in EXPECTED:
        f = tmp_path / f"{kind}.zip"
        f.write_bytes(make_ooxml(kind))
        files.append(f)
    scanner = Scanner(Database.load(db_dir))
    ours = {f.stem: {d.name for d in scanner.scan_path(f).detections} for f in files}
    theirs = {Path(name).stem: found for name, found in clamscan(db_dir, files).items()}
    assert ours == theirs == EXPECTED
