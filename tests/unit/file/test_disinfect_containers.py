"""Disinfection: containers rebuilt without infected members (others byte-identical), VBA removed
from OOXML, and a clear "cannot be disinfected" otherwise."""

from __future__ import annotations

import io
import tarfile
import xml.etree.ElementTree as ET
import zipfile

from container_testlib import EICAR, find_eicar, make_tar, make_zip

from vmshield.engines.file.containers.zipfmt import read_directory
from vmshield.engines.file.disinfect import disinfect

CT_NS = "{http://schemas.openxmlformats.org/package/2006/content-types}"
REL_NS = "{http://schemas.openxmlformats.org/package/2006/relationships}"


def raw_members(blob: bytes) -> dict[str, bytes]:
    """Each member's stored (compressed) bytes, to prove they were copied, not recompressed."""
    d = read_directory(blob)
    return {e.name: blob[e.data_offset : e.data_offset + e.comp_size] for e in d.entries}


def mixed_zip() -> bytes:
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w") as z:
        z.writestr("readme.txt", b"hello " * 500, zipfile.ZIP_DEFLATED)
        z.writestr("bin/eicar.com", EICAR, zipfile.ZIP_STORED)
        z.writestr("data.bz", b"abc" * 1000, zipfile.ZIP_BZIP2)
        z.writestr("nested.zip", make_zip({"x/e.com": EICAR}), zipfile.ZIP_DEFLATED)
        z.writestr("last.bin", bytes(range(256)) * 10, zipfile.ZIP_LZMA)
        z.comment = b"archive comment"
    return b.getvalue()


def test_zip_rebuilt_without_infected_members() -> None:
    blob = mixed_zip()
    found = find_eicar(blob)["found"]
    assert sorted(found) == ["bin/eicar.com", "nested.zip//x/e.com"]
    r = disinfect(blob, found)
    assert r.ok and r.data is not None, r.reason
    assert sorted(r.removed) == ["bin/eicar.com", "nested.zip//..."]
    z = zipfile.ZipFile(io.BytesIO(r.data))
    assert z.testzip() is None
    assert z.namelist() == ["readme.txt", "data.bz", "nested.zip", "last.bin"]
    assert z.comment == b"archive comment"
    # The nested zip was cleaned in turn: still there, without its infected member.
    inner = zipfile.ZipFile(io.BytesIO(z.read("nested.zip")))
    assert inner.namelist() == [] and inner.testzip() is None
    before, after = raw_members(blob), raw_members(r.data)
    for name in after:
        if name != "nested.zip":
            assert after[name] == before[name], f"{name} was recompressed"
    assert find_eicar(r.data)["found"] == []


def test_nested_cleaning_keeps_clean_siblings_inside() -> None:
    inner = make_zip({"keep.txt": b"keep", "deeper.tar": make_tar({"e.com": EICAR, "ok": b"ok"})})
    top = make_zip({"a.txt": b"a", "pack.zip": inner})
    found = find_eicar(top)["found"]
    assert found == ["pack.zip//deeper.tar//e.com"]
    r = disinfect(top, found)
    assert r.ok and r.data
    z = zipfile.ZipFile(io.BytesIO(r.data))
    zi = zipfile.ZipFile(io.BytesIO(z.read("pack.zip")))
    assert zi.read("keep.txt") == b"keep"
    with tarfile.open(fileobj=io.BytesIO(zi.read("deeper.tar"))) as t:
        assert t.getnames() == ["ok"]
    assert find_eicar(r.data)["found"] == []


def test_zip_with_data_descriptors() -> None:
    # Streaming writers (zipfile on a non-seekable file) put sizes after the data.
    class NoSeek(io.RawIOBase):
        def __init__(self) -> None:
            self.buf = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, b: bytes) -> int:  # type: ignore[override]
            self.buf += b
            return len(b)

    w = NoSeek()
    with zipfile.ZipFile(w, "w", zipfile.ZIP_DEFLATED) as z:  # type: ignore[arg-type]
        z.writestr("a.txt", b"A" * 3000)
        z.writestr("e.com", EICAR)
        z.writestr("c.txt", b"C" * 3000)
    blob = bytes(w.buf)
    assert read_directory(blob).entries[0].flags & 0x08
    r = disinfect(blob, ["e.com"])
    assert r.ok and r.data
    z2 = zipfile.ZipFile(io.BytesIO(r.data))
    assert z2.testzip() is None and z2.namelist() == ["a.txt", "c.txt"]
    assert z2.read("c.txt") == b"C" * 3000


def test_tar_and_tar_gz_rebuilt() -> None:
    files = {"a.txt": b"a" * 700, "dir/eicar.com": EICAR, "b.bin": bytes(range(256)) * 3}
    for mode in ("w", "w:gz", "w:xz"):
        blob = make_tar(files, mode)
        r = disinfect(blob, ["dir/eicar.com"])
        assert r.ok and r.data, r.reason
        with tarfile.open(fileobj=io.BytesIO(r.data)) as t:
            assert t.getnames() == ["a.txt", "b.bin"]
            assert t.extractfile("b.bin").read() == files["b.bin"]  # type: ignore[union-attr]
        assert find_eicar(r.data)["found"] == []


def test_unknown_member_refused() -> None:
    r = disinfect(make_zip({"a": b"1"}), ["nope.exe"])
    assert not r.ok and "not found" in r.reason


def test_cannot_disinfect_plain_files_and_others() -> None:
    r = disinfect(EICAR, [""])
    assert not r.ok and r.data is None and r.reason.startswith("cannot be disinfected")
    r = disinfect(b"MZ" + b"\x00" * 200, ["sfx@0x40.zip//e.com"])
    assert not r.ok and "cannot be disinfected" in r.reason
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600
    assert not disinfect(ole, ["Macros/VBA/Module1"]).ok


def test_nothing_to_do_is_ok() -> None:
    blob = make_zip({"a": b"1"})
    r = disinfect(blob, [])
    assert r.ok and r.data == blob


# --- OOXML macros -----------------------------------------------------------------------------

CONTENT_TYPES = b"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">
<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>
<Default Extension="xml" ContentType="application/xml"/>
<Default Extension="bin" ContentType="application/vnd.ms-office.vbaProject"/>
<Override PartName="/word/document.xml" ContentType="application/vnd.ms-word.document.macroEnabled.main+xml"/>
<Override PartName="/word/vbaData.xml" ContentType="application/vnd.ms-word.vbaData+xml"/>
<Override PartName="/word/styles.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.styles+xml"/>
</Types>"""
ROOT_RELS = b"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="word/document.xml"/>
</Relationships>"""
DOC_RELS = b"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
<Relationship Id="rId1" Type="http://schemas.microsoft.com/office/2006/relationships/vbaProject" Target="vbaProject.bin"/>
<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles" Target="styles.xml"/>
</Relationships>"""
VBA_RELS = b"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
<Relationship Id="rId1" Type="http://schemas.microsoft.com/office/2006/relationships/wordVbaData" Target="vbaData.xml"/>
</Relationships>"""
DOCUMENT = b'<?xml version="1.0"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>Invoice</w:t></w:r></w:p></w:body></w:document>'


def make_docm(vba: bytes) -> bytes:
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", CONTENT_TYPES)
        z.writestr("_rels/.rels", ROOT_RELS)
        z.writestr("word/document.xml", DOCUMENT)
        z.writestr("word/styles.xml", b"<w:styles xmlns:w='x'/>")
        z.writestr("word/_rels/document.xml.rels", DOC_RELS)
        z.writestr("word/vbaProject.bin", vba)
        z.writestr("word/_rels/vbaProject.bin.rels", VBA_RELS)
        z.writestr("word/vbaData.xml", b"<wne:vbaSuppData xmlns:wne='x'/>")
    return b.getvalue()


def test_vba_project_removed_from_ooxml() -> None:
    # The macro project carries the detection (EICAR stands in for a macro signature).
    doc = make_docm(b"\xd0\xcf\x11\xe0 fake vba project " + EICAR)
    r = disinfect(doc, ["word/vbaProject.bin"])
    assert r.ok and r.data, r.reason
    assert "VBA project removed" in r.reason
    z = zipfile.ZipFile(io.BytesIO(r.data))
    assert z.testzip() is None
    names = z.namelist()
    assert "word/vbaProject.bin" not in names
    assert "word/_rels/vbaProject.bin.rels" not in names and "word/vbaData.xml" not in names
    assert {"word/document.xml", "word/styles.xml", "_rels/.rels"} <= set(names)
    ct = ET.fromstring(z.read("[Content_Types].xml"))
    parts = {o.get("PartName") for o in ct.findall(f"{CT_NS}Override")}
    assert parts == {"/word/document.xml", "/word/styles.xml"}
    assert ct.tag == f"{CT_NS}Types" and z.read("[Content_Types].xml").startswith(b"<?xml")
    rels = ET.fromstring(z.read("word/_rels/document.xml.rels"))
    targets = [x.get("Target") for x in rels.findall(f"{REL_NS}Relationship")]
    assert targets == ["styles.xml"]
    # Untouched parts keep their stored bytes.
    before, after = raw_members(doc), raw_members(r.data)
    for n in ("word/document.xml", "word/styles.xml", "_rels/.rels"):
        assert before[n] == after[n]
    assert find_eicar(r.data)["found"] == []


def test_detection_inside_vba_project_path() -> None:
    doc = make_docm(b"vba " + EICAR)
    r = disinfect(doc, ["word/vbaProject.bin//Macros/VBA/ThisDocument"])
    assert r.ok and r.data
    assert "word/vbaProject.bin" not in zipfile.ZipFile(io.BytesIO(r.data)).namelist()


def test_corrupt_compressed_stream_is_refused_not_raised() -> None:
    # Found by fuzzing: an xz header followed by garbage raised LZMAError out of disinfect().
    for blob in (
        b"\xfd7zXZ\x00" + b"\x00" * 200,
        b"\x1f\x8b\x08" + b"\xff" * 100,
        b"BZh91AY&SY" + b"\x00" * 50,
    ):
        r = disinfect(blob, ["a"])
        assert not r.ok and r.reason.startswith("cannot be disinfected")


def test_tar_gz_with_infected_zip_inside_cleaned_in_place() -> None:
    inner = make_zip({"keep.txt": b"keep", "e.com": EICAR})
    top = make_tar({"a.txt": b"a", "pkg/inner.zip": inner}, "w:gz")
    found = find_eicar(top)["found"]
    assert found == ["pkg/inner.zip//e.com"]
    r = disinfect(top, found)
    assert r.ok and r.data, r.reason
    with tarfile.open(fileobj=io.BytesIO(r.data)) as t:
        assert t.getnames() == ["a.txt", "pkg/inner.zip"]
        z = zipfile.ZipFile(io.BytesIO(t.extractfile("pkg/inner.zip").read()))  # type: ignore[union-attr]
        assert z.namelist() == ["keep.txt"]
    assert find_eicar(r.data)["found"] == []


def test_overlapping_zip_refused() -> None:
    # Found by fuzzing: two central entries on the same bytes; removing one would keep the content.
    import struct

    blob = make_zip({"a": EICAR})
    d = read_directory(blob)
    cen = blob[d.cd_offset : d.cd_offset + d.cd_size]
    bomb = (
        blob[: d.cd_offset]
        + cen
        + cen
        + struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 2, 2, 2 * len(cen), d.cd_offset, 0)
    )
    r = disinfect(bomb, ["a"])
    assert not r.ok and "overlapping" in r.reason


def test_central_record_cut_by_end_of_file() -> None:
    # Found by fuzzing: a last central record whose name runs past the end of the file was
    # copied short, and the rebuilt archive's end record became part of that name.
    import struct

    blob = bytearray(make_zip({"a": EICAR, "b/": b""}))
    d = read_directory(bytes(blob))
    last = d.entries[-1]
    struct.pack_into("<H", blob, last.cen_offset + 28, 200)  # name length past the end
    r = disinfect(bytes(blob), ["a"])
    if r.ok:
        assert r.data is not None and zipfile.ZipFile(io.BytesIO(r.data)).testzip() is None
