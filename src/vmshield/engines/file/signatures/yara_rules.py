"""YARA rules through yara-python: compiled once per file so an error names its file and line."""

from __future__ import annotations

import re

import yara

_LINE = re.compile(r"line (\d+)")


class YaraError(ValueError):
    def __init__(self, line: int, reason: str) -> None:
        super().__init__(reason)
        self.line = line
        self.reason = reason


def check(source: str, name: str) -> int:
    """Compile one file's rules alone; return how many rules it holds or raise YaraError."""
    try:
        rules = yara.compile(source=source, includes=False)  # no reading other files
    except yara.SyntaxError as exc:
        msg = str(exc)
        m = _LINE.search(msg)
        raise YaraError(int(m.group(1)) if m else 0, f"YARA: {msg}") from None
    except yara.Error as exc:
        raise YaraError(0, f"YARA: {exc}") from None
    return sum(1 for _ in rules)


def compile_all(sources: dict[str, str]) -> bytes:
    """Compile every accepted file together (one namespace each) and return the saved rules."""
    import io

    rules = yara.compile(sources=sources, includes=False)
    buf = io.BytesIO()
    rules.save(file=buf)
    return buf.getvalue()


def load(saved: bytes) -> yara.Rules:
    import io

    return yara.load(file=io.BytesIO(saved))
