"""A lab of network namespaces that stand for VMs on one hypervisor host.

`Lab.up()` creates, for prefix P:
  - namespaces `P-vm1 … P-vmN` and `P-attacker`, each with `eth0` and an address in 10.231.S.0/24;
  - a bridge `P-br` in the host namespace and veth ports `P-h1 … P-hN`, `P-ha` on it
    (exactly how KVM guests' tap devices sit on a Linux bridge);
  - in each VM the lab servers (HTTP 80, HTTPS 443, DNS 53);
  - optionally the network protection of the lab (standard or monitoring mode) in the background.
Everything created is written to a state file first (so `down` works after a crash), and `down`
also sweeps leftovers by prefix: namespaces, links, iptables chains, ipsets, processes.
"""

from __future__ import annotations

import contextlib
import importlib
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vmshield.filter import sysnet

STATE_DIR_ENV = "VMSHIELD_LAB_DIR"
DEFAULT_STATE_DIR = "/run/vmshield/lab"
LAB_NET = ipaddress.IPv4Network("10.231.0.0/16")
_PREFIX_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,8}$")


class LabError(RuntimeError):
    pass


def state_dir() -> Path:
    return Path(os.environ.get(STATE_DIR_ENV, DEFAULT_STATE_DIR))


def check_prefix(prefix: str) -> str:
    if not _PREFIX_RE.match(prefix):
        raise LabError(
            f"bad lab prefix {prefix!r}: 1-9 letters/digits starting with a letter "
            "(interface names must stay within 15 characters)"
        )
    return prefix


@dataclass
class Host:
    name: str  # vm1 … vmN, attacker
    netns: str
    port: str  # host-side veth on the bridge
    address: str
    mac: str
    pids: list[int] = field(default_factory=list)


@dataclass
class LabState:
    prefix: str
    subnet: str
    bridge: str
    hosts: list[Host]
    protect: str = "none"
    service_pid: int = 0
    service_dir: str = ""
    eve: str = ""
    fail_closed: bool = False
    created: float = field(default_factory=time.time)
    sysctl_restore: dict[str, str] = field(default_factory=dict)
    hook: dict[str, Any] = field(default_factory=dict)

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise LabError(
            f"no host {name!r} in lab {self.prefix} (have {', '.join(h.name for h in self.hosts)})"
        )

    @property
    def vms(self) -> list[Host]:
        return [h for h in self.hosts if h.name != "attacker"]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> LabState:
        hosts = [Host(**h) for h in obj.pop("hosts")]
        return cls(hosts=hosts, **obj)


def state_path(prefix: str) -> Path:
    return state_dir() / f"{prefix}.json"


def load_state(prefix: str) -> LabState | None:
    try:
        return LabState.from_json(json.loads(state_path(prefix).read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, KeyError) as exc:
        raise LabError(f"lab state {state_path(prefix)} is unreadable: {exc}") from exc


def save_state(st: LabState) -> None:
    path = state_path(st.prefix)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(st.to_json(), indent=1))
    os.replace(tmp, path)


def _pick_subnet(prefix: str) -> ipaddress.IPv4Network:
    used = set()
    d = state_dir()
    if d.is_dir():
        for f in d.glob("*.json"):
            with contextlib.suppress(Exception):
                used.add(json.loads(f.read_text())["subnet"])
    # Addresses already configured on this host's (or a lab's) interfaces are also taken.
    out = sysnet.run(["ip", "-o", "-4", "addr", "show"], check=False)
    start = zlib.crc32(prefix.encode()) % 254
    for k in range(254):
        idx = (start + k) % 254 + 1
        net = ipaddress.IPv4Network(f"10.231.{idx}.0/24")
        if str(net) not in used and f" 10.231.{idx}." not in out:
            return net
    raise LabError("no free /24 left in 10.231.0.0/16 for another lab")


def _mac(subnet_idx: int, host_idx: int) -> str:
    return f"02:76:6d:{subnet_idx:02x}:00:{host_idx:02x}"


def _alive(pid: int, needle: str) -> bool:
    """True when `pid` still runs and its command line mentions `needle` (guards PID reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return needle in cmdline


def _kill(pid: int, needle: str, timeout: float = 5.0) -> None:
    if pid <= 0 or not _alive(pid, needle):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid, needle):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    if _alive(pid, needle):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


class Lab:
    def __init__(self, prefix: str = "vms") -> None:
        self.prefix = check_prefix(prefix)

    @property
    def state(self) -> LabState | None:
        return load_state(self.prefix)

    # ---------------------------------------------------------------- up
    def up(
        self,
        vms: int = 2,
        protect: str = "standard",
        fail_closed: bool = False,
        workers: int = 2,
        config: str | None = None,
        ready_timeout: float = 30.0,
        exclude: list[str] | None = None,
        block_seconds: int = 600,
        onaccess: bool = True,
    ) -> LabState:
        if not 1 <= vms <= 32:
            raise LabError(f"--vms must be between 1 and 32, got {vms}")
        if protect not in ("standard", "monitoring", "none"):
            raise LabError(f"--protect must be standard, monitoring or none, got {protect!r}")
        if os.geteuid() != 0:
            raise LabError("lab up needs root (network namespaces, bridge, iptables)")
        if self.state is not None:
            raise LabError(
                f"lab {self.prefix} is already up (run `vmshield lab down --prefix {self.prefix}`)"
            )
        p = self.prefix
        net = _pick_subnet(p)
        sidx = int(str(net.network_address).split(".")[2])
        hosts = [
            Host(
                f"vm{i}",
                f"{p}-vm{i}",
                f"{p}-h{i}",
                str(net.network_address + 10 + i),
                _mac(sidx, i),
            )
            for i in range(1, vms + 1)
        ]
        hosts.append(
            Host(
                "attacker",
                f"{p}-attacker",
                f"{p}-ha",
                str(net.network_address + 200),
                _mac(sidx, 200),
            )
        )
        st = LabState(
            prefix=p,
            subnet=str(net),
            bridge=f"{p}-br",
            hosts=hosts,
            protect=protect,
            fail_closed=fail_closed,
        )
        save_state(st)  # before creating anything: `down` after a crash needs it
        try:
            self._create_net(st)
            self._start_servers(st)
            save_state(st)
            if protect != "none":
                self._start_protection(
                    st,
                    workers=workers,
                    config=config,
                    timeout=ready_timeout,
                    exclude=exclude or [],
                    block_seconds=block_seconds,
                )
            if onaccess:
                self._run_hook(st, "setup")
            save_state(st)
        except BaseException:
            with contextlib.suppress(Exception):
                self.down()
            raise
        return st

    def _create_net(self, st: LabState) -> None:
        r = sysnet.run
        st.sysctl_restore = {}
        if st.protect != "none":
            st.sysctl_restore = sysnet.ensure_br_netfilter()
        r(
            [
                "ip",
                "link",
                "add",
                st.bridge,
                "type",
                "bridge",
                "stp_state",
                "0",
                "forward_delay",
                "0",
            ]
        )
        # No IPv6 autoconf noise on the lab's links; the lab is IPv4.
        sysnet.set_sysctl(f"net.ipv6.conf.{st.bridge}.disable_ipv6", "1")
        r(["ip", "link", "set", st.bridge, "up"])
        for h in st.hosts:
            r(["ip", "netns", "add", h.netns])
            peer = h.port.replace("-h", "-i", 1)  # renamed to eth0 inside the namespace
            r(["ip", "link", "add", h.port, "type", "veth", "peer", "name", peer])
            r(["ip", "link", "set", peer, "netns", h.netns])
            r(sysnet.in_ns(h.netns, "ip", "link", "set", peer, "name", "eth0"))
            r(sysnet.in_ns(h.netns, "ip", "link", "set", "eth0", "address", h.mac))
            r(sysnet.in_ns(h.netns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"))
            r(sysnet.in_ns(h.netns, "ip", "addr", "add", f"{h.address}/24", "dev", "eth0"))
            r(sysnet.in_ns(h.netns, "ip", "link", "set", "eth0", "up"))
            r(sysnet.in_ns(h.netns, "ip", "link", "set", "lo", "up"))
            sysnet.set_sysctl(f"net.ipv6.conf.{h.port}.disable_ipv6", "1")
            r(["ip", "link", "set", h.port, "master", st.bridge])
            r(["ip", "link", "set", h.port, "up"])
        # A host sweep must reach the bridge as IP: the attacker routes the unused .64/26 of the
        # lab through vm1 (which does not forward), so its echo requests are not just ARP.
        attacker, vm1 = st.host("attacker"), st.vms[0]
        sweep_net = str(ipaddress.IPv4Network(st.subnet).network_address + 64) + "/26"
        r(sysnet.in_ns(attacker.netns, "ip", "route", "add", sweep_net, "via", vm1.address))

    def _start_servers(self, st: LabState) -> None:
        procs = []
        for h in st.vms:
            cmd = sysnet.in_ns(
                h.netns,
                sys.executable,
                "-m",
                "vmshield.lab.servers",
                "--name",
                h.name,
                "--address",
                h.address,
                "--lab",
                st.prefix,
            )
            proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True
            )
            h.pids.append(proc.pid)
            procs.append((h, proc))
        for h, proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if b"ready" not in line:
                raise LabError(f"the lab servers in {h.name} did not start")
            proc.stdout.close()

    def _start_protection(
        self,
        st: LabState,
        workers: int,
        config: str | None,
        timeout: float,
        exclude: list[str],
        block_seconds: int,
    ) -> None:
        sdir = state_dir() / f"{st.prefix}.svm"
        sdir.mkdir(parents=True, exist_ok=True)
        policy = write_lab_policy(sdir, block_seconds)
        st.service_dir = str(sdir)
        st.eve = str(sdir / "eve.json")
        for old in ("eve.json", "heartbeat"):  # a new lab starts a new record
            with contextlib.suppress(FileNotFoundError):
                (sdir / old).unlink()
        ready = sdir / "ready"
        with contextlib.suppress(FileNotFoundError):
            ready.unlink()
        cmd = [
            sys.executable,
            "-m",
            "vmshield.filter.service",
            "--mode",
            st.protect,
            "--bridge",
            st.bridge,
            "--name",
            st.prefix,
            "--ports",
            ",".join(h.port for h in st.hosts),
            "--workers",
            str(workers),
            "--eve",
            st.eve,
            "--state-dir",
            str(sdir),
            "--ready-file",
            str(ready),
        ]
        if st.fail_closed:
            cmd.append("--fail-closed")
        for h in st.hosts:
            cmd += ["--vm", f"{h.address}={h.name}"]
        cmd += ["--config", str(policy)]
        if config:
            cmd += ["--config", config]
        names = {h.name: h.address for h in st.hosts}
        for text in exclude:
            # Lab host names stand for their addresses: `no_block attacker`.
            parts = text.split()
            if len(parts) == 2 and parts[1] in names:
                text = f"{parts[0]} {names[parts[1]]}"
            cmd += ["--exclude", text]
        log = open(sdir / "service.log", "wb")  # noqa: SIM115 (handed to the child)
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True)
        log.close()
        st.service_pid = proc.pid
        save_state(st)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready.exists():
                return
            if proc.poll() is not None:
                tail = (sdir / "service.log").read_text(errors="replace")[-2000:]
                raise LabError(
                    f"the network protection service exited ({proc.returncode}):\n{tail}"
                )
            time.sleep(0.05)
        raise LabError(f"the network protection service was not ready within {timeout:.0f}s")

    def _run_hook(self, st: LabState, what: str) -> None:
        """Optional hook for on-access protection of the lab VMs (vmshield.lab.onaccess, engineer H).

        `setup(state)` may return a JSON-able dict kept in `state.hook`; `teardown(state)` must be
        idempotent. A missing module is not an error.
        """
        try:
            mod = importlib.import_module("vmshield.lab.onaccess")
        except ModuleNotFoundError as exc:
            if exc.name == "vmshield.lab.onaccess":
                return
            raise
        fn = getattr(mod, what, None)
        if fn is None:
            return
        result = fn(st)
        if what == "setup" and isinstance(result, dict):
            st.hook = result

    # ---------------------------------------------------------------- down
    def down(self) -> list[str]:
        """Remove everything this lab created; safe to call repeatedly and after a crash."""
        p = self.prefix
        removed: list[str] = []
        st = None
        with contextlib.suppress(LabError):
            st = self.state
        if st is not None:
            with contextlib.suppress(Exception):
                self._run_hook(st, "teardown")
            if st.service_pid:
                _kill(st.service_pid, "vmshield.filter.service", timeout=10.0)
                removed.append(f"process {st.service_pid}")
            for h in st.hosts:
                for pid in h.pids:
                    _kill(pid, p)
        # Sweep by prefix: processes whose command line names this lab.
        for pid in _pids_mentioning(f"--name {p} ") + _pids_mentioning(f"--lab {p}"):
            _kill(pid, p)
            removed.append(f"process {pid}")
        from vmshield.filter.rules import cleanup_prefix

        removed += cleanup_prefix(p)
        for ns in sysnet.netns_list():
            if ns.startswith(f"{p}-"):
                # Processes left inside the namespace would keep it alive.
                for pid_text in sysnet.run(["ip", "netns", "pids", ns], check=False).split():
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pid_text), signal.SIGKILL)
                sysnet.try_run(["ip", "netns", "del", ns])
                removed.append(f"netns {ns}")
        for name in sysnet.link_names():
            if name.startswith(f"{p}-"):
                sysnet.try_run(["ip", "link", "del", name])
                removed.append(f"link {name}")
        if st is not None:
            # The connections the lab's traffic left in the host's conntrack table (bridged
            # traffic is tracked there, TIME_WAIT for two minutes): a new lab that gets this
            # subnet again must not inherit them (their marks, their state).
            for flag in ("-s", "-d"):
                sysnet.try_run(["conntrack", "-D", flag, st.subnet])
            removed.append(f"conntrack entries of {st.subnet}")
            # Restored only when no other vmshield filter still needs bridged traffic in iptables.
            others = [
                ln for ln in sysnet.ipt("-S", check=False).splitlines() if ln.startswith("-N VMS-")
            ]
            if not others:
                for key, value in st.sysctl_restore.items():
                    sysnet.set_sysctl(key, value)
        with contextlib.suppress(FileNotFoundError):
            state_path(p).unlink()
        return removed

    # ---------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        st = self.state
        if st is None:
            return {"prefix": self.prefix, "up": False}
        existing_ns = set(sysnet.netns_list())
        hosts = []
        for h in st.hosts:
            hosts.append(
                {
                    "name": h.name,
                    "netns": h.netns,
                    "netns_present": h.netns in existing_ns,
                    "address": h.address,
                    "mac": h.mac,
                    "port": h.port,
                    "processes": [
                        {"pid": pid, "running": _alive(pid, self.prefix)} for pid in h.pids
                    ],
                }
            )
        blocked: list[dict[str, Any]] = []
        if st.protect == "standard":
            from vmshield.filter.rules import blocked as kernel_blocked

            with contextlib.suppress(Exception):
                blocked = [
                    {"address": e.address, "scope": e.scope, "seconds_left": e.timeout}
                    for e in kernel_blocked(st.prefix)
                ]
        return {
            "prefix": st.prefix,
            "up": True,
            "blocked": blocked,
            "subnet": st.subnet,
            "bridge": st.bridge,
            "mode": st.protect,
            "fail_closed": st.fail_closed,
            "service": {
                "pid": st.service_pid,
                "running": bool(st.service_pid)
                and _alive(st.service_pid, "vmshield.filter.service"),
                "eve": st.eve,
                "dir": st.service_dir,
                # The outage watchdog the service started (outlives a killed service).
                "watchdog_pids": _watchdog_pids(st.prefix),
            },
            "hosts": hosts,
            "hook": st.hook,
        }


def _watchdog_pids(prefix: str) -> list[int]:
    from vmshield.filter.watchdog import _watchdog_pids as pids

    return pids(prefix)


def write_lab_policy(sdir: Path, block_seconds: int) -> Path:
    """The lab's policy: a URL database listing the lab's test names, one IDS `drop` rule."""
    from vmshield.engines.net.urls import build_database
    from vmshield.lab import attacks

    listed = sdir / "lab-urls.txt"
    listed.write_text(f"http://{attacks.LAB_BLOCKED_HTTP}/\nhttps://{attacks.LAB_BLOCKED_TLS}/\n")
    build_database([("plain", str(listed))], str(sdir / "lab-urls.db"), category="malicious")
    rules = sdir / "lab.rules"
    rules.write_text(
        f'drop http any any -> any any (msg:"vmshield lab IDS test: marker in request"; '
        f'content:"{attacks.LAB_IDS_MARKER}"; sid:{attacks.LAB_IDS_SID}; rev:1;)\n'
    )
    conf = sdir / "lab-policy.toml"
    conf.write_text(
        f'url_db = ["{sdir / "lab-urls.db"}"]\nrules = ["{rules}"]\nblock_seconds = {int(block_seconds)}\n'
    )
    return conf


def _pids_mentioning(needle: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace") + " "
        except OSError:
            continue
        if needle in cmd and "vmshield" in cmd and int(d.name) != os.getpid():
            out.append(int(d.name))
    return out


def all_lab_prefixes() -> list[str]:
    d = state_dir()
    return sorted(f.stem for f in d.glob("*.json")) if d.is_dir() else []
