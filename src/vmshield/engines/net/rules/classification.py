"""classification.config: classtype short name -> (description, priority)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

_LINE = re.compile(r"^\s*config\s+classification\s*:\s*([^,]+),([^,]*),\s*(\d+)\s*$")


@dataclass(frozen=True, slots=True)
class ClassType:
    name: str
    description: str
    priority: int


@dataclass(slots=True)
class Classification:
    types: dict[str, ClassType] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # "file:line: reason"

    @classmethod
    def default(cls) -> Classification:
        text = resources.files(__package__).joinpath("classification.config").read_text("utf-8")
        return cls.parse(text, "<default classification.config>")

    @classmethod
    def load(cls, path: str | Path) -> Classification:
        return cls.parse(Path(path).read_text("utf-8", errors="surrogateescape"), str(path))

    @classmethod
    def parse(cls, text: str, name: str = "<text>") -> Classification:
        out = cls()
        for n, line in enumerate(text.splitlines(), 1):
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            m = _LINE.match(s)
            if not m:
                out.errors.append(
                    f"{name}:{n}: not 'config classification: name,description,priority'"
                )
                continue
            short = m.group(1).strip().lower()
            out.types[short] = ClassType(short, m.group(2).strip(), int(m.group(3)))
        return out

    def get(self, name: str) -> ClassType | None:
        return self.types.get(name.lower())
