"""NetworkProtection: the SVM's network service, hosting engine workers and the virtual filter.

    from vmshield.filter.service import NetworkProtection, ProtectionConfig
    np = NetworkProtection(ProtectionConfig(name="host1", bridge="br0", ports=["vnet0", "vnet1"],
                                            mode="standard", eve="/var/log/vmshield/eve.json"))
    np.start()   # returns once traffic is protected (rules installed, workers bound)
    ...
    np.stop()    # removes every rule, set and mirror it installed

Modes (fixed when the service is registered, as in the vendor document):
  standard   inline: iptables NFQUEUE on the bridge ports, one queue per worker process
             (`--queue-balance`), verdicts batched; blocks through an ipset with timeouts;
             clean flows bypassed with a conntrack mark; RST/block page injected on the ports.
             fail-open (default: `--queue-bypass`, traffic flows when no worker listens) or
             fail-closed (traffic stops when the SVM is down).
  monitoring tc mirror of the ports to a veth read with AF_PACKET rings (fanout by flow);
             events only, nothing is ever blocked.

Events (EVE lines) go to `eve`; the service also reports its own state (`filter` events: started,
stopped, worker down/restarted, outage found at start — traffic that bypassed inspection, or was
blocked when fail-closed, while the SVM was down) and every kernel block (`block` events).

Run as a process: `python -m vmshield.filter.service --mode standard --bridge br0 --ports a,b
--name host1 --eve eve.json` (see `--help`); SIGTERM stops it cleanly.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import multiprocessing as mp
import os
import queue as queue_mod
import signal
import socket
import struct
import sys
import threading
import time
import tomllib
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmshield import native
from vmshield.events import SEVERITY_HIGH, SEVERITY_INFO, SEVERITY_MEDIUM, Event, eve_line
from vmshield.filter import inspect as I  # noqa: N812
from vmshield.filter import rules as R  # noqa: N812
from vmshield.filter import watchdog as W  # noqa: N812
from vmshield.filter.exclusions import Exclusion, ExclusionError, decide, parse_exclusion

MODES = ("standard", "monitoring")
EVENT_QUEUE_MAX = 10_000  # events waiting for the writer, per service
QUEUE_MAXLEN = 8192  # packets each NFQUEUE holds before the kernel fails open (or drops)


class ProtectionError(RuntimeError):
    pass


@dataclass
class ProtectionConfig:
    name: str  # names the chains, sets and mirror devices (≤ 9 characters)
    bridge: str
    ports: list[str]  # the bridge ports of the protected VMs (tap/veth)
    mode: str = "standard"
    workers: int = 2
    fail_closed: bool = False
    queue_base: int | None = None  # first NFQUEUE number; derived from the name when None
    exclusions: list[Exclusion] = field(default_factory=list)
    block_seconds: int = 600
    eve: str | None = None
    state_dir: str | None = None
    host: str | None = None  # hypervisor host name in events
    vm_names: dict[str, str] = field(default_factory=dict)  # address -> VM name in events
    inspector: I.InspectorSettings = field(default_factory=I.InspectorSettings)
    # A separate process that reports at once when the service dies (filter/watchdog.py).
    watchdog: bool = True
    # Monitoring: the kernel stops copying the flows the engine is done with (filter/bpf.py).
    mirror_bypass: bool = True

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ProtectionError(f"network mode must be standard or monitoring, got {self.mode!r}")
        if not self.name or len(self.name) > 9 or not self.name.replace("-", "").isalnum():
            raise ProtectionError(f"filter name must be 1-9 letters/digits, got {self.name!r}")
        if not 1 <= self.workers <= 16:
            raise ProtectionError(f"workers must be 1-16, got {self.workers}")
        if not self.ports:
            raise ProtectionError("no bridge ports to protect")
        existing = set(os.listdir("/sys/class/net"))
        for dev in [self.bridge, *self.ports]:
            if dev not in existing:
                raise ProtectionError(f"network interface {dev!r} does not exist")
        if not 0 <= self.block_seconds <= R.MAX_BLOCK_SECONDS:
            raise ProtectionError(f"block_seconds must be 0-{R.MAX_BLOCK_SECONDS}")
        self.inspector.mode = "ips" if self.mode == "standard" else "ids"
        # The attack detectors report "do not block" sources as such instead of blocking them.
        self.inspector.extra["never_block"] = [
            str(e.network)
            for e in self.exclusions
            if e.action == "no_block" and e.network is not None
        ]
        self.inspector.block_seconds = self.block_seconds
        self.inspector.extra["report_bypass"] = self.mode == "monitoring" and self.mirror_bypass

    @property
    def queues(self) -> list[int]:
        base = (
            self.queue_base
            if self.queue_base is not None
            else 1000 + (zlib.crc32(self.name.encode()) % 4000) * 8
        )
        return list(range(base, base + self.workers))


def load_config_file(path: str, cfg: ProtectionConfig) -> None:
    """Apply a TOML service configuration (every key checked) onto `cfg`."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise ProtectionError(f"{path}: cannot read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProtectionError(f"{path}: invalid TOML ({exc})") from None
    known = {
        "workers",
        "fail_closed",
        "block_seconds",
        "exclusions",
        "rules",
        "url_db",
        "engine_config",
        "vm_names",
        "host",
        "attacks",
    }
    for key in doc:
        if key not in known:
            raise ProtectionError(
                f"{path}: unknown key {key!r} (known: {', '.join(sorted(known))})"
            )
    if "workers" in doc:
        cfg.workers = int(doc["workers"])
    if "fail_closed" in doc:
        cfg.fail_closed = bool(doc["fail_closed"])
    if "block_seconds" in doc:
        cfg.block_seconds = int(doc["block_seconds"])
    if "host" in doc:
        cfg.host = str(doc["host"])
    for i, line in enumerate(doc.get("exclusions", []), 1):
        try:
            cfg.exclusions.append(parse_exclusion(str(line), f"{path}: exclusions[{i}]"))
        except ExclusionError as exc:
            raise ProtectionError(str(exc)) from None
    cfg.inspector.rules += [str(x) for x in doc.get("rules", [])]
    cfg.inspector.url_db += [str(x) for x in doc.get("url_db", [])]
    if "engine_config" in doc:
        cfg.inspector.engine_config = str(doc["engine_config"])
    if "attacks" in doc:
        if not isinstance(doc["attacks"], dict):
            raise ProtectionError(f"{path}: attacks: expected a table")
        try:
            from vmshield.engines.net.attacks import AttackConfig

            AttackConfig.from_dict(doc["attacks"])  # checked now, so a typo fails at start
        except ValueError as exc:
            raise ProtectionError(f"{path}: {exc}") from None
        cfg.inspector.extra["attacks"] = doc["attacks"]
    cfg.vm_names.update({str(k): str(v) for k, v in doc.get("vm_names", {}).items()})
    for p in cfg.inspector.rules + cfg.inspector.url_db:
        if not os.path.exists(p):
            raise ProtectionError(f"{path}: file {p!r} does not exist")


# ------------------------------------------------------------------------------ workers


def _die_with_parent() -> None:
    # A worker outliving a killed SVM would keep answering the queue: fail-open/closed
    # behaviour must be the kernel's, so workers die with the service.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class _EventSink:
    """Worker side of the event pipe: bounded, never blocks the data path, counts what it drops."""

    def __init__(self, q: Any, cfg: ProtectionConfig) -> None:
        self.q = q
        self.cfg = cfg
        self.lost = 0

    def emit(self, ev: Event) -> None:
        if self.cfg.host and ev.host is None:
            ev.host = self.cfg.host
        if ev.vm is None and self.cfg.vm_names:
            for key in ("dest_ip", "src_ip"):
                vm = self.cfg.vm_names.get(str(ev.data.get(key, "")))
                if vm:
                    ev.vm = vm
                    break
        try:
            self.q.put_nowait(eve_line(ev))
        except queue_mod.Full:
            self.lost += 1


class _Blocker:
    def __init__(self, cfg: ProtectionConfig, sink: _EventSink) -> None:
        self.cfg = cfg
        self.sink = sink
        self._recent: dict[str, float] = {}

    def block(self, src: str, seconds: int, cause: list[Event], vlan: int = 0) -> None:
        """Block `src` in the scope the attack was seen in: its VLAN when the packet was tagged
        (802.1Q id from the queue's metadata), else the whole bridge."""
        now = time.monotonic()
        key = f"{src}@{vlan}"
        last = self._recent.get(key)
        if last is not None and now - last < 1.0:
            return  # the kernel drops it already; the queue may still hold a few of its packets
        self._recent[key] = now
        if len(self._recent) > 10_000:
            self._recent.clear()
        try:
            R.block(self.cfg.name, src, seconds, vlan=vlan)
            ok, err = True, ""
        except Exception as exc:  # reported, never fatal for the data path
            ok, err = False, str(exc)
        data: dict[str, Any] = {
            "src_ip": src,
            "block": {
                "action": "block_source" if ok else "block_failed",
                "seconds": seconds,
                "scope": {
                    "bridge": self.cfg.bridge,
                    "vlan": vlan,
                    "set": R.vlan_table(self.cfg.name) + (".block6" if ":" in src else ".block4"),
                }
                if vlan
                else {"bridge": self.cfg.bridge, "set": R.set_name(self.cfg.name, ":" in src)},
                "cause": [e.id for e in cause],
                "cause_types": sorted({e.event_type for e in cause}),
            },
        }
        if err:
            data["block"]["error"] = err
        self.sink.emit(
            Event(event_type="block", severity=SEVERITY_HIGH if ok else SEVERITY_MEDIUM, data=data)
        )


def _excluded(
    cfg: ProtectionConfig, cache: dict[bytes, str | None], ip: bytes, vlan: int
) -> str | None:
    if not cfg.exclusions or len(ip) < 20:
        return None
    key = ip[12:20] + vlan.to_bytes(2, "big")
    if key in cache:
        return cache[key]
    if ip[0] >> 4 == 4:
        src, dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
    else:
        src = dst = ""
    act = decide(cfg.exclusions, src, dst, vlan)
    if len(cache) > 65536:
        cache.clear()
    cache[key] = act
    return act


def _worker_stats(
    events: Any, cfg: ProtectionConfig, key: int, insp: Any, verdicts: dict[str, int]
) -> None:
    # (mirror workers: frames read, and flows handed to the kernel filter, in `verdicts`)
    """Counters of a worker at stop: packets, verdicts, the engine's own counters."""
    engine = getattr(insp, "engine", None)
    data = {
        "filter": {
            "state": "worker_stats",
            "name": cfg.name,
            "worker": key,
            "verdicts": verdicts,
            "engine": dict(getattr(engine, "counters", {}) or {}),
        }
    }
    with contextlib.suppress(Exception):
        events.put(
            eve_line(Event(event_type="filter", severity=SEVERITY_INFO, data=data)), timeout=1.0
        )


def _nfq_worker(
    cfg: ProtectionConfig, insp: I.Inspector, qnum: int, events: Any, ready: Any, stop: Any
) -> None:
    from vmshield.filter.inject import Injector, TcpView, block_page_response
    from vmshield.filter.nfqueue import NF_ACCEPT, NF_DROP, NF_REPEAT, NfQueue

    _die_with_parent()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sink = _EventSink(events, cfg)
    blocker = _Blocker(cfg, sink)
    inj = Injector()
    nfq = NfQueue(qnum, maxlen=QUEUE_MAXLEN, fail_open=not cfg.fail_closed)
    native.tune_gc()  # the inherited engine frozen out of the collector; fewer passes
    ready.put(qnum)
    names: dict[int, str] = {}
    excl_cache: dict[bytes, str | None] = {}
    mark = R.BYPASS_MARK
    verdicts: dict[str, int] = {}
    reported_lost = 0
    has_exclusions = bool(cfg.exclusions)
    vlan_flag = R.VLAN_MARK_FLAG
    accept = I.ACCEPT
    bursts = 0
    try:
        while True:
            # The stop flag takes a lock: checked when idle, and every 64 bursts when busy.
            bursts += 1
            if bursts & 63 == 0 and stop.is_set():
                break
            pkts = nfq.receive(512, timeout=0.25)
            if not pkts:
                if stop.is_set():
                    break
                if sink.lost != reported_lost:
                    reported_lost = sink.lost
                    with contextlib.suppress(queue_mod.Full):
                        events.put_nowait(
                            eve_line(
                                Event(
                                    event_type="filter",
                                    severity=SEVERITY_MEDIUM,
                                    data={
                                        "filter": {
                                            "state": "events_lost",
                                            "name": cfg.name,
                                            "queue": qnum,
                                            "lost": sink.lost,
                                        }
                                    },
                                )
                            )
                        )
                continue
            max_accept = -1
            accepted = 0
            now = time.time()
            for pk in pkts:
                ip = pk.payload
                vlan = pk.vlan or (R.vlan_of(pk.mark) if pk.mark & vlan_flag else 0)
                if pk.hwaddr and len(ip) >= 20:
                    if ip[0] >> 4 == 4:
                        inj.learn(ip[12:16], pk.hwaddr, pk.physindev, vlan)
                    elif len(ip) >= 40:
                        inj.learn(ip[8:24], pk.hwaddr, pk.physindev, vlan)
                iface = names.get(pk.physindev)
                if iface is None:
                    try:
                        iface = socket.if_indextoname(pk.physindev) if pk.physindev else ""
                    except OSError:
                        iface = ""
                    names[pk.physindev] = iface
                excl = _excluded(cfg, excl_cache, ip, vlan) if has_exclusions else None
                if excl == "no_scan":
                    max_accept = max(max_accept, pk.packet_id)
                    continue
                try:
                    d = insp.inspect(ip, now, iface=iface, vlan=vlan)
                    if d.action == accept and not d.events:
                        # The common case: nothing to report or enforce (batched accept).
                        accepted += 1
                        if pk.packet_id > max_accept:
                            max_accept = pk.packet_id
                        if pk.cap_len > len(ip):
                            verdicts["truncated"] = verdicts.get("truncated", 0) + 1
                        continue
                except Exception as exc:  # one bad packet never stops the filter
                    d = I.Decision(
                        events=[
                            Event(
                                event_type="filter",
                                severity=SEVERITY_MEDIUM,
                                data={
                                    "filter": {
                                        "state": "engine_error",
                                        "name": cfg.name,
                                        "error": repr(exc)[:300],
                                    }
                                },
                            )
                        ]
                    )
                for ev in d.events:
                    if excl == "no_block":
                        ev.data.setdefault("exclusion", "no_block")
                    sink.emit(ev)
                action = d.action
                if excl == "no_block":
                    action = I.ACCEPT if action != I.BYPASS else action
                elif d.block_src:
                    blocker.block(d.block_src, d.block_seconds or cfg.block_seconds, d.events, vlan)
                verdicts[action] = verdicts.get(action, 0) + 1
                if pk.cap_len > len(ip):
                    verdicts["truncated"] = verdicts.get("truncated", 0) + 1
                if action == I.ACCEPT:
                    max_accept = max(max_accept, pk.packet_id)
                elif action == I.BYPASS:
                    nfq.verdict(pk.packet_id, NF_REPEAT, mark=pk.mark | mark)
                elif action == I.DROP:
                    nfq.verdict(pk.packet_id, NF_DROP)
                elif action in (I.RESET, I.BLOCK_PAGE):
                    t = TcpView.parse(ip)
                    if t is not None:
                        if action == I.BLOCK_PAGE:
                            ev_id = d.events[0].id if d.events else ""
                            page = d.response or block_page_response(
                                d.url, d.category or "blocked", d.reason or "policy", ev_id
                            )
                            inj.block_page(t, page)
                        else:
                            inj.reset_both(t)
                    nfq.verdict(pk.packet_id, NF_DROP)
                else:
                    max_accept = max(max_accept, pk.packet_id)
            if accepted:
                verdicts[accept] = verdicts.get(accept, 0) + accepted
            if max_accept >= 0:
                # Individual verdicts were queued first, so this batch accepts only the rest.
                nfq.batch_accept(max_accept)
            nfq.flush()
    finally:
        _worker_stats(events, cfg, qnum, insp, verdicts)
        nfq.close()
        inj.close()
        _ = NF_ACCEPT


def _mirror_worker(
    cfg: ProtectionConfig,
    insp: I.Inspector,
    key: int,
    ifname: str,
    group: int,
    events: Any,
    ready: Any,
    stop: Any,
    bypass: Any = None,
) -> None:
    from vmshield.filter.mirror import RingReader

    _die_with_parent()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from vmshield.filter.bpf import flow_keys

    sink = _EventSink(events, cfg)
    reader = RingReader(ifname, fanout_group=group, fanout_members=cfg.workers)
    if bypass is not None:
        bypass.known = set()  # this worker's own flows (a restarted worker starts empty)
        bypass.added = 0
        try:
            bypass.attach(reader.sock)
        except OSError:
            bypass = None  # reported by the service at start; this worker reads everything
    native.tune_gc()
    ready.put(key)
    excl_cache: dict[bytes, str | None] = {}
    has_exclusions = bool(cfg.exclusions)
    bypass_action = I.BYPASS
    try:
        while not stop.is_set():
            for ts, frame, vlan in reader.read(timeout=0.25):
                if has_exclusions:
                    ip = frame[14:] if len(frame) > 14 and frame[12:14] == b"\x08\x00" else b""
                    if ip and _excluded(cfg, excl_cache, ip, vlan) == "no_scan":
                        continue
                if bypass is not None and frame[23:24] == b"\x06" and frame[12:14] == b"\x08\x00":
                    flags_at = 27 + (frame[14] & 0x0F) * 4
                    if len(frame) > flags_at and frame[flags_at] & 0x07:
                        # SYN, FIN or RST (always passed by the kernel filter): the flow ends,
                        # or a new connection reuses the ports: read it again from now on. Not
                        # only for this worker's own entries: a worker that died left its own.
                        fk = flow_keys(frame)
                        if fk is not None:
                            bypass.remove(fk[0])
                            bypass.remove(fk[1])
                try:
                    d = insp.inspect(frame, ts, iface=ifname, vlan=vlan, linktype=1)
                    if d.action == bypass_action and bypass is not None and not vlan:
                        # The engine is done with this flow: the kernel stops copying it.
                        fk = flow_keys(frame)
                        if fk is not None and not fk[2] & 0x07:
                            bypass.add(fk[0])
                            bypass.add(fk[1])
                except Exception as exc:
                    d = I.Decision(
                        events=[
                            Event(
                                event_type="filter",
                                severity=SEVERITY_MEDIUM,
                                data={
                                    "filter": {
                                        "state": "engine_error",
                                        "name": cfg.name,
                                        "error": repr(exc)[:300],
                                    }
                                },
                            )
                        ]
                    )
                for ev in d.events:
                    sink.emit(ev)
    finally:
        counts = {"frames": reader.frames, "kernel_bypass": int(bypass is not None)}
        if bypass is not None:
            counts["bypass_flows_added"] = bypass.added
        _worker_stats(events, cfg, key, insp, counts)
        reader.close()


FRAG_WORKER = -1  # key of the fragment watcher among the workers


def _frag_sockets(ports: list[str]) -> list[socket.socket]:
    """One AF_PACKET socket per bridge port that only ever receives IPv4 fragments."""
    import ctypes as C

    # ldh [12]; jeq 0x800 ? next : drop; ldh [20]; jset 0x3fff ? accept : drop
    prog = [
        (0x28, 0, 0, 12),
        (0x15, 0, 3, 0x0800),
        (0x28, 0, 0, 20),
        (0x45, 0, 1, 0x3FFF),
        (0x06, 0, 0, 0xFFFF),
        (0x06, 0, 0, 0),
    ]
    buf = C.create_string_buffer(b"".join(struct.pack("=HBBI", *i) for i in prog))
    fprog = struct.pack("=H6xQ", len(prog), C.addressof(buf))
    socks = []
    for port in ports:
        # ETH_P_ALL: on a bridge port only the "all" taps run before the bridge takes the frame;
        # a socket bound to ETH_P_IP would never see anything. The filter keeps fragments only.
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # receives nothing until bind
        s.setsockopt(socket.SOL_SOCKET, 26, fprog)  # SO_ATTACH_FILTER, before bind: no leak
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.bind((port, 3))
        s.setblocking(False)
        socks.append(s)
    return socks


def _frag_worker(
    cfg: ProtectionConfig, insp: I.Inspector, key: int, events: Any, ready: Any, stop: Any
) -> None:
    """Standard mode: the kernel reassembles fragments before the queue and silently drops the
    malformed ones (overlapping, oversized: teardrop, ping of death), so the queue never sees
    them. This worker reads the raw fragments from the VM ports, lets the engine report them,
    and enforces its block decisions; the kernel has already dropped the bad datagrams."""
    import select as sel

    _die_with_parent()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sink = _EventSink(events, cfg)
    blocker = _Blocker(cfg, sink)
    socks = _frag_sockets(list(cfg.ports))
    poller = sel.poll()
    by_fd = {}
    for s in socks:
        poller.register(s.fileno(), sel.POLLIN)
        by_fd[s.fileno()] = s
    ready.put(key)
    excl_cache: dict[bytes, str | None] = {}
    try:
        while not stop.is_set():
            for fd, _ev in poller.poll(250):
                s = by_fd[fd]
                for _ in range(256):
                    try:
                        frame, addr = s.recvfrom(65535)
                    except BlockingIOError:
                        break
                    if addr[2] == socket.PACKET_OUTGOING:
                        continue  # towards the VM: seen when it entered the bridge elsewhere
                    ip = frame[14:]
                    excl = _excluded(cfg, excl_cache, ip, 0)
                    if excl == "no_scan":
                        continue
                    try:
                        d = insp.inspect(frame, time.time(), iface=addr[0], linktype=1)
                    except Exception:
                        continue
                    for ev in d.events:
                        if ev.event_type in ("attack", "anomaly"):
                            sink.emit(ev)
                    if d.block_src and excl != "no_block":
                        # The tag of a raw fragment is not read here: bridge-wide scope.
                        blocker.block(d.block_src, d.block_seconds or cfg.block_seconds, d.events)
    finally:
        for s in socks:
            s.close()


# ------------------------------------------------------------------------------ service


class NetworkProtection:
    """Hosts the engine workers and the kernel side of the filter. See the module docstring."""

    def __init__(self, config: ProtectionConfig) -> None:
        config.validate()
        self.cfg = config
        self._ctx = mp.get_context("fork")
        self._events: Any = self._ctx.Queue(EVENT_QUEUE_MAX)
        self._stop = self._ctx.Event()
        self._workers: dict[int, Any] = {}
        self._writer: threading.Thread | None = None
        self._watch: threading.Thread | None = None
        self._running = False
        self._eve = open(config.eve, "ab") if config.eve else None  # noqa: SIM115
        self._lock = threading.Lock()
        self._workers_lock = threading.Lock()  # worker restarts and reloads, one at a time
        self._mirror_if = ""
        self._mirror_bypass: Any = None  # bpf.MirrorBypass in monitoring mode, when it loads
        self._mirror_bypass_error = ""
        self.state_dir = Path(config.state_dir) if config.state_dir else None
        self.restarts = 0
        self._queue_counts: dict[int, tuple[int, int]] = {}
        self._overload_reported: dict[int, float] = {}
        self._watchdog: Any = None
        # Built once here (rules compiled, URL database mapped); each forked worker gets its own
        # copy, and a restarted worker starts again from this pristine one.
        try:
            self._inspector = I.build_inspector(config.inspector)
        except Exception as exc:
            raise ProtectionError(f"cannot load the network engine: {exc}") from exc
        self.load_errors: list[str] = list(getattr(self._inspector, "load_errors", []))
        self.rule_stats: Any = getattr(self._inspector, "rule_stats", None)  # rules.LoadStats

    # -- events
    def emit(self, ev: Event) -> None:
        if self.cfg.host and ev.host is None:
            ev.host = self.cfg.host
        self._write(eve_line(ev))

    def _write(self, line: bytes) -> None:
        with self._lock:
            if self._eve is not None:
                self._eve.write(line)
                self._eve.flush()

    def _state_event(self, state: str, severity: int = SEVERITY_INFO, **extra: Any) -> None:
        data = {
            "filter": {
                "state": state,
                "name": self.cfg.name,
                "mode": self.cfg.mode,
                "bridge": self.cfg.bridge,
                "ports": list(self.cfg.ports),
                "fail_closed": self.cfg.fail_closed,
                "workers": self.cfg.workers,
                **extra,
            }
        }
        self.emit(Event(event_type="filter", severity=severity, data=data))

    def _writer_loop(self) -> None:
        while True:
            try:
                line = self._events.get(timeout=0.2)
            except queue_mod.Empty:
                if not self._running:
                    return
                continue
            except (EOFError, OSError):
                return
            self._write(line)

    # -- lifecycle
    def start(self, timeout: float = 20.0) -> None:
        if self._running:
            return
        # A watchdog of a previous, dead service of this filter reports the outage's end and goes.
        W.take_over(self.cfg.name)
        self._check_previous_run()
        self._stop.clear()
        if self.cfg.mode == "standard":
            self._start_inline(timeout)
        else:
            self._start_monitoring(timeout)
        self._running = True
        self._writer = threading.Thread(target=self._writer_loop, name="eve-writer", daemon=True)
        self._writer.start()
        self._watch = threading.Thread(target=self._watch_loop, name="watchdog", daemon=True)
        self._watch.start()
        extra: dict[str, Any] = {}
        if self.cfg.mode == "standard":
            extra = {"queues": self.cfg.queues, "set": R.set_name(self.cfg.name)}
        else:
            extra = {
                "mirror": self._mirror_if,
                "kernel_bypass": self._mirror_bypass is not None,
            }
            if self._mirror_bypass_error:
                extra["kernel_bypass_error"] = self._mirror_bypass_error
        for err in self.load_errors:
            self._state_event("rule_rejected", SEVERITY_MEDIUM, error=err)
        self._state_event("started", exclusions=[e.text() for e in self.cfg.exclusions], **extra)
        self._heartbeat(clean=False)
        if self.cfg.watchdog:
            self._watchdog = W.spawn(
                self.cfg.name,
                self.cfg.mode,
                self.cfg.queues if self.cfg.mode == "standard" else [],
                self.cfg.fail_closed,
                self.cfg.eve,
                self.cfg.host,
                self.cfg.bridge,
                self.cfg.ports,
            )

    def _spawn(self, key: int, ready: Any) -> Any:
        if key == FRAG_WORKER:
            p = self._ctx.Process(
                target=_frag_worker,
                args=(self.cfg, self._inspector, key, self._events, ready, self._stop),
                name="vmshield-fragments",
                daemon=True,
            )
        elif self.cfg.mode == "standard":
            p = self._ctx.Process(
                target=_nfq_worker,
                args=(self.cfg, self._inspector, key, self._events, ready, self._stop),
                name=f"vmshield-nfq-{key}",
                daemon=True,
            )
        else:
            p = self._ctx.Process(
                target=_mirror_worker,
                args=(
                    self.cfg,
                    self._inspector,
                    key,
                    self._mirror_if,
                    self._fanout_group(),
                    self._events,
                    ready,
                    self._stop,
                    self._mirror_bypass,
                ),
                name=f"vmshield-mirror-{key}",
                daemon=True,
            )
        p.start()
        self._workers[key] = p
        return p

    def _fanout_group(self) -> int:
        return zlib.crc32(self.cfg.name.encode()) & 0xFFFF

    def _wait_ready(self, ready: Any, keys: list[int], timeout: float) -> None:
        pending = set(keys)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            try:
                pending.discard(ready.get(timeout=0.1))
            except queue_mod.Empty:
                dead = [k for k in pending if not self._workers[k].is_alive()]
                if dead:
                    code = self._workers[dead[0]].exitcode
                    raise ProtectionError(
                        f"worker {dead} exited during start (exit code {code})"
                    ) from None
        if pending:
            raise ProtectionError(f"workers {sorted(pending)} not ready within {timeout:.0f}s")

    def _start_inline(self, timeout: float) -> None:
        ready = self._ctx.Queue()
        # Workers bind their queues before the rules exist: no packet is ever queued to nobody.
        try:
            for q in [*self.cfg.queues, FRAG_WORKER]:
                self._spawn(q, ready)
            self._wait_ready(ready, [*self.cfg.queues, FRAG_WORKER], timeout)
            R.InlineRules(
                self.cfg.name,
                self.cfg.ports,
                self.cfg.queues[0],
                len(self.cfg.queues),
                self.cfg.fail_closed,
                self.cfg.exclusions,
            ).install()
        except BaseException:
            self._teardown()
            raise

    def _start_monitoring(self, timeout: float) -> None:
        from vmshield.filter.mirror import install_mirror

        try:
            self._mirror_if = install_mirror(self.cfg.name, self.cfg.ports)
            if self.cfg.mirror_bypass:
                from vmshield.filter.bpf import MirrorBypass

                try:
                    self._mirror_bypass = MirrorBypass()
                except OSError as exc:  # reported in the started event; workers read it all
                    self._mirror_bypass_error = str(exc)[:300]
            ready = self._ctx.Queue()
            keys = list(range(self.cfg.workers))
            for k in keys:
                self._spawn(k, ready)
            self._wait_ready(ready, keys, timeout)
        except BaseException:
            self._teardown()
            raise

    def _watch_loop(self) -> None:
        last_beat = 0.0
        while self._running:
            time.sleep(0.2)
            if not self._running:
                return
            with self._workers_lock:
                for key, p in list(self._workers.items()):
                    if p.is_alive() or not self._running:
                        continue
                    # Fail-open: the kernel bypasses this queue meanwhile; fail-closed: it drops.
                    self._state_event(
                        "worker_down",
                        SEVERITY_HIGH,
                        worker=key,
                        exitcode=p.exitcode,
                        traffic="blocked"
                        if self.cfg.fail_closed and self.cfg.mode == "standard"
                        else "uninspected",
                    )
                    ready = self._ctx.Queue()
                    self._spawn(key, ready)
                    self.restarts += 1
                    try:
                        self._wait_ready(ready, [key], 20.0)
                        self._state_event("worker_restarted", worker=key)
                    except ProtectionError as exc:
                        self._state_event(
                            "worker_failed", SEVERITY_HIGH, worker=key, error=str(exc)
                        )
            if time.monotonic() - last_beat >= 1.0:
                last_beat = time.monotonic()
                self._heartbeat(clean=False)
                if self.cfg.mode == "standard":
                    self._check_queues()

    def reload(self, config: ProtectionConfig, timeout: float = 20.0) -> float:
        """Apply a new configuration to the running service: engine settings (rules, URL
        database, attack detectors, block duration), exclusions and VM names.

        The engine is built and checked first: one that cannot load raises ProtectionError and
        the running configuration stays. Then the workers are replaced by workers holding the
        new engine (flow and attack state start afresh). Between the old workers leaving their
        queues and the new ones binding them, traffic is handled as during a worker restart
        (accepted uninspected when fail-open, dropped when fail-closed); the seconds that took
        are returned and reported in the `reloaded` event. The kernel rules stay as installed at
        start: exclusions given here are applied by the workers, and the name, bridge, ports,
        mode, worker count, queues and failure mode need a restart.
        """
        fixed = ("name", "bridge", "ports", "mode", "workers", "queue_base", "fail_closed")
        changed = [k for k in fixed if getattr(config, k) != getattr(self.cfg, k)]
        if changed:
            raise ProtectionError(
                f"{', '.join(changed)}: cannot change while the service runs; restart it"
            )
        config.validate()
        try:
            inspector = I.build_inspector(config.inspector)
        except Exception as exc:
            raise ProtectionError(f"cannot load the network engine: {exc}") from exc
        gap = 0.0
        with self._workers_lock:
            old_stop, old = self._stop, list(self._workers.values())
            self.cfg, self._inspector = config, inspector
            self.load_errors = list(getattr(inspector, "load_errors", []))
            self.rule_stats = getattr(inspector, "rule_stats", None)
            if self._running:
                t0 = time.monotonic()
                self._stop = self._ctx.Event()  # the new workers' own; the old ones stop now
                old_stop.set()
                for p in old:
                    p.join(timeout=3.0)
                    if p.is_alive():
                        p.kill()
                        p.join(timeout=2.0)
                self._workers.clear()
                keys = (
                    [*self.cfg.queues, FRAG_WORKER]
                    if self.cfg.mode == "standard"
                    else list(range(self.cfg.workers))
                )
                ready = self._ctx.Queue()
                for k in keys:
                    self._spawn(k, ready)
                self._wait_ready(ready, keys, timeout)
                gap = time.monotonic() - t0
        for err in self.load_errors:
            self._state_event("rule_rejected", SEVERITY_MEDIUM, error=err)
        self._state_event(
            "reloaded",
            gap_seconds=round(gap, 3),
            exclusions=[e.text() for e in config.exclusions],
            block_seconds=config.block_seconds,
        )
        return gap

    def _check_queues(self) -> None:
        """Overload is never silent: a queue near full means the kernel is about to accept
        packets uninspected (fail-open) or drop them (fail-closed); drops are counted."""
        try:
            lines = Path("/proc/net/netfilter/nfnetlink_queue").read_text().splitlines()
        except OSError:
            return
        now = time.monotonic()
        for line in lines:
            f = line.split()
            if len(f) < 7 or not f[0].isdigit() or int(f[0]) not in self.cfg.queues:
                continue
            qnum, total, dropped, user_dropped = int(f[0]), int(f[2]), int(f[5]), int(f[6])
            prev = self._queue_counts.get(qnum, (0, 0))
            full = total >= QUEUE_MAXLEN * 0.9
            lost = (dropped - prev[0]) + (user_dropped - prev[1])
            self._queue_counts[qnum] = (dropped, user_dropped)
            if (full or lost > 0) and now - self._overload_reported.get(qnum, 0.0) >= 10.0:
                self._overload_reported[qnum] = now
                self._state_event(
                    "overload",
                    SEVERITY_HIGH,
                    queue=qnum,
                    queued=total,
                    maxlen=QUEUE_MAXLEN,
                    dropped=lost,
                    traffic="blocked" if self.cfg.fail_closed else "uninspected when full",
                )

    def _heartbeat(self, clean: bool) -> None:
        if self.state_dir is None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_dir / "heartbeat.tmp"
        tmp.write_text(
            json.dumps(
                {
                    "time": time.time(),
                    "clean": clean,
                    "pid": os.getpid(),
                    "mode": self.cfg.mode,
                    "fail_closed": self.cfg.fail_closed,
                }
            )
        )
        os.replace(tmp, self.state_dir / "heartbeat")

    def _check_previous_run(self) -> None:
        """An unclean previous run means traffic went uninspected (or blocked) while we were down."""
        if self.state_dir is None:
            return
        try:
            hb = json.loads((self.state_dir / "heartbeat").read_text())
        except (OSError, ValueError):
            return
        if hb.get("clean"):
            return
        since = float(hb.get("time", 0))
        fail_closed = bool(hb.get("fail_closed")) and hb.get("mode") == "standard"
        self._state_event(
            "outage",
            SEVERITY_HIGH,
            traffic="blocked" if fail_closed else "uninspected",
            since=since,
            until=time.time(),
            seconds=round(time.time() - since, 3),
            previous_pid=hb.get("pid"),
        )

    def stop(self) -> None:
        if not self._running and not self._workers:
            return
        self._state_event("stopping")
        W.stop_watchdog(self._watchdog)
        self._watchdog = None
        self._teardown()
        self._state_event("stopped")
        self._heartbeat(clean=True)
        if self._eve is not None:
            with self._lock:
                self._eve.close()
                self._eve = None

    def _teardown(self) -> None:
        # Rules first: with the workers gone a fail-closed queue would drop everything.
        if self.cfg.mode == "standard":
            R.InlineRules(self.cfg.name, self.cfg.ports, 0, 1).remove()
        else:
            from vmshield.filter.mirror import remove_mirror

            remove_mirror(self.cfg.name, self.cfg.ports)
        self._running = False
        self._stop.set()
        for p in self._workers.values():
            p.join(timeout=3.0)
            if p.is_alive():
                p.kill()
                p.join(timeout=2.0)
        self._workers.clear()
        if self._mirror_bypass is not None:
            self._mirror_bypass.close()
            self._mirror_bypass = None
        if self._writer is not None:
            self._writer.join(timeout=3.0)
            self._writer = None
        # Drain what the workers emitted last.
        while True:
            try:
                self._write(self._events.get_nowait())
            except (queue_mod.Empty, EOFError, OSError):
                break

    def status(self) -> dict[str, Any]:
        return {
            "name": self.cfg.name,
            "mode": self.cfg.mode,
            "running": self._running,
            "workers": {k: p.is_alive() for k, p in self._workers.items()},
            "restarts": self.restarts,
            "blocked": [e.__dict__ for e in R.blocked(self.cfg.name)]
            if self.cfg.mode == "standard" and self._running
            else [],
        }


# ------------------------------------------------------------------------------ entry point


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m vmshield.filter.service",
        description="vmshield network protection (virtual filter) for one bridge",
    )
    ap.add_argument("--mode", choices=MODES, required=True)
    ap.add_argument("--bridge", required=True)
    ap.add_argument("--ports", required=True, help="comma-separated bridge ports of protected VMs")
    ap.add_argument("--name", required=True, help="filter name (chains, ipset, mirror), ≤ 9 chars")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--fail-closed", action="store_true", help="stop traffic when the SVM is down")
    ap.add_argument("--queue-base", type=int)
    ap.add_argument("--block-seconds", type=int, default=600)
    ap.add_argument(
        "--exclude", action="append", default=[], metavar="'no_scan|no_block ADDR|vlan N'"
    )
    ap.add_argument(
        "--config", action="append", default=[], help="TOML service configuration (repeatable)"
    )
    ap.add_argument(
        "--vm", action="append", default=[], metavar="ADDRESS=NAME", help="VM name for events"
    )
    ap.add_argument("--eve", help="EVE JSON output file")
    ap.add_argument("--state-dir")
    ap.add_argument("--ready-file", help="created once traffic is protected")
    args = ap.parse_args(argv)
    cfg = ProtectionConfig(
        name=args.name,
        bridge=args.bridge,
        ports=[p for p in args.ports.split(",") if p],
        mode=args.mode,
        workers=args.workers,
        fail_closed=args.fail_closed,
        queue_base=args.queue_base,
        block_seconds=args.block_seconds,
        eve=args.eve,
        state_dir=args.state_dir,
        host=socket.gethostname(),
    )
    try:
        for path in args.config:
            load_config_file(path, cfg)
        for item in args.vm:
            addr, _, vm = item.partition("=")
            if not vm:
                raise ProtectionError(f"--vm expects ADDRESS=NAME, got {item!r}")
            cfg.vm_names[addr] = vm
        for i, text in enumerate(args.exclude, 1):
            cfg.exclusions.append(parse_exclusion(text, f"--exclude #{i}"))
        np_ = NetworkProtection(cfg)
    except (ProtectionError, ExclusionError, ValueError) as exc:
        print(f"vmshield network protection: {exc}", file=sys.stderr)
        return 2
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    try:
        np_.start()
    except Exception as exc:
        print(f"vmshield network protection: cannot start: {exc}", file=sys.stderr)
        return 1
    if args.ready_file:
        Path(args.ready_file).write_text(str(os.getpid()))
    print(
        f"network protection {cfg.name}: {cfg.mode} on {cfg.bridge} ({', '.join(cfg.ports)})",
        flush=True,
    )
    try:
        done.wait()
    finally:
        np_.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
