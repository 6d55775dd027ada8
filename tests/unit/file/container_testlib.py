"""Builders for container test data (every archive is made by the test, never stored) and a
small recursive walk that finds EICAR through `open_container`, standing in for the scanner."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import shutil
import struct
import subprocess
import tarfile
import zipfile
import zlib
from pathlib import Path

from vmshield.engines.file.containers import open_container
from vmshield.engines.file.limits import LimitExceeded, Limits, ScanBudget

# The standard 68-byte EICAR test string, assembled so this file is not itself a detection.
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
assert len(EICAR) == 68


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


def find_eicar(
    data: bytes, name: str = "top", limits: Limits | None = None
) -> dict[str, list[str]]:
    """Walk containers recursively; return {'found': [inner paths], 'errors': [...], 'encrypted': [...]}."""
    budget = ScanBudget(limits or Limits())
    out: dict[str, list[str]] = {"found": [], "errors": [], "encrypted": [], "limit": []}

    def rec(blob: bytes, path: str, depth: int, leaf: str) -> None:
        budget.check_depth(depth)
        budget.charge_file(len(blob))
        if EICAR in blob[:4096] and blob.startswith(b"X5O!"):
            out["found"].append(path)
        it = open_container(blob, leaf, budget)
        if it is None:
            return
        for m in it:
            inner = f"{path}//{m.name}" if path else m.name
            if m.error:
                out["errors"].append(f"{inner}: {m.error}")
            if m.encrypted:
                out["encrypted"].append(inner)
            if m.data is not None:
                rec(m.data, inner, depth + 1, m.name)

    try:
        rec(data, "", 0, name)
    except LimitExceeded as exc:
        out["limit"].append(exc.limit)
    return out


def inner_paths(data: bytes) -> list[str]:
    return find_eicar(data)["found"]


# --- builders ------------------------------------------------------------------------------


def make_zip(files: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", method) as z:
        for n, d in files.items():
            z.writestr(n, d)
    return b.getvalue()


def make_tar(files: dict[str, bytes], mode: str = "w") -> bytes:
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode=mode) as t:  # type: ignore[call-overload]
        for n, d in files.items():
            ti = tarfile.TarInfo(n)
            ti.size = len(d)
            t.addfile(ti, io.BytesIO(d))
    return b.getvalue()


def make_7z(files: dict[str, bytes], tmp: Path, password: str | None = None) -> bytes:
    import py7zr

    p = tmp / "a.7z"
    with py7zr.SevenZipFile(p, "w", password=password) as z:
        if password:
            z.set_encrypted_header(False)
        for n, d in files.items():
            z.writestr(d, n)
    return p.read_bytes()


def _tree(files: dict[str, bytes], tmp: Path) -> Path:
    root = tmp / "tree"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir()
    for n, d in files.items():
        f = root / n
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(d)
    return root


def _run(args: list[str], cwd: Path, stdin: bytes | None = None) -> bytes:
    r = subprocess.run(args, cwd=cwd, input=stdin, capture_output=True, timeout=60, check=True)
    return r.stdout


def make_cab(files: dict[str, bytes], tmp: Path) -> bytes:
    root = _tree(files, tmp)
    _run(["gcab", "-c", "-z", str(tmp / "a.cab"), *files], cwd=root)
    return (tmp / "a.cab").read_bytes()


def make_arj(files: dict[str, bytes], tmp: Path) -> bytes:
    root = _tree(files, tmp)
    out = tmp / "a.arj"
    out.unlink(missing_ok=True)
    _run(["arj", "a", "-y", str(out), *files], cwd=root)
    return out.read_bytes()


def make_iso(files: dict[str, bytes], tmp: Path) -> bytes:
    root = _tree(files, tmp)
    out = tmp / "a.iso"
    _run(["xorriso", "-as", "mkisofs", "-quiet", "-R", "-J", "-o", str(out), str(root)], cwd=tmp)
    return out.read_bytes()


def make_cpio(files: dict[str, bytes], tmp: Path, fmt: str = "newc") -> bytes:
    root = _tree(files, tmp)
    names = "".join(f"{n}\n" for n in files).encode()
    return _run(["cpio", "-o", "--quiet", "-H", fmt], cwd=root, stdin=names)


def make_7zz_zip(files: dict[str, bytes], tmp: Path, method: str) -> bytes:
    root = _tree(files, tmp)
    out = tmp / "a.zip"
    out.unlink(missing_ok=True)
    _run(["7zz", "a", "-bd", "-tzip", f"-mm={method}", str(out), *files], cwd=root)
    return out.read_bytes()


def make_rar4(files: dict[str, bytes], encrypted: bool = False) -> bytes:
    """A stored (method 0x30) RAR 4 archive written from the format's technote: no RAR writer
    exists on Debian, and libarchive cannot write RAR."""

    def block(htype: int, flags: int, body: bytes) -> bytes:
        head = struct.pack("<BHH", htype, flags, 7 + len(body)) + body
        return struct.pack("<H", zlib.crc32(head) & 0xFFFF) + head

    out = bytearray(b"Rar!\x1a\x07\x00")
    out += block(0x73, 0, b"\x00" * 6)
    for name, data in files.items():
        nb = name.encode()
        hdr = struct.pack(
            "<IIBIIBBHI",
            len(data),
            len(data),
            3,
            zlib.crc32(data),
            0x5A000000,
            20,
            0x30,
            len(nb),
            0o100644,
        )
        # Flag 0x04: "encrypted with a password" (the data is left as is: readers must refuse it).
        out += block(0x74, 0x8000 | (0x04 if encrypted else 0), hdr + nb) + data
    out += block(0x7B, 0x4000, b"")
    return bytes(out)


def gz(data: bytes) -> bytes:
    return gzip.compress(data)


def bz(data: bytes) -> bytes:
    return bz2.compress(data)


def xz(data: bytes) -> bytes:
    return lzma.compress(data)


# --- carriers ----------------------------------------------------------------------------------

ENDOFCHAIN, FREESECT, FATSECT, NOSTREAM = 0xFFFFFFFE, 0xFFFFFFFF, 0xFFFFFFFD, 0xFFFFFFFF


def make_ole2(streams: dict[str, bytes]) -> bytes:
    """A compound file (MS-CFB v3, 512-byte sectors) written from the spec. Streams are padded to
    4096 bytes so they live in regular sectors (no mini stream needed)."""
    # Tree of storages: path "A/B/c" -> storage A, storage B, stream c.
    entries: list[dict] = [{"name": "Root Entry", "type": 5, "kids": [], "data": b""}]
    index: dict[str, int] = {"": 0}
    for path, data in streams.items():
        parts = path.split("/")
        parent = ""
        for i, part in enumerate(parts):
            key = "/".join(parts[: i + 1])
            if key not in index:
                is_stream = i == len(parts) - 1
                body = data + b"\x00" * max(0, 4096 - len(data)) if is_stream else b""
                entries.append(
                    {"name": part, "type": 2 if is_stream else 1, "kids": [], "data": body}
                )
                index[key] = len(entries) - 1
                entries[index[parent]]["kids"].append(index[key])
            parent = key
    sectors: list[bytes] = []
    for e in entries:
        if e["type"] == 2:
            e["start"] = len(sectors)
            d = e["data"]
            for off in range(0, len(d), 512):
                sectors.append(d[off : off + 512].ljust(512, b"\x00"))
            e["nsec"] = (len(d) + 511) // 512
        else:
            e["start"], e["nsec"] = ENDOFCHAIN, 0
    dir_first = len(sectors)
    dirbytes = bytearray()
    for e in entries:
        name = e["name"].encode("utf-16-le") + b"\x00\x00"
        kids = e["kids"]
        child = kids[0] if kids else NOSTREAM
        dirbytes += name.ljust(64, b"\x00") + struct.pack("<HBB", len(name), e["type"], 1)
        dirbytes += struct.pack("<III", NOSTREAM, e.get("right", NOSTREAM), child)
        dirbytes += b"\x00" * 16 + b"\x00" * 4 + b"\x00" * 16
        size = len(e["data"]) if e["type"] == 2 else 0
        dirbytes += struct.pack("<IQ", e["start"] if e["type"] == 2 else ENDOFCHAIN, size)
        # Siblings as a right-leaning chain (valid as a degenerate tree).
        for a, b in zip(kids, kids[1:], strict=False):
            entries[a]["right"] = b
    # Second pass now that right siblings are known.
    dirbytes = bytearray()
    for e in entries:
        name = e["name"].encode("utf-16-le") + b"\x00\x00"
        child = e["kids"][0] if e["kids"] else NOSTREAM
        dirbytes += name.ljust(64, b"\x00") + struct.pack("<HBB", len(name), e["type"], 1)
        dirbytes += struct.pack("<III", NOSTREAM, e.get("right", NOSTREAM), child)
        dirbytes += b"\x00" * 36
        size = len(e["data"]) if e["type"] == 2 else 0
        dirbytes += struct.pack("<IQ", e["start"] if e["type"] == 2 else ENDOFCHAIN, size)
    dirbytes += b"\x00" * (-len(dirbytes) % 512)
    ndir = len(dirbytes) // 512
    for off in range(0, len(dirbytes), 512):
        sectors.append(bytes(dirbytes[off : off + 512]))
    fat_first = len(sectors)
    nfat = 1
    while (len(sectors) + nfat) > nfat * 128:
        nfat += 1
    fat = [FREESECT] * (nfat * 128)
    for e in entries:
        if e["type"] == 2:
            for k in range(e["nsec"]):
                fat[e["start"] + k] = e["start"] + k + 1 if k < e["nsec"] - 1 else ENDOFCHAIN
    for k in range(ndir):
        fat[dir_first + k] = dir_first + k + 1 if k < ndir - 1 else ENDOFCHAIN
    for k in range(nfat):
        fat[fat_first + k] = FATSECT
    fatbytes = struct.pack(f"<{len(fat)}I", *fat)
    for off in range(0, len(fatbytes), 512):
        sectors.append(fatbytes[off : off + 512])
    difat = [fat_first + k for k in range(nfat)] + [FREESECT] * (109 - nfat)
    header = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 16
    header += struct.pack("<HHHHH", 0x3E, 3, 0xFFFE, 9, 6) + b"\x00" * 6
    header += struct.pack("<IIIIIIIII", 0, nfat, dir_first, 0, 4096, ENDOFCHAIN, 0, ENDOFCHAIN, 0)
    header += struct.pack("<109I", *difat)
    assert len(header) == 512
    return header + b"".join(sectors)


def ole10native(filename: str, data: bytes) -> bytes:
    """An OLE1 "Package" native stream: what Office stores for an embedded file."""
    fn = filename.encode() + b"\x00"
    tmp = b"C:\\Temp\\" + fn
    body = b"\x02\x00" + fn + b"C:\\src\\" + fn + b"\x00\x00\x03\x00"
    body += struct.pack("<I", len(tmp)) + tmp + struct.pack("<I", len(data)) + data
    return struct.pack("<I", len(body)) + body


def make_rtf_package(filename: str, data: bytes) -> bytes:
    """RTF with an embedded OLE1 Package object in \\objdata (how droppers ship files)."""
    native = ole10native(filename, data)[4:]
    cls = b"Package\x00"
    ole1 = struct.pack("<II", 0x00000501, 2) + struct.pack("<I", len(cls)) + cls
    ole1 += struct.pack("<II", 0, 0) + struct.pack("<I", len(native)) + native
    hexdata = ole1.hex()
    lines = "\n".join(hexdata[i : i + 64] for i in range(0, len(hexdata), 64))
    return (
        "{\\rtf1\\ansi\\deff0{\\fonttbl{\\f0 Times;}}\\pard Invoice attached.\\par\n"
        "{\\object\\objemb{\\*\\objclass Package}\\objw100\\objh100{\\*\\objdata\n"
        + lines
        + "\n}}}\n"
    ).encode()


_HQX = b"!\"#$%&'()*+,-012345689@ABCDEFGHIJKLMNPQRSTUVXYZ[`abcdefhijklmpqr"


def make_binhex(name: str, data: bytes, rsrc: bytes = b"") -> bytes:
    """BinHex 4.0 (RFC 1741), written from the format description (Python dropped its binhex)."""
    import binascii

    nb = name.encode("mac_roman")
    hdr = bytes([len(nb)]) + nb + b"\x00" + b"TEXT" + b"ttxt" + b"\x00\x00"
    hdr += struct.pack(">II", len(data), len(rsrc))

    def crc(b: bytes) -> bytes:
        return binascii.crc_hqx(b, 0).to_bytes(2, "big")

    raw = hdr + crc(hdr) + data + crc(data) + rsrc + crc(rsrc)
    # Run-length: escape literal 0x90 as 0x90 0x00; compress runs of 4+ identical bytes.
    rle = bytearray()
    i = 0
    while i < len(raw):
        b = raw[i]
        run = 1
        while i + run < len(raw) and raw[i + run] == b and run < 255:
            run += 1
        rle += b"\x90\x00" if b == 0x90 else bytes([b])
        if run >= 4 and b != 0x90:
            rle += bytes([0x90, run])
            i += run
        else:
            i += 1
    import base64

    b64 = base64.b64encode(bytes(rle)).rstrip(b"=")
    out = b64.translate(
        bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", _HQX)
    )
    text = b":" + bytes(out) + b":"
    lines = b"\n".join(text[i : i + 64] for i in range(0, len(text), 64))
    return b"(This file must be converted with BinHex 4.0)\n\n" + lines + b"\n"


def make_tnef(attachments: dict[str, bytes]) -> bytes:
    """winmail.dat with legacy attachment attributes ([MS-OXTNEF] 2.1.3)."""

    def attr(level: int, aid: int, value: bytes) -> bytes:
        return (
            struct.pack("<BII", level, aid, len(value))
            + value
            + struct.pack("<H", sum(value) & 0xFFFF)
        )

    out = struct.pack("<IH", 0x223E9F78, 0x0101)
    out += attr(1, 0x00089006, struct.pack("<I", 0x00010000))  # attTnefVersion
    out += attr(1, 0x00078008, b"IPM.Microsoft Mail.Note\x00")  # attMessageClass
    for name, data in attachments.items():
        out += attr(2, 0x00069002, b"\x01\x00" + b"\xff" * 4 + b"\x00" * 8)  # attAttachRendData
        out += attr(2, 0x00018010, name.encode() + b"\x00")  # attAttachTitle
        out += attr(2, 0x0006800F, data)  # attAttachData
    return out


def make_pe_with(payload: bytes) -> bytes:
    """A minimal PE file with `payload` appended after its sections, like a self-extractor stub."""
    pe_off = 0x80
    dos = b"MZ" + b"\x90" * 58 + struct.pack("<I", pe_off)
    dos = dos.ljust(pe_off, b"\x00")
    coff = b"PE\x00\x00" + struct.pack("<HHIIIHH", 0x14C, 1, 0, 0, 0, 0xE0, 0x102)
    opt = struct.pack("<HBB", 0x10B, 14, 0).ljust(0xE0, b"\x00")
    sect = b".text\x00\x00\x00" + struct.pack(
        "<IIIIIIHHI", 0x1000, 0x1000, 0x200, 0x200, 0, 0, 0, 0, 0x60000020
    )
    head = (dos + coff + opt + sect).ljust(0x200, b"\x00")
    code = (b"\x55\x89\xe5" + b"\x90" * 100 + b"PK\x03\x04 in code, not an archive").ljust(
        0x200, b"\xcc"
    )
    return head + code + payload


# --- fuzz seeds --------------------------------------------------------------------------------


def _seed_tmp() -> Path:
    import tempfile

    return Path(tempfile.mkdtemp(prefix="vmshield-fuzz-seed-"))


def _seed_mail() -> bytes:
    import email.message

    m = email.message.EmailMessage()
    m["From"] = "a@example.org"
    m["Subject"] = "x"
    m.set_content("x")
    m.add_attachment(EICAR, maintype="application", subtype="octet-stream", filename="e.com")
    return m.as_bytes()


def _seed_pdf() -> bytes:
    from pypdf import PdfWriter

    w = PdfWriter()
    w.add_blank_page(10, 10)
    w.add_attachment("e.com", EICAR)
    b = io.BytesIO()
    w.write(b)
    return b.getvalue()


def _seed_szdd() -> list[bytes]:
    if not have("mscompress"):
        return []
    d = _seed_tmp()
    (d / "a.exe").write_bytes(EICAR * 3)
    _run(["mscompress", "a.exe"], cwd=d)
    return [(d / "a.exe_").read_bytes()]


def fuzz_seeds(target: str) -> list[bytes]:
    """Starting inputs for tests/fuzz/fuzz_container_<target>.py, without the magic the target
    prepends itself."""
    files = {"dir/a.txt": b"hello " * 50, "e.com": EICAR}
    t = _seed_tmp()
    try:
        if target == "zip":
            return [make_zip(files, m)[4:] for m in (0, 8, 12, 14)]
        if target == "arj":
            return [make_arj(files, t)[2:]] if have("arj") else []
        if target == "tnef":
            return [make_tnef(files)[6:]]
        if target == "szdd":
            return [s[8:] for s in _seed_szdd()]
        if target == "binhex":
            return [make_binhex("a.com", EICAR, b"r").split(b":", 1)[1]]
        if target == "mime":
            return [_seed_mail().split(b"MIME-Version: 1.0\n", 1)[-1]]
        if target == "sfx":
            return [make_pe_with(make_zip(files))[2:], make_pe_with(make_7z(files, t))[2:]]
        if target == "gzip":
            return [b"\x00" + gz(EICAR)[2:], b"\x01" + bz(EICAR)[10:], b"\x02" + xz(EICAR)[6:]]
        if target == "libarchive":
            return [
                b"\x00" + make_7z(files, t)[8:],
                b"\x01" + make_rar4(files)[7:],
                b"\x04" + make_cpio(files, t)[6:],
                b"\x07" + make_tar(files)[:257] + make_tar(files)[265:],
            ]
        if target == "ole2":
            return [make_ole2({"a/b": EICAR, "\x01Ole10Native": ole10native("x.exe", EICAR)})[8:]]
        if target == "pdf":
            return [_seed_pdf()[9:]]
        if target == "lzx":  # the target prepends nothing: whole LZX streams
            text = b"".join(b"<p>line %d</p>\n" % i for i in range(3000)) + EICAR
            return [lzx_compress(text, stored_every=2)[0], lzx_compress(EICAR * 3)[0]]
        if target == "chm":
            return [make_chm({"a.html": b"<p>x</p>"}, lzx_files=files)[4:]]
        if target == "rtf":
            return [make_rtf_package("x.exe", EICAR)[7:]]
        if target == "any":
            return [
                make_zip(files),
                make_tar(files, "w:gz"),
                make_tnef(files),
                _seed_mail(),
                make_rtf_package("x.exe", EICAR),
            ]
        if target == "disinfect":
            return [
                b"\x01\x01" + make_zip(files)[4:],
                b"\x00\x01" + make_tar(files),
                b"\x01\x02" + make_zip(files)[4:],
            ]
        return []
    finally:
        shutil.rmtree(t, ignore_errors=True)


# --- UPX: an NRV encoder and a UPX-layout PE (no UPX packer is installable here) ----------------


class _BitWriter:
    """UCL's LE32 bit stream: 32-bit words, MSB first, each word's place reserved in the byte
    stream when its first bit is written (literals and offset bytes interleave with words)."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.word_pos = -1
        self.word = 0
        self.n = 32

    def bit(self, b: int) -> None:
        if self.n == 32:
            self.flush()
            self.word_pos = len(self.out)
            self.out += b"\x00\x00\x00\x00"
            self.word, self.n = 0, 0
        self.word = (self.word << 1) | (b & 1)
        self.n += 1

    def byte(self, b: int) -> None:
        self.out.append(b)

    def flush(self) -> None:
        if self.word_pos >= 0:
            self.out[self.word_pos : self.word_pos + 4] = (self.word << (32 - self.n)).to_bytes(
                4, "little"
            )

    def gamma11(self, v: int) -> None:
        assert v >= 2
        bits = bin(v)[3:]
        for i, c in enumerate(bits):
            self.bit(int(c))
            self.bit(1 if i == len(bits) - 1 else 0)

    def gamma12(self, v: int) -> None:
        assert v >= 2
        steps: list[tuple[int, int | None]] = []  # (b1, b2 or None for the final step)
        steps.append((v & 1, None))
        m = v >> 1
        while m != 1:
            t = m + 2
            steps.append(((t >> 1) & 1, t & 1))
            m = t >> 2
        for b1, b2 in reversed(steps):
            self.bit(b1)
            if b2 is None:
                self.bit(1)
            else:
                self.bit(0)
                self.bit(b2)


def nrv_compress(data: bytes, variant: str) -> bytes:
    """Greedy LZ77 in UCL's NRV2B/2D/2E format (test side only: the decoder is the product)."""
    w = _BitWriter()
    big = 0xD00 if variant == "b" else 0x500
    table: dict[bytes, list[int]] = {}
    last = 1
    i = 0
    while i < len(data):
        best_len, best_off = 0, 0
        key = data[i : i + 3]
        for j in reversed(table.get(key, [])[-32:]):
            off = i - j
            n = 0
            while i + n < len(data) and data[j + n] == data[i + n] and n < 300:
                n += 1
            if n > best_len:
                best_len, best_off = n, off
        min_len = 3 + (best_off > big)
        if len(key) == 3:
            table.setdefault(key, []).append(i)
        if best_len < min_len:
            w.bit(1)
            w.byte(data[i])
            i += 1
            continue
        w.bit(0)
        code = best_len - 1 - (best_off > big)
        if variant == "b":
            if best_off == last:
                w.gamma11(2)
            else:
                w.gamma11(((best_off - 1) >> 8) + 3)
                w.byte((best_off - 1) & 0xFF)
            if code <= 3:
                w.bit(code >> 1)
                w.bit(code & 1)
            else:
                w.bit(0)
                w.bit(0)
                w.gamma11(code - 2)
        else:
            first = (
                1 if (variant == "e" and code <= 2) or (variant == "d" and code in (2, 3)) else 0
            )
            if best_off == last:
                w.gamma12(2)
                w.bit(first)
            else:
                x = ((best_off - 1) << 1) | (0 if first else 1)
                w.gamma12((x >> 8) + 3)
                w.byte(x & 0xFF)
            if variant == "e":
                if first:
                    w.bit(code - 1)
                elif code <= 4:
                    w.bit(1)
                    w.bit(code - 3)
                else:
                    w.bit(0)
                    w.gamma11(code - 3)
            else:  # d: m_len = first*2 + bit; zero means a gamma follows
                if code <= 3:
                    w.bit(code & 1)
                else:
                    w.bit(0)
                    w.gamma11(code - 2)
        last = best_off
        for k in range(i + 1, min(i + best_len, len(data) - 2)):
            table.setdefault(data[k : k + 3], []).append(k)
        i += best_len
    w.bit(0)  # end marker: an offset of 0xFFFFFFFF
    if variant == "b":
        w.gamma11(0x1000002)
    else:
        w.gamma12(0x1000002)
    w.byte(0xFF)
    w.flush()
    return bytes(w.out)


def make_upx_pe(image: bytes, method: int = 8) -> bytes:
    """A PE laid out as UPX lays out Win32 files: sections UPX0 (empty, virtual) and UPX1 (the
    compressed image), the 32-byte pack header after the section table (UPX's PackHeader)."""
    if method == 14:  # LZMA: 2 header bytes, raw LZMA1 lc=3 lp=0 pb=2
        filt = {"id": lzma.FILTER_LZMA1, "dict_size": 1 << 20, "lc": 3, "lp": 0, "pb": 2}
        comp = b"\x18\x02" + lzma.compress(image, lzma.FORMAT_RAW, filters=[filt])
    else:
        comp = nrv_compress(image, {2: "b", 5: "d", 8: "e"}[method])
    pe_off = 0x80
    dos = (b"MZ" + b"\x00" * 58 + struct.pack("<I", pe_off)).ljust(pe_off, b"\x00")
    coff = b"PE\x00\x00" + struct.pack("<HHIIIHH", 0x14C, 2, 0, 0, 0, 0xE0, 0x102)
    opt = struct.pack("<HBB", 0x10B, 14, 0).ljust(0xE0, b"\x00")
    raw1 = 0x400
    size1 = (len(comp) + 0x1FF) & ~0x1FF
    s0 = b"UPX0\x00\x00\x00\x00" + struct.pack(
        "<IIIIIIHHI", 0x10000, 0x1000, 0, 0, 0, 0, 0, 0, 0xE0000080
    )
    s1 = b"UPX1\x00\x00\x00\x00" + struct.pack(
        "<IIIIIIHHI", size1, 0x11000, size1, raw1, 0, 0, 0, 0, 0xE0000040
    )
    head = dos + coff + opt + s0 + s1
    ph = (
        b"UPX!"
        + bytes([13, 9, method, 9])
        + struct.pack(
            "<IIIIIBBBB",
            zlib.adler32(image),
            zlib.adler32(comp),
            len(image),
            len(comp),
            len(image) + 0x400,
            0,
            0,
            0,
            0,
        )
    )
    head = (head + b"\x00" * 16 + b"4.02\x00" + ph).ljust(raw1, b"\x00")
    return head + comp.ljust(size1, b"\x00")


def _encint(v: int) -> bytes:
    out = [v & 0x7F]
    v >>= 7
    while v:
        out.append(0x80 | (v & 0x7F))
        v >>= 7
    return bytes(reversed(out))


_MSC = "::DataSpace/Storage/MSCompressed/"


def make_chm(
    files: dict[str, bytes],
    lzx: dict[str, int] | None = None,
    lzx_files: dict[str, bytes] | None = None,
    reset_frames: int = 2,
    **lzx_opts: int,
) -> bytes:
    """A CHM (ITSF v3) with `files` stored uncompressed in section 0, `lzx_files` compressed in
    section 1 by `lzx_compress` (with the ControlData, ResetTable, SpanInfo and NameList a CHM
    compiler writes), and `lzx` entries (name -> length) listed in section 1 without any
    compressed data. Written from the format's published description (no CHM compiler runs on
    Linux)."""
    chunk_size = 0x1000
    content = bytearray()
    entries = [(b"/", 0, 0, 0)]
    sec0 = dict(files)
    if lzx_files:
        plain = bytearray()
        for name, data in sorted(lzx_files.items()):
            entries.append((("/" + name).encode(), 1, len(plain), len(data)))
            plain += data
        comp, offsets = lzx_compress(bytes(plain), reset_frames=reset_frames, **lzx_opts)
        sec0[_MSC + "Content"] = comp
        sec0[_MSC + "ControlData"] = struct.pack("<I4sIIIII", 6, b"LZXC", 2, reset_frames, 2, 2, 0)
        sec0[_MSC + "SpanInfo"] = struct.pack("<Q", len(plain))
        sec0[_MSC + "Transform/{7FC28940-9D31-11D0-9B27-00A0C91E9C7C}/InstanceData/ResetTable"] = (
            struct.pack("<IIIIQQQ", 2, len(offsets), 8, 0x28, len(plain), len(comp), 0x8000)
            + b"".join(struct.pack("<Q", o) for o in offsets)
        )
        names = [n.encode("utf-16-le") for n in ("Uncompressed", "MSCompressed")]
        body = b"".join(struct.pack("<H", len(n) // 2) + n + b"\x00\x00" for n in names)
        sec0["::DataSpace/NameList"] = struct.pack("<HH", (4 + len(body)) // 2, 2) + body
    for name, data in sorted(sec0.items()):
        path = name if name.startswith("::") else "/" + name
        entries.append((path.encode(), 0, len(content), len(data)))
        content += data
    for name, length in sorted((lzx or {}).items()):
        entries.append((("/" + name).encode(), 1, 0, length))
    entries.sort(key=lambda e: e[0].lower())
    body = b"".join(
        _encint(len(n)) + n + _encint(s) + _encint(o) + _encint(n_) for n, s, o, n_ in entries
    )
    assert len(body) < chunk_size - 20
    free = chunk_size - 20 - len(body)
    pmgl = b"PMGL" + struct.pack("<IIii", free, 0, -1, -1) + body + b"\x00" * free
    itsp = b"ITSP" + struct.pack(
        "<IIIIIIiIIiII", 1, 0x54, 0x0A, chunk_size, 2, 1, -1, 0, 0, -1, 1, 0x409
    )
    itsp += b"\x00" * 16 + struct.pack("<Iiii", 0x54, -1, -1, -1)
    assert len(itsp) == 0x54
    hs0 = struct.pack("<IIQII", 0x1FE, 0, 0, 0, 0)  # header section 0: file size filled below
    off0 = 0x60
    off1 = off0 + len(hs0)
    len1 = len(itsp) + len(pmgl)
    content_off = off1 + len1
    hdr = b"ITSF" + struct.pack("<IIIII", 3, 0x60, 1, 0, 0x409) + b"\x00" * 32
    hdr += struct.pack("<QQQQQ", off0, len(hs0), off1, len1, content_off)
    total = content_off + len(content)
    hs0 = struct.pack("<IIQII", 0x1FE, 0, total, 0, 0)
    return hdr + hs0 + itsp + pmgl + bytes(content)


def _vint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def make_rar5(files: dict[str, bytes]) -> bytes:
    """A stored RAR 5 archive written from RARLAB's published format description."""

    def block(htype: int, hflags: int, body: bytes, data: bytes = b"") -> bytes:
        fields = _vint(htype) + _vint(hflags) + (_vint(len(data)) if hflags & 0x02 else b"") + body
        head = _vint(len(fields)) + fields
        return struct.pack("<I", zlib.crc32(head)) + head + data

    out = bytearray(b"Rar!\x1a\x07\x01\x00")
    out += block(1, 0, _vint(0))  # main archive header, no flags
    for name, data in files.items():
        nb = name.encode()
        body = (
            _vint(0x04) + _vint(len(data)) + _vint(0o100644) + struct.pack("<I", zlib.crc32(data))
        )
        body += _vint(0) + _vint(1) + _vint(len(nb)) + nb  # stored, Unix, name
        out += block(2, 0x02, body, data)
    out += block(5, 0, _vint(0))  # end of archive
    return bytes(out)


# --- LZX (CHM) test-side compressor --------------------------------------------------------------


class _LzxBitWriter:
    """LZX bit order: 16-bit little-endian words, each filled from its most significant bit."""

    def __init__(self) -> None:
        self.bits: list[str] = []
        self.n = 0

    def write(self, nbits: int, value: int) -> None:
        if nbits:
            self.bits.append(format(value, f"0{nbits}b"))
            self.n += nbits

    def align(self) -> None:
        if self.n % 16:
            self.write(16 - self.n % 16, 0)

    def raw(self, data: bytes) -> None:
        """Bytes stored as bytes (the writer must be word-aligned); odd length gets a pad byte."""
        assert self.n % 16 == 0
        if len(data) & 1:
            data += b"\x00"
        for i in range(0, len(data), 2):
            self.write(8, data[i + 1])
            self.write(8, data[i])

    def getvalue(self) -> bytes:
        s = "".join(self.bits)
        s += "0" * (-len(s) % 16)
        return b"".join(int(s[i : i + 16], 2).to_bytes(2, "little") for i in range(0, len(s), 16))


def _canonical(lens: list[int]) -> dict[int, tuple[int, int]]:
    codes: dict[int, tuple[int, int]] = {}
    code = 0
    for length in range(1, max(lens) + 1):
        for sym, ln in enumerate(lens):
            if ln == length:
                codes[sym] = (length, code)
                code += 1
        code <<= 1
    return codes


_PRE_LENS = [4] * 12 + [5] * 8  # a complete 20-symbol pretree
_PRE = _canonical(_PRE_LENS)


def _write_lens(w: _LzxBitWriter, prev: list[int], new: list[int]) -> None:
    for ln in _PRE_LENS:
        w.write(4, ln)
    for old, ln in zip(prev, new, strict=True):
        w.write(*_PRE[(old - ln) % 17])


def lzx_compress(
    data: bytes,
    window_bits: int = 16,
    reset_frames: int = 2,
    stored_every: int = 3,
    aligned_every: int = 0,
    e8_size: int = 0,
    block_size: int = 0x8000,
) -> tuple[bytes, list[int]]:
    """A CHM-style LZX stream of `data` and the compressed offset of each 32 KiB frame (the
    reset table). No real LZX compressor runs here, so this one is simple but genuine: verbatim
    blocks with a fixed complete main tree (all codes 9 bits), literals and greedy matches of 2-8
    bytes (so the length tree stays empty, as the format allows), and every `stored_every`-th
    frame (when even-sized) an uncompressed block. The decoder state resets every
    `reset_frames` frames and no match reaches back before a reset point. `aligned_every`: every
    so many frames an aligned-offset block instead (a complete 3-bit aligned tree); `e8_size`:
    the Intel E8 translation with that file size (CALL targets made absolute, per frame);
    `block_size`: compressed blocks of that many bytes (several per frame, trees resent)."""
    from vmshield.engines.file.containers.lzx import EXTRA_BITS, POSITION_BASE, POSITION_SLOTS

    frame = 0x8000
    if e8_size:
        data = _e8_forward(data, e8_size)
    main_syms = 256 + 8 * POSITION_SLOTS[window_bits]
    assert main_syms == 512, "the fixed 9-bit main tree needs exactly 512 symbols"
    main_lens = [9] * main_syms
    main = _canonical(main_lens)
    w = _LzxBitWriter()
    offsets: list[int] = []
    prev_main = [0] * main_syms
    group_start = 0
    for k, fs in enumerate(range(0, len(data), frame)):
        offsets.append(w.n // 8)
        chunk = data[fs : fs + frame]
        if k % reset_frames == 0:
            prev_main = [0] * main_syms
            group_start = fs
            if e8_size:
                w.write(1, 1)
                w.write(16, e8_size >> 16)
                w.write(16, e8_size & 0xFFFF)
            else:
                w.write(1, 0)  # no Intel E8 translation
        if k % stored_every == stored_every - 1 and len(chunk) % 2 == 0:
            w.write(3, 3)
            w.write(16, len(chunk) >> 8)
            w.write(8, len(chunk) & 0xFF)
            w.write(16 if w.n % 16 == 0 else 16 - w.n % 16, 0)
            w.raw(struct.pack("<III", 1, 1, 1))
            w.raw(chunk)
            continue
        aligned = bool(aligned_every) and k % aligned_every == 0
        last: dict[bytes, int] = {}
        for bs in range(fs, fs + len(chunk), block_size):
            end = min(bs + block_size, fs + len(chunk))
            w.write(3, 2 if aligned else 1)
            w.write(16, (end - bs) >> 8)
            w.write(8, (end - bs) & 0xFF)
            if aligned:
                for _ in range(8):
                    w.write(3, 3)  # eight codes of 3 bits: complete
            # Lengths are sent as deltas from the previous block's: after the first block of a
            # reset interval every delta is 0.
            _write_lens(w, prev_main[:256], main_lens[:256])
            _write_lens(w, prev_main[256:], main_lens[256:])
            _write_lens(w, [0] * 249, [0] * 249)
            prev_main = list(main_lens)
            i = bs
            while i < end:
                key = data[i : i + 3]
                j = last.get(key, -1)
                best = 0
                if len(key) == 3 and j >= group_start and i - j <= (1 << window_bits) - 3:
                    while best < 8 and i + best < end and data[j + best] == data[i + best]:
                        best += 1
                if best >= 3:
                    fo = i - j + 2
                    slot = max(s for s, b in enumerate(POSITION_BASE) if b <= fo)
                    w.write(*main[256 + slot * 8 + best - 2])
                    extra, value = EXTRA_BITS[slot], fo - POSITION_BASE[slot]
                    if aligned and extra >= 3:
                        w.write(extra - 3, value >> 3)
                        w.write(3, value & 7)  # the aligned symbol: its code is itself here
                    else:
                        w.write(extra, value)
                else:
                    best = 1
                    w.write(*main[data[i]])
                for t in range(i, i + best):
                    last[data[t : t + 3]] = t
                i += best
        w.align()
    return w.getvalue(), offsets


def _e8_forward(data: bytes, size: int) -> bytes:
    """The encoder side of LZX's E8 translation (the decoder's `_e8` undoes it), per frame."""
    out = bytearray(data)
    for fs in range(0, len(out), 0x8000):
        end = min(fs + 0x8000, len(out))
        if end - fs <= 10 or fs // 0x8000 >= 32768:
            continue
        i = fs
        while i < end - 10:
            if out[i] != 0xE8:
                i += 1
                continue
            rel = int.from_bytes(out[i + 1 : i + 5], "little", signed=True)
            if -i <= rel < size:
                absolute = rel + i if rel < size - i else rel - size
                out[i + 1 : i + 5] = (absolute & 0xFFFFFFFF).to_bytes(4, "little")
            i += 5
    return bytes(out)
