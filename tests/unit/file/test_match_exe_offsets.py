"""EP+n, EP-n, Sx+n, SEx and SL+n offsets on a PE built here and on this machine's ELF binaries."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from sig_testlib import clamscan, db_of, names

from vmshield.engines.file.signatures.execinfo import elf_info, pe_info

CODE = b"\x55\x89\xe5\x83\xec\x10\xe8\x00\x00\x00\x00\xc9\xc3"
DATA = b"EVIL-DATA-SECTION-MARKER"


def make_pe() -> bytes:
    mz = bytearray(0x40)
    mz[:2] = b"MZ"
    struct.pack_into("<I", mz, 0x3C, 0x40)
    coff = struct.pack("<HHIIIHH", 0x14C, 2, 0, 0, 0, 0xE0, 0x0102)
    opt = bytearray(0xE0)
    struct.pack_into("<H", opt, 0, 0x10B)
    struct.pack_into("<I", opt, 16, 0x1004)  # AddressOfEntryPoint: 4 bytes into .text
    struct.pack_into("<I", opt, 60, 0x200)  # SizeOfHeaders
    sec = b""
    for name, va, off in ((b".text", 0x1000, 0x200), (b".data", 0x2000, 0x400)):
        sec += struct.pack("<8sIIIIIIHHI", name, 0x200, va, 0x200, off, 0, 0, 0, 0, 0x60000020)
    head = bytes(mz) + b"PE\x00\x00" + coff + bytes(opt) + sec
    text = (b"\x90" * 4 + CODE).ljust(0x200, b"\xcc")
    data = DATA.ljust(0x200, b"\x00")
    return head.ljust(0x200, b"\x00") + text + data


def hit(offset: str, hexsig: str, data: bytes, target: int = 1) -> bool:
    db = db_of(t_ndb=f"T.Off:{target}:{offset}:{hexsig}\n")
    assert not db.rejected, db.rejected
    return "T.Off" in names(db, data)


def test_pe_headers_parsed() -> None:
    info = pe_info(make_pe())
    assert info is not None
    assert info.entry == 0x204
    assert info.sections == ((0x200, 0x200), (0x400, 0x200))


def test_pe_offsets() -> None:
    pe = make_pe()
    assert hit("EP+0", CODE[:8].hex(), pe)
    assert not hit("EP+1", CODE[:8].hex(), pe)
    assert hit("EP-4", "90909090" + CODE[:4].hex(), pe)
    assert hit("EP+2,4", CODE[4:10].hex(), pe)  # floating: EP+2..EP+6, CODE[4:] is at EP+4
    assert hit("S1+0", DATA.hex(), pe)
    assert hit("SL+5", DATA[5:].hex(), pe)
    assert hit("SE1", DATA[8:16].hex(), pe)
    assert not hit("SE0", DATA[8:16].hex(), pe)  # not in section 0
    assert not hit("S7+0", DATA.hex(), pe)  # no such section
    # Not a PE: an EP offset cannot match.
    assert not hit("EP+0", CODE[:8].hex(), b"\x00" * 4 + CODE, target=0)


def test_bad_exe_offsets_rejected() -> None:
    db = db_of(t_ndb="A:1:EP+x:41424344\nB:1:VI:41424344\nC:1:S+1:41424344\n")
    assert [r.line for r in db.rejected] == [1, 2, 3]


@pytest.mark.skipif(shutil.which("clamscan") is None, reason="clamscan not installed")
def test_elf_entry_point_agrees_with_clamscan(tmp_path: Path) -> None:
    binary = tmp_path / "true"
    shutil.copyfile(shutil.which("true") or "/bin/true", binary)
    data = binary.read_bytes()
    info = elf_info(data)
    assert info is not None and info.entry is not None
    at_ep = data[info.entry : info.entry + 12].hex()
    off_by_one = data[info.entry + 1 : info.entry + 13].hex()
    db_dir = tmp_path / "db"
    db_dir.mkdir()
    (db_dir / "t.ndb").write_text(f"Elf.AtEP:6:EP+0:{at_ep}\nElf.NotAtEP:6:EP+0:{off_by_one}\n")
    theirs = clamscan(db_dir, [binary])[binary.name]
    from vmshield.engines.file.database import Database

    ours = names(Database.load(db_dir), data)
    assert ours == theirs == {"Elf.AtEP"}


def test_pe_section_hashes_mdb_msb(tmp_path: Path) -> None:
    import hashlib

    pe = make_pe()
    data_sec = pe[0x400:0x600]
    md5 = hashlib.md5(data_sec).hexdigest()
    sha256 = hashlib.sha256(data_sec).hexdigest()
    db = db_of(t_mdb=f"512:{md5}:Pe.Section.Md5\n", t_msb=f"512:{sha256}:Pe.Section.Sha256\n")
    assert db.stats["pe_section"] == 2 and not db.rejected
    assert names(db, pe) == {"Pe.Section.Md5", "Pe.Section.Sha256"}
    assert names(db, data_sec) == set()  # the bytes alone are not a PE section
    assert names(db_of(t_mdb=f"511:{md5}:Wrong.Size\n"), pe) == set()
    assert names(db_of(t_mdb=f"*:{md5}:Any.Size:73\n"), pe) == {"Any.Size"}
    bad = db_of(t_mdb=f"{md5}:512:Swapped\n")
    assert bad.rejected and bad.rejected[0].line == 1
    if shutil.which("clamscan"):
        (tmp_path / "db").mkdir()
        (tmp_path / "db" / "t.mdb").write_text(f"512:{md5}:Pe.Section.Md5\n")
        (tmp_path / "x.exe").write_bytes(pe)
        proc = subprocess.run(
            ["clamscan", "--no-summary", "-d", str(tmp_path / "db"), str(tmp_path / "x.exe")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "Pe.Section.Md5.UNOFFICIAL FOUND" in proc.stdout, proc.stdout + proc.stderr


def test_db_hash_mdb_lines_detect_the_pe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vmshield.cli import main
    from vmshield.engines.file.database import Database

    (tmp_path / "x.exe").write_bytes(make_pe())
    assert main(["db", "hash", "--kind", "mdb", "--name", "Pe.X", str(tmp_path / "x.exe")]) == 0
    lines = capsys.readouterr().out
    assert len(lines.splitlines()) == 2 and lines.startswith("512:")
    (tmp_path / "x.mdb").write_text(lines)
    assert names(Database.load(tmp_path / "x.mdb"), make_pe()) == {"Pe.X"}
    (tmp_path / "t.txt").write_text("not a pe")
    assert main(["db", "hash", "--kind", "mdb", str(tmp_path / "t.txt")]) == 2
