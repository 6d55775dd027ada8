"""YARA rules through yara-python: compiled once per file so an error names its file and line."""

from __future__ import annotations

import re

import yara

_LINE = re.compile(r"line ([0-9]+)")


class YaraError(ValueError):
    def __init__(self, line: int, reason: str) -> None:
        super().__init__(reason)
        self.line = line
        self.reason = reason


def check(source: str, name: str) -> tuple[int, yara.Rules]:
    """Compile one file's rules alone; return how many rules it holds (and the compiled rules)
    or raise YaraError."""
    try:
        rules = yara.compile(source=source, includes=False)  # no reading other files
    except yara.SyntaxError as exc:
        msg = str(exc)
        m = _LINE.search(msg)
        raise YaraError(int(m.group(1)) if m else 0, f"YARA: {msg}") from None
    except yara.Error as exc:
        raise YaraError(0, f"YARA: {exc}") from None
    except ValueError as exc:  # e.g. a NUL byte in the source
        raise YaraError(0, f"YARA: {exc}") from None
    return sum(1 for _ in rules), rules


def save(rules: yara.Rules) -> bytes:
    import io

    buf = io.BytesIO()
    rules.save(file=buf)
    return buf.getvalue()


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


# --- prefilter ----------------------------------------------------------------------------------
# YARA is the slowest engine here (~70 MB/s with 1 000 small rules), so like ClamAV (which turns
# YARA strings into its own automaton) we run it only when it can match: when every rule needs
# one of its strings to match, and the rule's strings all have a fixed run (an anchor), a buffer
# where Hyperscan finds none of those anchors cannot match any rule. Anything we do not fully
# understand (regex strings, xor/base64, conditions that hold without strings) makes the whole
# rule set "always run": the prefilter only ever skips work, never a detection.

_TOKEN = re.compile(
    r'\s+|//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|\{|\}|[$#@!][A-Za-z0-9_]*\*?|[A-Za-z_][A-Za-z0-9_.]*'
    r"|0x[0-9a-fA-F]+|[0-9]+(?:KB|MB)?|\.\.|==|!=|<=|>=|[-+*/\\%&|^~<>()\[\]=,:?]|.",
    re.S,
)


def _tokens(src: str) -> list[str]:
    return [t for t in _TOKEN.findall(src) if t.strip() and not t.startswith(("//", "/*"))]


def _unescape(lit: str) -> bytes:
    out = bytearray()
    i = 0
    body = lit[1:-1]
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            n = body[i + 1]
            if n == "x" and i + 3 < len(body) + 1:
                out.append(int(body[i + 2 : i + 4], 16))
                i += 4
                continue
            out += {"n": b"\n", "t": b"\t", "r": b"\r", '"': b'"', "\\": b"\\"}.get(n, n.encode())
            i += 2
            continue
        out += c.encode("utf-8")
        i += 1
    return bytes(out)


def _hex_anchor(hexbody: str) -> bytes:
    from vmshield.engines.file.signatures.hexsig import anchor, parse

    s = re.sub(r"\s+", "", hexbody)
    s = re.sub(r"\[-\]", "*", s)
    s = re.sub(r"\[([0-9]*-?[0-9]*)\]", lambda m: "{" + m.group(1) + "}", s)
    s = re.sub(r"~([0-9A-Fa-f?]{2})", r"!(\1)", s)
    return anchor(parse(s))


def _string_requiring(cond: list[str]) -> bool:
    """Whether a condition can only be true when at least one string of the rule matched."""
    if not cond:
        return False
    # strip one level of parentheses around the whole condition
    while cond[0] == "(" and cond[-1] == ")" and _balanced(cond[1:-1]):
        cond = cond[1:-1]
    branches = _split(cond, "or")
    if len(branches) > 1:
        return all(_string_requiring(b) for b in branches)
    return any(_gating_atom(c) for c in _split(cond, "and"))


def _balanced(toks: list[str]) -> bool:
    depth = 0
    for t in toks:
        depth += t == "("
        depth -= t == ")"
        if depth < 0:
            return False
    return depth == 0


def _split(toks: list[str], word: str) -> list[list[str]]:
    parts: list[list[str]] = [[]]
    depth = 0
    for t in toks:
        if t == "(":
            depth += 1
        elif t == ")":
            depth -= 1
        if depth == 0 and t == word:
            parts.append([])
        else:
            parts[-1].append(t)
    return parts


def _gating_atom(c: list[str]) -> bool:
    if not c or "not" in c:
        return False
    if c[0] == "(" and c[-1] == ")" and _balanced(c[1:-1]):
        return _string_requiring(c[1:-1])
    if c[0].startswith("$") and (len(c) == 1 or c[1] in ("at", "in")):
        return True
    if (
        len(c) >= 3
        and c[1] == "of"
        and (c[0] in ("any", "all") or ((c[0].isascii() and c[0].isdigit()) and int(c[0]) > 0))
    ):
        return c[2] == "them" or (
            c[2] == "(" and all(t.startswith("$") or t in ",()" for t in c[2:])
        )
    if len(c) == 3 and c[0].startswith("#") and (c[2].isascii() and c[2].isdigit()):
        n = int(c[2])
        return (c[1] == ">" and n >= 0) or (c[1] in (">=", "==") and n >= 1)
    return False


def prefilter_anchors(source: str) -> list[tuple[bytes, ...]] | None:
    """Per rule, the anchors one of which must occur for it to match; None: cannot prefilter."""
    toks = _tokens(source)
    rules: list[tuple[bytes, ...]] = []
    i = 0
    n = len(toks)
    while i < n:
        t = toks[i]
        if t in ("import", "include"):
            i += 2
            continue
        if t in ("private", "global"):
            i += 1
            continue
        if t != "rule":
            return None
        # rule NAME [: tags] {
        j = i + 2
        while j < n and toks[j] != "{":
            j += 1
        j += 1
        section = None
        anchors: list[bytes] = []
        cond: list[str] = []
        while j < n and toks[j] != "}":
            tok = toks[j]
            if tok in ("meta", "strings", "condition") and j + 1 < n and toks[j + 1] == ":":
                section = tok
                j += 2
                continue
            if section == "strings" and tok.startswith("$") and j + 1 < n and toks[j + 1] == "=":
                j += 2
                if j >= n:
                    return None
                val = toks[j]
                if val.startswith('"'):
                    lit = _unescape(val)
                    j += 1
                    mods = []
                    while j < n and toks[j] in (
                        "nocase",
                        "wide",
                        "ascii",
                        "fullword",
                        "private",
                        "xor",
                        "base64",
                        "base64wide",
                    ):
                        mods.append(toks[j])
                        j += 1
                    if {"xor", "base64", "base64wide"} & set(mods):
                        return None
                    if "wide" in mods:
                        anchors.append(b"".join(bytes([ch, 0]) for ch in lit))
                        if "ascii" in mods:
                            anchors.append(lit)
                    else:
                        anchors.append(lit)
                    continue
                if val == "{":
                    k = j + 1
                    while k < n and toks[k] != "}":
                        k += 1
                    try:
                        anchors.append(_hex_anchor("".join(toks[j + 1 : k])))
                    except ValueError:
                        return None
                    j = k + 1
                    while j < n and toks[j] == "private":
                        j += 1
                    continue
                return None  # regex string: no prefilter
            if section == "condition":
                cond.append(tok)
            j += 1
        i = j + 1
        if not anchors or any(len(a) < 3 for a in anchors) or not _string_requiring(cond):
            return None
        rules.append(tuple(anchors))
    return rules
