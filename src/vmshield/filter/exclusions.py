"""Network exclusions: an ordered list of (address | subnet | VLAN) → do not scan | do not block.

The first entry that matches a packet (its source or its destination address, or its VLAN) wins,
as in a firewall. Text form, one per line (`#` comments):

    no_scan   10.231.5.0/24
    no_block  10.231.5.200
    no_scan   vlan 100
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

ACTIONS = ("no_scan", "no_block")


class ExclusionError(ValueError):
    pass


@dataclass(frozen=True)
class Exclusion:
    action: str
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    vlan: int | None = None

    def matches(self, src: str, dst: str, vlan: int) -> bool:
        if self.vlan is not None:
            return vlan == self.vlan
        assert self.network is not None
        for a in (src, dst):
            try:
                if ipaddress.ip_address(a) in self.network:
                    return True
            except ValueError:
                continue
        return False

    def text(self) -> str:
        return (
            f"{self.action} {'vlan ' + str(self.vlan) if self.vlan is not None else self.network}"
        )


def parse_exclusion(line: str, where: str = "exclusion") -> Exclusion:
    parts = line.split()
    if len(parts) not in (2, 3) or parts[0] not in ACTIONS:
        raise ExclusionError(
            f"{where}: expected 'no_scan|no_block ADDRESS|SUBNET|vlan ID', got {line!r}"
        )
    if parts[1] == "vlan":
        if len(parts) != 3 or not parts[2].isdigit() or not 0 < int(parts[2]) < 4095:
            raise ExclusionError(f"{where}: VLAN id must be 1-4094, got {line!r}")
        return Exclusion(parts[0], vlan=int(parts[2]))
    if len(parts) != 2:
        raise ExclusionError(f"{where}: unexpected text after the address in {line!r}")
    try:
        net = ipaddress.ip_network(parts[1], strict=False)
    except ValueError as exc:
        raise ExclusionError(f"{where}: not an address or subnet: {parts[1]!r}") from exc
    return Exclusion(parts[0], network=net)


def parse_exclusions(lines: Iterable[str], source: str = "exclusions") -> list[Exclusion]:
    out = []
    for n, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if line:
            out.append(parse_exclusion(line, f"{source}:{n}"))
    return out


def decide(exclusions: Sequence[Exclusion], src: str, dst: str, vlan: int = 0) -> str | None:
    """The action of the first matching exclusion, or None."""
    for ex in exclusions:
        if ex.matches(src, dst, vlan):
            return ex.action
    return None
