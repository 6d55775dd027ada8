"""Datasets: named sets of strings / md5 / sha256 values that rules test and fill.

Files use Suricata's formats: `string` sets hold one base64-encoded value per line (anything after
a comma is ignored, as for datarep), `md5`/`sha256` one hex digest per line. The engine reads
files only when rules are loaded; sets filled at runtime (`dataset:set`) are kept in memory and
exposed via `Datasets.snapshot()` for a service to persist.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from pathlib import Path

MAX_ENTRIES = 4_000_000  # memcap for one dataset, in entries
_HEXLEN = {"md5": 16, "sha256": 32}


@dataclass(slots=True)
class Dataset:
    name: str
    type: str
    values: set[bytes] = field(default_factory=set)
    source: str | None = None

    def norm(self, data: bytes) -> bytes | None:
        # As Suricata: an md5/sha256 set compares raw digests (e.g. after to_md5 / to_sha256);
        # data of any other length is not a member.
        if self.type in _HEXLEN:
            return data if len(data) == _HEXLEN[self.type] else None
        return data


class Datasets:
    def __init__(self, base_dirs: list[Path] | None = None) -> None:
        self.sets: dict[str, Dataset] = {}
        self.base_dirs = base_dirs or []
        self.loaded_files: dict[str, int] = {}

    def declare(self, name: str, dtype: str | None, path: str | None, is_state: bool,
                rule_dir: Path | None = None) -> None:  # fmt: skip
        """Called by the parser for every `dataset:` keyword; raises ValueError on problems."""
        cur = self.sets.get(name)
        if cur is not None:
            if dtype is not None and dtype != cur.type:
                raise ValueError(f"dataset '{name}' declared as {cur.type} and as {dtype}")
            if path is None or path == cur.source:
                return
        if dtype is None:
            if cur is None:
                raise ValueError(f"dataset '{name}' needs 'type string|md5|sha256'")
            dtype = cur.type
        if dtype not in ("string", "md5", "sha256"):
            raise ValueError(f"dataset type '{dtype}' is not supported (string, md5, sha256)")
        ds = cur or Dataset(name, dtype)
        self.sets[name] = ds
        if path is None:
            return
        f = self._resolve(path, rule_dir)
        if f is None:
            if is_state:
                ds.source = path  # state file created on save; empty until then
                return
            raise ValueError(f"dataset '{name}': cannot read load file '{path}'")
        ds.source = path
        self._load(ds, f)

    def _resolve(self, path: str, rule_dir: Path | None) -> Path | None:
        p = Path(path)
        cands = [p] if p.is_absolute() else [*(d / p for d in ([rule_dir] if rule_dir else [])),
                                             *(d / p for d in self.base_dirs), p]  # fmt: skip
        for c in cands:
            if c.is_file():
                return c
        return None

    def _load(self, ds: Dataset, f: Path) -> None:
        with open(f, "rb") as fh:
            for n, line in enumerate(fh, 1):
                line = line.strip()
                if not line or line.startswith(b"#"):
                    continue
                tok = line.split(b",", 1)[0].strip()
                try:
                    if ds.type == "string":
                        v = base64.b64decode(tok, validate=True)
                    else:
                        v = binascii.unhexlify(tok)
                        if len(v) != _HEXLEN[ds.type]:
                            raise ValueError
                except (binascii.Error, ValueError):
                    raise ValueError(f"dataset '{ds.name}': {f}:{n}: bad {ds.type} value") from None
                if len(ds.values) >= MAX_ENTRIES:
                    raise ValueError(f"dataset '{ds.name}': more than {MAX_ENTRIES} entries")
                ds.values.add(v)
        self.loaded_files[str(f)] = len(ds.values)

    def apply(self, op: str, name: str, data: bytes) -> bool:
        ds = self.sets.get(name)
        if ds is None:
            return False
        v = ds.norm(data)
        if v is None:
            return op == "isnotset"
        if op == "isset":
            return v in ds.values
        if op == "isnotset":
            return v not in ds.values
        if op == "set":
            if v in ds.values:
                return False  # Suricata: 'set' matches when the value was newly added
            if len(ds.values) < MAX_ENTRIES:
                ds.values.add(v)
            return True
        if op == "unset":
            if v in ds.values:
                ds.values.discard(v)
                return True
            return False
        return False

    def snapshot(self, name: str) -> list[str]:
        """Lines in Suricata's file format, for saving a state file."""
        ds = self.sets[name]
        if ds.type == "string":
            return sorted(base64.b64encode(v).decode() for v in ds.values)
        return sorted(v.hex() for v in ds.values)
