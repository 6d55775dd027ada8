"""Address and port groups ($HOME_NET, $HTTP_PORTS ...) and their parsing.

Groups follow Suricata's syntax: `any`, single values, CIDRs, IP ranges `a-b`, port ranges `a:b`,
open ranges `1024:` / `:1023`, lists `[a,b]` (nested), negation `!x` and variables `$NAME`.
A list is the union of its positive members minus its negated members; a list of only negated
members starts from `any`.
"""

from __future__ import annotations

import ipaddress
import re
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

# Suricata's default suricata.yaml `vars:` section.
DEFAULT_ADDRESS_GROUPS: dict[str, str] = {
    "HOME_NET": "[192.168.0.0/16,10.0.0.0/8,172.16.0.0/12]",
    "EXTERNAL_NET": "!$HOME_NET",
    "HTTP_SERVERS": "$HOME_NET",
    "SMTP_SERVERS": "$HOME_NET",
    "SQL_SERVERS": "$HOME_NET",
    "DNS_SERVERS": "$HOME_NET",
    "TELNET_SERVERS": "$HOME_NET",
    "AIM_SERVERS": "$EXTERNAL_NET",
    "DC_SERVERS": "$HOME_NET",
    "DNP3_SERVER": "$HOME_NET",
    "DNP3_CLIENT": "$HOME_NET",
    "MODBUS_CLIENT": "$HOME_NET",
    "MODBUS_SERVER": "$HOME_NET",
    "ENIP_CLIENT": "$HOME_NET",
    "ENIP_SERVER": "$HOME_NET",
}
DEFAULT_PORT_GROUPS: dict[str, str] = {
    "HTTP_PORTS": "80",
    "SHELLCODE_PORTS": "!80",
    "ORACLE_PORTS": "1521",
    "SSH_PORTS": "22",
    "DNP3_PORTS": "20000",
    "MODBUS_PORTS": "502",
    "FILE_DATA_PORTS": "[$HTTP_PORTS,110,143]",
    "FTP_PORTS": "21",
    "GENEVE_PORTS": "6081",
    "VXLAN_PORTS": "4789",
    "TEREDO_PORTS": "3544",
    "SIP_PORTS": "[5060,5061]",
}

_V4_MAX = (1 << 32) - 1
_V6_MAX = (1 << 128) - 1
_MAX_DEPTH = 16  # variable nesting; also stops $A -> $B -> $A loops
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class GroupError(ValueError):
    pass


Intervals = list[tuple[int, int]]


def _merge(iv: Iterable[tuple[int, int]]) -> Intervals:
    out: Intervals = []
    for lo, hi in sorted(iv):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def _complement(iv: Intervals, top: int) -> Intervals:
    out: Intervals = []
    nxt = 0
    for lo, hi in iv:
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= top:
        out.append((nxt, top))
    return out


def _subtract(a: Intervals, b: Intervals, top: int) -> Intervals:
    if not b:
        return a
    comp = _complement(b, top)
    out: Intervals = []
    i = j = 0
    while i < len(a) and j < len(comp):
        lo = max(a[i][0], comp[j][0])
        hi = min(a[i][1], comp[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < comp[j][1]:
            i += 1
        else:
            j += 1
    return out


def _contains(iv: Intervals, starts: list[int], v: int) -> bool:
    i = bisect_right(starts, v) - 1
    return i >= 0 and v <= iv[i][1]


@dataclass(slots=True)
class AddressSet:
    v4: Intervals = field(default_factory=list)
    v6: Intervals = field(default_factory=list)
    is_any: bool = False
    _s4: list[int] = field(default_factory=list)
    _s6: list[int] = field(default_factory=list)

    def finish(self) -> AddressSet:
        self.v4, self.v6 = _merge(self.v4), _merge(self.v6)
        self._s4 = [lo for lo, _ in self.v4]
        self._s6 = [lo for lo, _ in self.v6]
        self.is_any = self.v4 == [(0, _V4_MAX)] and self.v6 == [(0, _V6_MAX)]
        return self

    def contains(self, version: int, value: int) -> bool:
        if self.is_any:
            return True
        if version == 4:
            return _contains(self.v4, self._s4, value)
        if version == 6:
            return _contains(self.v6, self._s6, value)
        return False

    def contains_ip(self, ip: str) -> bool:
        a = ipaddress.ip_address(ip)
        return self.contains(a.version, int(a))


@dataclass(slots=True)
class PortSet:
    iv: Intervals = field(default_factory=list)
    is_any: bool = False
    _s: list[int] = field(default_factory=list)

    def finish(self) -> PortSet:
        self.iv = _merge(self.iv)
        self._s = [lo for lo, _ in self.iv]
        self.is_any = self.iv == [(0, 65535)]
        return self

    def contains(self, port: int) -> bool:
        return self.is_any or _contains(self.iv, self._s, port)

    def single(self) -> int | None:
        if len(self.iv) == 1 and self.iv[0][0] == self.iv[0][1]:
            return self.iv[0][0]
        return None


def _split_list(s: str) -> list[str]:
    """Split the inside of a [...] list on top-level commas."""
    out: list[str] = []
    depth = 0
    cur: list[str] = []
    for ch in s:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise GroupError(f"unbalanced ']' in '{s}'")
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if depth != 0:
        raise GroupError(f"unbalanced '[' in '{s}'")
    out.append("".join(cur).strip())
    if any(not x for x in out):
        raise GroupError(f"empty element in list '[{s}]'")
    return out


class Variables:
    """Named address and port groups, defaulting to Suricata's suricata.yaml."""

    def __init__(
        self,
        address_groups: dict[str, str] | None = None,
        port_groups: dict[str, str] | None = None,
    ) -> None:
        self.address_groups = dict(
            DEFAULT_ADDRESS_GROUPS if address_groups is None else address_groups
        )
        self.port_groups = dict(DEFAULT_PORT_GROUPS if port_groups is None else port_groups)
        self._acache: dict[str, AddressSet] = {}
        self._pcache: dict[str, PortSet] = {}

    @classmethod
    def default(cls) -> Variables:
        return cls()

    def set_address(self, name: str, value: str) -> None:
        if not _NAME.match(name):
            raise GroupError(f"bad variable name '{name}'")
        self.address_groups[name] = value
        self._acache.clear()
        try:
            self.address(value)  # validate now, with a clear error
        except GroupError as e:
            # an empty group (EXTERNAL_NET when HOME_NET is any) is only an error for the rules
            # that use it, as in Suricata
            if "matches no address" not in str(e):
                raise

    def set_port(self, name: str, value: str) -> None:
        if not _NAME.match(name):
            raise GroupError(f"bad variable name '{name}'")
        self.port_groups[name] = value
        self._pcache.clear()
        self.port(value)

    @classmethod
    def from_suricata_yaml(cls, path: str | Path) -> Variables:
        """Read `vars: address-groups / port-groups` from a suricata.yaml-style file.

        Only that section is read (no YAML library needed): `NAME: value` lines indented under
        `address-groups:` or `port-groups:`. Unknown sections are ignored.
        """
        v = cls()
        section = None
        in_vars = False
        for n, raw in enumerate(
            Path(path).read_text("utf-8", errors="surrogateescape").splitlines(), 1
        ):
            line = raw.split("#", 1)[0].rstrip()
            if not line.strip():
                continue
            indent = len(line) - len(line.lstrip())
            key, _, val = line.strip().partition(":")
            if indent == 0:
                in_vars = key == "vars"
                section = None
                continue
            if not in_vars:
                continue
            if key in ("address-groups", "port-groups") and not val.strip():
                section = key
                continue
            if section is None or not val.strip():
                continue
            val = val.strip().strip("\"'")
            try:
                if section == "address-groups":
                    v.set_address(key, val)
                else:
                    v.set_port(key, val)
            except GroupError as e:
                raise GroupError(f"{path}:{n}: {key}: {e}") from None
        return v

    # -- addresses -------------------------------------------------------------------------
    def address(self, expr: str) -> AddressSet:
        expr = expr.strip()
        hit = self._acache.get(expr)
        if hit is None:
            v4, v6 = self._addr(expr, 0)
            hit = AddressSet(v4, v6).finish()
            if not hit.v4 and not hit.v6:
                raise GroupError(f"address group '{expr}' matches no address")
            self._acache[expr] = hit
        return hit

    def _addr(self, expr: str, depth: int) -> tuple[Intervals, Intervals]:
        if depth > _MAX_DEPTH:
            raise GroupError("address variables nested too deep (or a loop)")
        expr = expr.strip()
        if not expr:
            raise GroupError("empty address")
        if expr.startswith("!"):
            v4, v6 = self._addr(expr[1:], depth + 1)
            return _complement(_merge(v4), _V4_MAX), _complement(_merge(v6), _V6_MAX)
        if expr.startswith("["):
            if not expr.endswith("]"):
                raise GroupError(f"unterminated address list '{expr}'")
            pos4: Intervals = []
            pos6: Intervals = []
            neg4: Intervals = []
            neg6: Intervals = []
            have_pos = False
            for item in _split_list(expr[1:-1]):
                if item.startswith("!"):
                    a4, a6 = self._addr(item[1:], depth + 1)
                    neg4 += a4
                    neg6 += a6
                else:
                    a4, a6 = self._addr(item, depth + 1)
                    pos4 += a4
                    pos6 += a6
                    have_pos = True
            if not have_pos:
                pos4, pos6 = [(0, _V4_MAX)], [(0, _V6_MAX)]
            return (
                _subtract(_merge(pos4), _merge(neg4), _V4_MAX),
                _subtract(_merge(pos6), _merge(neg6), _V6_MAX),
            )
        if expr.startswith("$"):
            name = expr[1:]
            if name not in self.address_groups:
                raise GroupError(f"undefined address variable '${name}'")
            return self._addr(self.address_groups[name], depth + 1)
        if expr.lower() == "any":
            return [(0, _V4_MAX)], [(0, _V6_MAX)]
        if "-" in expr and "/" not in expr:
            lo_s, _, hi_s = expr.partition("-")
            try:
                lo, hi = ipaddress.ip_address(lo_s.strip()), ipaddress.ip_address(hi_s.strip())
            except ValueError:
                raise GroupError(f"bad address range '{expr}'") from None
            if lo.version != hi.version or int(lo) > int(hi):
                raise GroupError(f"bad address range '{expr}'")
            iv = [(int(lo), int(hi))]
            return (iv, []) if lo.version == 4 else ([], iv)
        try:
            net = ipaddress.ip_network(expr, strict=False)
        except ValueError:
            raise GroupError(f"bad address '{expr}'") from None
        iv = [(int(net.network_address), int(net.broadcast_address))]
        return (iv, []) if net.version == 4 else ([], iv)

    # -- ports -----------------------------------------------------------------------------
    def port(self, expr: str) -> PortSet:
        expr = expr.strip()
        hit = self._pcache.get(expr)
        if hit is None:
            hit = PortSet(_merge(self._port(expr, 0))).finish()
            if not hit.iv:
                raise GroupError(f"port group '{expr}' matches no port")
            self._pcache[expr] = hit
        return hit

    def _port(self, expr: str, depth: int) -> Intervals:
        if depth > _MAX_DEPTH:
            raise GroupError("port variables nested too deep (or a loop)")
        expr = expr.strip()
        if not expr:
            raise GroupError("empty port")
        if expr.startswith("!"):
            return _complement(_merge(self._port(expr[1:], depth + 1)), 65535)
        if expr.startswith("["):
            if not expr.endswith("]"):
                raise GroupError(f"unterminated port list '{expr}'")
            pos: Intervals = []
            neg: Intervals = []
            have_pos = False
            for item in _split_list(expr[1:-1]):
                if item.startswith("!"):
                    neg += self._port(item[1:], depth + 1)
                else:
                    pos += self._port(item, depth + 1)
                    have_pos = True
            if not have_pos:
                pos = [(0, 65535)]
            return _subtract(_merge(pos), _merge(neg), 65535)
        if expr.startswith("$"):
            name = expr[1:]
            if name not in self.port_groups:
                raise GroupError(f"undefined port variable '${name}'")
            return self._port(self.port_groups[name], depth + 1)
        if expr.lower() == "any":
            return [(0, 65535)]
        if ":" in expr:
            lo_s, _, hi_s = expr.partition(":")
            lo = _port_num(lo_s) if lo_s.strip() else 0
            hi = _port_num(hi_s) if hi_s.strip() else 65535
            if lo > hi:
                raise GroupError(f"bad port range '{expr}'")
            return [(lo, hi)]
        p = _port_num(expr)
        return [(p, p)]


def _port_num(s: str) -> int:
    s = s.strip()
    if not s.isdigit() or int(s) > 65535:
        raise GroupError(f"bad port '{s}'")
    return int(s)
