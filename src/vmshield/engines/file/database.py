"""One versioned, immutable signature database loaded from ClamAV files and YARA rules.

`Database.load(paths)` takes files or directories. Every line that cannot be parsed is kept in
`.rejected` as (file, line, reason) and loading goes on; `.version` is a hash of the content of
everything loaded (it keys verdict caches, so it changes whenever any signature changes).
The object pickles cheaply (compiled Hyperscan and YARA databases travel as bytes) so scan
worker processes can receive it.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from vmshield.engines.file.signatures import cvd, yara_rules
from vmshield.engines.file.signatures.clamav import (
    BodySig,
    HashSig,
    LogicalSig,
    SigError,
    SkipSig,
    parse_hash,
    parse_ldb,
    parse_ndb,
)

ENGINE_VERSION = "vmshield-file/1"  # part of .version: a matching change must invalidate caches
MAX_DB_FILE = 1 << 30
MAX_LINE = 256 * 1024

# Extension → kind. `*u` (PUA) variants load only on request in ClamAV; we skip them and say so.
EXTENSIONS = {
    ".hdb": "hdb",
    ".hsb": "hsb",
    ".mdb": "mdb",
    ".msb": "msb",
    ".fp": "fp",
    ".sfp": "sfp",
    ".ndb": "ndb",
    ".ldb": "ldb",
    ".cvd": "cvd",
    ".cld": "cld",
    ".yar": "yara",
    ".yara": "yara",
    ".ign2": "ign2",
    ".ign": "ign",
}
IGNORED_EXTENSIONS = {
    ".info", ".cfg", ".crb", ".cdb", ".cbc", ".imp", ".pdb", ".gdb", ".wdb",
    ".ftm", ".idb", ".hdu", ".hsu", ".ndu", ".ldu", ".mdu", ".msu", ".pwdb", ".sign",
}  # fmt: skip


class Rejected(NamedTuple):
    file: str
    line: int  # 0 when the whole file is at fault
    reason: str


class DatabaseError(ValueError):
    pass


class HashEntry(NamedTuple):
    size: int | None
    name: str


# The common hash line (`HASH:SIZE:NAME`, no functionality levels) takes this fast path: 100 000
# of them must load well within a second. Anything else goes through the full parser.
_FAST_HASH = re.compile(
    r"([0-9a-fA-F]{32}|[0-9a-fA-F]{40}|[0-9a-fA-F]{64}):([0-9]{1,15}|\*):"
    r"([\x21-\x39\x3b-\x7e][\x20-\x39\x3b-\x7e]{0,511})"
)
_HASH_LEN = {32: "md5", 40: "sha1", 64: "sha256"}


def _empty_stats() -> dict[str, int]:
    return dict.fromkeys(
        (
            "md5",
            "sha1",
            "sha256",
            "pe_section",
            "fp",
            "ndb",
            "ldb",
            "yara",
            "ign",
            "skipped_flevel",
            "files",
        ),
        0,
    )


class _Builder:
    def __init__(self) -> None:
        self.hashes: dict[str, dict[str, list[HashEntry]]] = {"md5": {}, "sha1": {}, "sha256": {}}
        self.fp: dict[str, dict[str, set[int | None]]] = {"md5": {}, "sha1": {}, "sha256": {}}
        self.sections: dict[str, dict[str, list[HashEntry]]] = {"md5": {}, "sha1": {}, "sha256": {}}
        self.body: list[BodySig] = []
        self.logical: list[LogicalSig] = []
        self.yara_sources: dict[str, str] = {}
        self.yara_compiled: list[Any] = []
        self.yara_anchors: list[bytes] = []
        self.yara_always = False  # a rule the prefilter cannot gate: run YARA on every buffer
        self.ignore: set[str] = set()
        self.stats = _empty_stats()
        self.rejected: list[Rejected] = []
        self.digests: list[tuple[str, str]] = []
        self.ignored_files: list[str] = []

    def reject(self, file: str, line: int, reason: str) -> None:
        self.rejected.append(Rejected(file, line, reason))

    def add_file(self, path: Path) -> None:
        ext = path.suffix.lower()
        kind = EXTENSIONS.get(ext)
        if kind is None:
            if ext in IGNORED_EXTENSIONS:
                self.ignored_files.append(str(path))
            else:
                self.reject(str(path), 0, f"unknown database type {ext or '(no extension)'!r}")
            return
        try:
            size = path.stat().st_size
            if size > MAX_DB_FILE:
                raise DatabaseError(f"larger than {MAX_DB_FILE} bytes")
            data = path.read_bytes()
        except (OSError, DatabaseError) as exc:
            self.reject(str(path), 0, f"cannot read: {getattr(exc, 'strerror', None) or exc}")
            return
        self.add_content(str(path), path.name, kind, data)

    def add_content(self, label: str, name: str, kind: str, data: bytes) -> None:
        self.digests.append((name, hashlib.sha256(data).hexdigest()))
        self.stats["files"] += 1
        if kind in ("cvd", "cld"):
            try:
                _, members = cvd.unpack(data, name)
            except cvd.CvdError as exc:
                self.reject(label, 0, f"{kind}: {exc}")
                return
            for mname, mdata in members:
                mkind = EXTENSIONS.get(os.path.splitext(mname)[1].lower())
                if mkind is None or mkind in ("cvd", "cld"):
                    continue  # .info, .cfg, … carry no signatures we use
                self.add_content(f"{label}//{mname}", mname, mkind, mdata)
            return
        if kind == "yara":
            self._add_yara(label, data)
            return
        text = data.decode("latin-1")  # lossless: names keep their bytes
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if len(line) > MAX_LINE:
                self.reject(label, lineno, f"line longer than {MAX_LINE} characters")
                continue
            try:
                self._add_line(kind, line)
            except SkipSig:
                self.stats["skipped_flevel"] += 1
            except SigError as exc:
                self.reject(label, lineno, str(exc))

    def _add_line(self, kind: str, line: str) -> None:
        if kind in ("hdb", "hsb"):
            m = _FAST_HASH.fullmatch(line)
            if m:
                digest, size_s, name = m.groups()
                hkind = _HASH_LEN[len(digest)]
                if (hkind == "md5") == (kind == "hdb") and name.strip() == name:
                    size = None if size_s == "*" else int(size_s)
                    table = self.hashes[hkind]
                    entry = HashEntry(size, name)
                    digest = digest.lower()
                    got = table.get(digest)
                    if got is None:
                        table[digest] = [entry]
                    else:
                        got.append(entry)
                    self.stats[hkind] += 1
                    return
            sig: HashSig = parse_hash(line, allow=("md5",) if kind == "hdb" else ("sha1", "sha256"))
            self.hashes[sig.kind].setdefault(sig.digest, []).append(HashEntry(sig.size, sig.name))
            self.stats[sig.kind] += 1
        elif kind in ("mdb", "msb"):
            # `PESectionSize:Hash:Name[:FLevel[:Max]]`: the hash of one PE section's raw data.
            parts = line.split(":")
            if len(parts) < 3:
                raise SigError(f"expected SectionSize:Hash:Name, got {len(parts)} fields")
            sig = parse_hash(
                ":".join([parts[1], parts[0], *parts[2:]]),
                allow=("md5",) if kind == "mdb" else ("sha1", "sha256"),
            )
            self.sections[sig.kind].setdefault(sig.digest, []).append(HashEntry(sig.size, sig.name))
            self.stats["pe_section"] += 1
        elif kind in ("fp", "sfp"):
            sig = parse_hash(line, allow=("md5",) if kind == "fp" else ("sha1", "sha256"))
            self.fp[sig.kind].setdefault(sig.digest, set()).add(sig.size)
            self.stats["fp"] += 1
        elif kind == "ndb":
            self.body.append(parse_ndb(line))
            self.stats["ndb"] += 1
        elif kind == "ldb":
            self.logical.append(parse_ldb(line))
            self.stats["ldb"] += 1
        elif kind in ("ign2", "ign"):
            # .ign2: `Name` or `Name:MD5-of-line`; old .ign: `db:line:Name`. Either way, a name.
            parts = line.split(":")
            name = parts[2] if kind == "ign" and len(parts) >= 3 else parts[0]
            if not name:
                raise SigError("empty signature name to ignore")
            self.ignore.add(name)
            self.stats["ign"] += 1

    def _add_yara(self, label: str, data: bytes) -> None:
        try:
            source = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.reject(label, 0, f"YARA file is not UTF-8: {exc}")
            return
        try:
            n, compiled = yara_rules.check(source, label)
        except yara_rules.YaraError as exc:
            # YARA cannot skip one rule: the whole file is refused, the line says where.
            self.reject(label, exc.line, f"{exc.reason} (file not loaded)")
            return
        self.yara_sources[f"ns{len(self.yara_sources)}"] = source
        self.yara_compiled.append(compiled)
        try:
            gates = yara_rules.prefilter_anchors(source)
        except Exception:  # noqa: BLE001 - a prefilter failure only costs speed
            gates = None
        if gates is None:
            self.yara_always = True
        else:
            self.yara_anchors.extend(a for rule in gates for a in rule)
        self.stats["yara"] += n


def _iter_paths(paths: Iterable[str | os.PathLike[str]], b: _Builder) -> Iterable[Path]:
    for p in paths:
        path = Path(p)
        if path.is_dir():
            for entry in sorted(path.iterdir()):
                if entry.is_file():
                    yield entry
        elif path.exists():
            yield path
        else:
            b.reject(str(path), 0, "no such file or directory")


class Database:
    """Immutable after load. Use `Database.load`, not the constructor."""

    def __init__(self, b: _Builder) -> None:
        ign = b.ignore
        self.hashes = (
            {
                k: {d: [e for e in v if e.name not in ign] for d, v in table.items()}
                for k, table in b.hashes.items()
            }
            if ign
            else b.hashes
        )
        self.fp = b.fp
        self.sections = {
            k: {d: [e for e in v if e.name not in ign] for d, v in table.items()}
            for k, table in b.sections.items()
        }
        self.body: tuple[BodySig, ...] = tuple(s for s in b.body if s.name not in ign)
        self.logical: tuple[LogicalSig, ...] = tuple(s for s in b.logical if s.name not in ign)
        self.yara_saved: bytes | None = None
        if len(b.yara_compiled) == 1:  # already compiled while checking it: do not do it twice
            self.yara_saved = yara_rules.save(b.yara_compiled[0])
        elif b.yara_sources:
            self.yara_saved = yara_rules.compile_all(b.yara_sources)
        self.yara_anchors: tuple[bytes, ...] = tuple(dict.fromkeys(b.yara_anchors))
        self.yara_always: bool = b.yara_always
        self.stats: dict[str, int] = dict(b.stats)
        self.rejected: tuple[Rejected, ...] = tuple(b.rejected)
        self.ignored_files: tuple[str, ...] = tuple(b.ignored_files)
        h = hashlib.sha256(ENGINE_VERSION.encode())
        for name, digest in sorted(b.digests):
            h.update(f"{name}\0{digest}\n".encode())
        self.version: str = h.hexdigest()
        self._matcher: Any = None

    @classmethod
    def load(cls, paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> Database:
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        b = _Builder()
        for path in _iter_paths(paths, b):
            b.add_file(path)
        return cls(b)

    @classmethod
    def from_texts(cls, files: dict[str, str | bytes]) -> Database:
        """Build from in-memory files named by their extension (tests, tooling)."""
        b = _Builder()
        for name, content in files.items():
            kind = EXTENSIONS.get(os.path.splitext(name)[1].lower())
            data = content.encode() if isinstance(content, str) else content
            if kind is None:
                b.reject(name, 0, "unknown database type")
                continue
            b.add_content(name, name, kind, data)
        return cls(b)

    @property
    def signature_count(self) -> int:
        s = self.stats
        return (
            s["md5"] + s["sha1"] + s["sha256"] + s["pe_section"] + s["ndb"] + s["ldb"] + s["yara"]
        )

    @property
    def uses_container(self) -> bool:
        return any(s.container is not None or s.intermediates for s in self.logical)

    @property
    def needs_sha(self) -> bool:
        return bool(
            self.hashes["sha1"] or self.hashes["sha256"] or self.fp["sha1"] or self.fp["sha256"]
        )

    @property
    def matcher(self) -> Any:
        if self._matcher is None:
            from vmshield.engines.file.matcher import Matcher

            self._matcher = Matcher(self)
        return self._matcher

    def allowed(self, kind: str, digest: str, size: int) -> bool:
        sizes = self.fp[kind].get(digest)
        return bool(sizes) and (None in sizes or size in sizes)  # type: ignore[operator]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_matcher"] = self.matcher  # the matcher pickles its compiled form as bytes
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
