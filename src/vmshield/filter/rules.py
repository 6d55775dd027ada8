"""Kernel rules of the inline path: our own iptables chain, the block ipset, conntrack-mark bypass.

For a filter named N protecting bridge ports p1…pk:

    FORWARD  -m physdev --physdev-is-bridged --physdev-in pX  -j VMS-N   (one per port, in and out)
    VMS-N    -m set --match-set N-block src|dst  -j DROP   blocked sources, before the queue
             -m mark --mark BYPASS  -j CONNMARK / ACCEPT    packet re-injected by a worker (bypass)
             -m connmark --mark BYPASS/BYPASS    -j ACCEPT  flows the engine is done with
             exclusions, in order: do-not-scan -> ACCEPT, do-not-block -> VMS-N-Q
             -j VMS-N-Q
    VMS-N-Q  -j NFQUEUE --queue-balance a:b [--queue-bypass]

VLAN scope: a source blocked for what it did in a tagged VLAN is blocked in that VLAN only. Those
entries live in an nftables table of the bridge family (iptables cannot see the tag of bridged
frames), `bridge vms_N`, sets `block4`/`block6` of (address . VLAN id) with per-entry timeouts,
matched in its forward hook at priority filter (-200), before br_netfilter's iptables and so
before the queue. Untagged traffic (VLAN 0) is scoped to the bridge: the ipset above.

Only these chains and sets are ever touched; the host's other rules are left alone. Everything is
named after N so that `cleanup_prefix` finds leftovers after a crash.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from vmshield.filter import sysnet
from vmshield.filter.exclusions import Exclusion

BYPASS_MARK = 0x40000000  # conntrack mark bit meaning "inspection finished, do not queue"
# NFQUEUE reports the VLAN of a packet only when queued from the bridge family, not through
# br_netfilter's iptables hooks; so our bridge table writes the 802.1Q id of tagged frames on the
# protected ports into the packet mark: flag | VLAN id (low 12 bits).
VLAN_MARK_FLAG = 0x20000000


def vlan_of(mark: int) -> int:
    """The VLAN id our bridge table wrote into a packet mark (0: untagged or not ours).

    nft copies the tag's two bytes (network order) into the host-order mark unconverted, so on
    a little-endian host they come back swapped (tests/integration/filter/test_filter_vlan.py
    checks the round trip on the real kernel)."""
    if not mark & VLAN_MARK_FLAG:
        return 0
    low = (mark & 0xFFFF).to_bytes(2, sys.byteorder)
    return int.from_bytes(low, "big") & 0xFFF


MAX_BLOCK_SECONDS = 2_147_483  # ipset's timeout limit


def vlan_table(name: str) -> str:
    """The nftables bridge table holding the per-VLAN block sets of filter `name`."""
    return "vms_" + name.replace("-", "_")


def _vlan_tables() -> list[str]:
    out = sysnet.run(["nft", "list", "tables", "bridge"], check=False)
    return [ln.split()[2] for ln in out.splitlines() if ln.startswith("table bridge ")]


def install_vlan_table(name: str, ports: Sequence[str]) -> None:
    for p in ports:
        if not re.fullmatch(r"[A-Za-z0-9_.@:-]{1,15}", p):
            raise ValueError(f"bad interface name {p!r}")
    plist = ", ".join(f'"{p}"' for p in ports)
    t = vlan_table(name)
    # The `vlan id` in the match makes nft check the 802.1Q tag (the kernel moves it to the
    # packet's metadata on receive; nft reads it from there), so only tagged frames match.
    # `vlanmark` overwrites the mark of tagged frames entering from a protected port (a guest's
    # fresh frame carries none).
    sysnet.run(
        ["nft", "-f", "-"],
        input=f"""table bridge {t} {{
  set block4 {{ typeof ip saddr . vlan id; flags timeout; size 65536; }}
  set block6 {{ typeof ip6 saddr . vlan id; flags timeout; size 65536; }}
  chain vlanmark {{
    type filter hook prerouting priority filter; policy accept;
    iifname {{ {plist} }} ether type 8021q meta mark set vlan id
    iifname {{ {plist} }} ether type 8021q meta mark set meta mark | 0x{VLAN_MARK_FLAG:x}
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname {{ {plist} }} ether type 8021q vlan type ip ip saddr . vlan id @block4 counter drop
    oifname {{ {plist} }} ether type 8021q vlan type ip ip daddr . vlan id @block4 counter drop
    iifname {{ {plist} }} ether type 8021q vlan type ip6 ip6 saddr . vlan id @block6 counter drop
    oifname {{ {plist} }} ether type 8021q vlan type ip6 ip6 daddr . vlan id @block6 counter drop
  }}
}}
""",
    )


def chain_name(name: str) -> str:
    return f"VMS-{name}"


def set_name(name: str, v6: bool = False) -> str:
    return f"{name}-block6" if v6 else f"{name}-block"


@dataclass
class InlineRules:
    name: str
    ports: Sequence[str]
    queue_first: int
    queue_count: int
    fail_closed: bool = False
    exclusions: Sequence[Exclusion] = ()
    bypass_mark: int = BYPASS_MARK

    def install(self) -> None:
        sysnet.ensure_br_netfilter()
        self.remove()
        for v6 in (False, True):
            self._install_family(v6)
        install_vlan_table(self.name, self.ports)
        # Jumps last, so traffic never sees a half-built chain.
        for v6 in (False, True):
            for port in self.ports:
                for d in ("--physdev-in", "--physdev-out"):
                    sysnet.ipt(
                        "-I",
                        "FORWARD",
                        "1",
                        "-m",
                        "physdev",
                        "--physdev-is-bridged",
                        d,
                        port,
                        "-j",
                        chain_name(self.name),
                        v6=v6,
                    )

    def _install_family(self, v6: bool) -> None:
        chain, qchain, bset = (
            chain_name(self.name),
            chain_name(self.name) + "-Q",
            set_name(self.name, v6),
        )
        family = "inet6" if v6 else "inet"
        sysnet.run(
            [
                "ipset",
                "create",
                bset,
                "hash:net",
                "family",
                family,
                "timeout",
                "0",
                "maxelem",
                "65536",
                "-exist",
            ]
        )

        def add(*rule: str) -> None:
            sysnet.ipt("-A", *rule, v6=v6)

        sysnet.ipt("-N", chain, v6=v6)
        sysnet.ipt("-N", qchain, v6=v6)
        add(chain, "-m", "set", "--match-set", bset, "src", "-j", "DROP")
        add(chain, "-m", "set", "--match-set", bset, "dst", "-j", "DROP")
        m = f"0x{self.bypass_mark:x}/0x{self.bypass_mark:x}"
        # Bypass: the worker re-injects the packet (NF_REPEAT) with the mark bit set; we copy it
        # to the flow's conntrack mark, and from then on the flow is accepted here, unqueued.
        # (Setting the ct mark inside the verdict, NFQA_CT, needs CONFIG_NETFILTER_NETLINK_GLUE_CT,
        # which this kernel lacks.)
        add(
            chain,
            "-m",
            "mark",
            "--mark",
            m,
            "-j",
            "CONNMARK",
            "--or-mark",
            f"0x{self.bypass_mark:x}",
        )
        add(chain, "-m", "mark", "--mark", m, "-j", "ACCEPT")
        add(chain, "-m", "connmark", "--mark", m, "-j", "ACCEPT")
        for ex in self.exclusions:
            if ex.network is None or (ex.network.version == 6) != v6:
                continue  # VLAN exclusions are applied by the workers (iptables cannot see the tag)
            target = "ACCEPT" if ex.action == "no_scan" else qchain
            for direction in ("-s", "-d"):
                add(chain, direction, str(ex.network), "-j", target)
        add(chain, "-j", qchain)
        last = self.queue_first + self.queue_count - 1
        q = ["-j", "NFQUEUE"]
        q += (
            ["--queue-balance", f"{self.queue_first}:{last}"]
            if self.queue_count > 1
            else ["--queue-num", str(self.queue_first)]
        )
        if not self.fail_closed:
            q.append("--queue-bypass")  # fail-open: the kernel accepts when no worker listens
        add(qchain, *q)

    def remove(self) -> list[str]:
        return cleanup_prefix(self.name, exact=True)


_JUMP_RE = re.compile(r"^-A FORWARD (.*)-j (VMS-\S+)\s*$")


def cleanup_prefix(name: str, exact: bool = False) -> list[str]:
    """Remove our FORWARD jumps, chains and ipsets for `name` (or every filter starting with it),
    in iptables and ip6tables."""
    removed: list[str] = []
    ours = (
        (lambda c: c in (chain_name(name), chain_name(name) + "-Q"))
        if exact
        else (lambda c: c.startswith(chain_name(name)))
    )
    for v6 in (False, True):
        tool = "ip6tables" if v6 else "iptables"
        for line in sysnet.ipt("-S", "FORWARD", check=False, v6=v6).splitlines():
            mt = _JUMP_RE.match(line)
            if (
                mt
                and ours(mt.group(2))
                and sysnet.ipt_ok("-D", "FORWARD", *line.split()[2:], v6=v6)
            ):
                removed.append(f"{tool} FORWARD jump to {mt.group(2)}")
        listing = sysnet.ipt("-S", check=False, v6=v6).splitlines()
        mine = [ln.split()[1] for ln in listing if ln.startswith("-N ") and ours(ln.split()[1])]
        # The main chain references the -Q chain: flush all first, then delete.
        for c in mine:
            sysnet.ipt_ok("-F", c, v6=v6)
        for c in mine:
            if sysnet.ipt_ok("-X", c, v6=v6):
                removed.append(f"{tool} chain {c}")
    for table in _vlan_tables():
        mine_t = table == vlan_table(name) or (not exact and table.startswith(vlan_table(name)))
        if mine_t and sysnet.try_run(["nft", "delete", "table", "bridge", table]):
            removed.append(f"nft table bridge {table}")
    sets = sysnet.run(["ipset", "list", "-n"], check=False).split()
    for s in sets:
        if (s in (set_name(name), set_name(name, True))) if exact else s.startswith(f"{name}-"):
            # A set still referenced by a rule being deleted concurrently: retry briefly.
            for _ in range(20):
                if sysnet.try_run(["ipset", "destroy", s]):
                    removed.append(f"ipset {s}")
                    break
                time.sleep(0.05)
    return removed


# ---------------------------------------------------------------------------- block list


@dataclass(frozen=True)
class BlockEntry:
    address: str
    timeout: int  # seconds left; 0 = until removed
    vlan: int = 0  # 0: the whole bridge (untagged or unknown); else only in this 802.1Q VLAN

    @property
    def scope(self) -> str:
        return f"vlan {self.vlan}" if self.vlan else "bridge"


def parse_scoped(text: str) -> tuple[str, int | None]:
    """`ADDRESS` or `ADDRESS@VLAN` (as `vmshield blocked` shows and takes them)."""
    addr, sep, vlan = text.partition("@")
    if not sep:
        return addr, None
    if not vlan.isdigit() or not 1 <= int(vlan) <= 4094:
        raise ValueError(f"VLAN must be 1-4094, got {vlan!r} in {text!r}")
    return addr, int(vlan)


def _check_net(address: str) -> str:
    try:
        net = ipaddress.ip_network(address, strict=False)
    except ValueError as exc:
        raise ValueError(f"not an address or subnet: {address!r}") from exc
    full = 32 if net.version == 4 else 128
    return str(net.network_address) if net.prefixlen == full else str(net)


def _is_v6(address: str) -> bool:
    return ":" in address


def _vlan_elem(addr: str, vlan: int) -> str:
    if "/" in addr:
        raise ValueError(f"a VLAN-scoped block takes one address, not a subnet: {addr!r}")
    if not 1 <= vlan <= 4094:
        raise ValueError(f"VLAN must be 1-4094, got {vlan}")
    return f"{addr} . {vlan}"


def block(name: str, address: str, seconds: int, vlan: int = 0) -> None:
    """Block `address` for `seconds` (0 = until removed); re-blocking refreshes the timeout.
    With `vlan`, only the address's traffic tagged with that VLAN is dropped."""
    addr = _check_net(address)
    seconds = max(0, min(int(seconds), MAX_BLOCK_SECONDS))
    if vlan:
        elem = _vlan_elem(addr, vlan)
        t, st = vlan_table(name), "block6" if _is_v6(addr) else "block4"
        # delete + add: `add` alone keeps an existing element's old timeout.
        sysnet.try_run(["nft", "delete", "element", "bridge", t, st, f"{{ {elem} }}"])
        tmo = f" timeout {seconds}s" if seconds else ""
        sysnet.run(["nft", "add", "element", "bridge", t, st, f"{{ {elem}{tmo} }}"])
    else:
        sysnet.run(
            ["ipset", "add", set_name(name, _is_v6(addr)), addr, "timeout", str(seconds), "-exist"]
        )
    # Established flows of the blocked address must stop too, including bypassed ones: the
    # DROP rule is before the connmark bypass, and we delete their conntrack entries so nothing
    # keeps a stale "bypass" mark.
    with contextlib.suppress(Exception):
        sysnet.try_run(
            ["conntrack", "-D", "-f", "ipv6" if _is_v6(addr) else "ipv4", "-s", addr.split("/")[0]]
        )


def unblock(name: str, address: str, vlan: int | None = None) -> bool:
    """Remove a block. `vlan` None: every scope of the address (bridge and each VLAN)."""
    addr = _check_net(address)
    done = False
    if not vlan:
        done = sysnet.try_run(["ipset", "del", set_name(name, _is_v6(addr)), addr])
    if vlan != 0:
        st = "block6" if _is_v6(addr) else "block4"
        vlans = [vlan] if vlan else [e.vlan for e in blocked(name) if e.vlan and e.address == addr]
        for v in vlans:
            elem = _vlan_elem(addr, v)
            if sysnet.try_run(
                ["nft", "delete", "element", "bridge", vlan_table(name), st, f"{{ {elem} }}"]
            ):
                done = True
    return done


def _vlan_blocked(name: str) -> list[BlockEntry]:
    entries = []
    for st in ("block4", "block6"):
        out = sysnet.run(["nft", "-j", "list", "set", "bridge", vlan_table(name), st], check=False)
        try:
            doc = json.loads(out) if out.strip() else {}
        except ValueError:
            continue
        for item in doc.get("nftables", []):
            for el in item.get("set", {}).get("elem", []):
                val = el["elem"] if isinstance(el, dict) and "elem" in el else {"val": el}
                concat = val.get("val", {})
                if isinstance(concat, dict) and len(concat.get("concat", [])) == 2:
                    addr, vid = concat["concat"]
                    entries.append(BlockEntry(str(addr), int(val.get("expires", 0)), int(vid)))
    return entries


def blocked(name: str) -> list[BlockEntry]:
    out = sysnet.run(["ipset", "save", set_name(name)])
    out += sysnet.run(["ipset", "save", set_name(name, True)], check=False)
    entries = _vlan_blocked(name)
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "add":
            timeout = 0
            if "timeout" in parts:
                timeout = int(parts[parts.index("timeout") + 1])
            entries.append(BlockEntry(parts[2], timeout))
    return entries


def filter_names() -> list[str]:
    """Names of the inline filters installed on this host (from their block sets)."""
    sets = sysnet.run(["ipset", "list", "-n"], check=False).split()
    return sorted(s[: -len("-block")] for s in sets if s.endswith("-block"))
