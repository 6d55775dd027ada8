"""Network engine benchmark: packets/s and Mbit/s over a generated capture, 0 and 1 000 rules.

    make bench-nids            # or: .venv/bin/python bench/nids.py [--packets 1000000]

The capture (HTTP, DNS, TLS, bulk TCP and some attacks: a port scan, a UDP flood, an ICMP sweep,
overlapping fragments) is generated with plain struct packing and cached under /var/tmp, keyed by
its parameters. The 1 000 rules come from the rule engine's generator
(`vmshield.engines.net.rules.gen`), whose trigger URIs appear in a share of the HTTP requests.
The URL database figures come from bench/urls.py (`run()`), unless --no-urls.

The peer is Suricata (`scripts/install-suricata`, run by bootstrap, installs Debian's 7.0 from
bookworm-backports; skipped with --no-peer), run on the same capture with the same rules, one
packet thread (`--runmode single`, checksums ignored as ours: `-k none`). Both tools are measured
the same way, as whole commands: CPU seconds of the process (`wait4`) over the full capture, minus
those of the same command over the capture's first 1 000 packets (start-up: rule loading and
compiling), in two output settings: alerts only, and the full EVE log (alerts, HTTP, DNS, TLS and
flow records).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from vmshield import native
from vmshield.cli.nids import run_capture
from vmshield.engines.net.config import EngineConfig
from vmshield.engines.net.engine import Action, Engine
from vmshield.engines.net.pcap import read_packets

CACHE_DIR = Path(os.environ.get("VMSHIELD_BENCH_CACHE", "/var/tmp"))
FORMAT_VERSION = 2

_ETH = bytes.fromhex("020000000002020000000001") + b"\x08\x00"
_ETH_R = bytes.fromhex("020000000001020000000002") + b"\x08\x00"


def _ip4(a: str) -> bytes:
    return bytes(int(x) for x in a.split("."))


def _ipv4(
    src: bytes, dst: bytes, proto: int, payload: bytes, ipid: int = 0, frag: int = 0
) -> bytes:
    # Checksums are left at zero: the engine does not validate them (capture offloading).
    return (
        struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ipid, frag, 64, proto, 0, src, dst)
        + payload
    )


def _tcp(sport: int, dport: int, seq: int, ack: int, flags: int, data: bytes = b"") -> bytes:
    return (
        struct.pack(
            "!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 0x50, flags, 65535, 0, 0
        )
        + data
    )


def _udp(sport: int, dport: int, data: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data


class _Writer:
    def __init__(self, f) -> None:  # type: ignore[no-untyped-def]
        self.f = f
        self.n = 0
        self.bytes = 0
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))

    def write(self, ts: float, frame: bytes) -> None:
        sec = int(ts)
        self.f.write(
            struct.pack("<IIII", sec, int((ts - sec) * 1e6), len(frame), len(frame)) + frame
        )
        self.n += 1
        self.bytes += len(frame)


class _Gen:
    def __init__(self, w: _Writer, rng: random.Random) -> None:
        self.w = w
        self.rng = rng
        self.ts = 1_700_000_000.0
        self.port = 10000

    def tick(self) -> float:
        self.ts += 0.00002
        return self.ts

    def tcp_session(
        self, c: bytes, s: bytes, dport: int, exchanges: list[tuple[bytes, bytes]], mss: int = 1448
    ) -> None:
        self.port = 10000 + (self.port - 9999) % 50000
        sp = self.port
        cs, ss = self.rng.randrange(1 << 32), self.rng.randrange(1 << 32)
        w, t = self.w, self.tick
        w.write(t(), _ETH + _ipv4(c, s, 6, _tcp(sp, dport, cs, 0, 0x02)))
        w.write(t(), _ETH_R + _ipv4(s, c, 6, _tcp(dport, sp, ss, cs + 1, 0x12)))
        cs += 1
        ss += 1
        w.write(t(), _ETH + _ipv4(c, s, 6, _tcp(sp, dport, cs, ss, 0x10)))
        for req, resp in exchanges:
            for off in range(0, len(req), mss):
                d = req[off : off + mss]
                w.write(t(), _ETH + _ipv4(c, s, 6, _tcp(sp, dport, cs, ss, 0x18, d)))
                cs += len(d)
            for off in range(0, len(resp), mss):
                d = resp[off : off + mss]
                w.write(t(), _ETH_R + _ipv4(s, c, 6, _tcp(dport, sp, ss, cs, 0x18, d)))
                ss += len(d)
                if (off // mss) % 2:
                    w.write(t(), _ETH + _ipv4(c, s, 6, _tcp(sp, dport, cs, ss, 0x10)))
        w.write(t(), _ETH + _ipv4(c, s, 6, _tcp(sp, dport, cs, ss, 0x11)))
        w.write(t(), _ETH_R + _ipv4(s, c, 6, _tcp(dport, sp, ss, cs + 1, 0x11)))
        w.write(t(), _ETH + _ipv4(c, s, 6, _tcp(sp, dport, cs + 1, ss + 1, 0x10)))


def _dns_msg(qid: int, name: str, answer: bool) -> bytes:
    q = (
        b"".join(bytes([len(x)]) + x.encode() for x in name.split("."))
        + b"\x00"
        + b"\x00\x01\x00\x01"
    )
    if not answer:
        return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q
    rr = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 300, 4) + bytes([93, 184, 216, qid % 250])
    return struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0) + q + rr


def _client_hello(sni: str) -> bytes:
    name = sni.encode()
    sni_ext = (
        struct.pack("!HHH", 0, len(name) + 5, len(name) + 3)
        + b"\x00"
        + struct.pack("!H", len(name))
        + name
    )
    ext = (
        sni_ext
        + struct.pack("!HHH", 10, 6, 4)
        + struct.pack("!HH", 29, 23)
        + struct.pack("!HHB", 11, 2, 1)
        + b"\x00"
    )
    ext += struct.pack("!HHB", 43, 3, 2) + b"\x03\x04"
    ciphers = struct.pack("!5H", 0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F)
    body = (
        b"\x03\x03" + bytes(32) + b"\x00" + struct.pack("!H", len(ciphers)) + ciphers + b"\x01\x00"
    )
    body += struct.pack("!H", len(ext)) + ext
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


def _server_hello() -> bytes:
    ext = struct.pack("!HHH", 43, 2, 0x0304)
    body = (
        b"\x03\x03"
        + bytes(32)
        + b"\x00"
        + struct.pack("!H", 0x1301)
        + b"\x00"
        + struct.pack("!H", len(ext))
        + ext
    )
    hs = b"\x02" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x03" + struct.pack("!H", len(hs)) + hs + b"\x14\x03\x03\x00\x01\x01"


def generate(path: Path, target: int, seed: int = 7) -> tuple[int, int]:
    from vmshield.engines.net.rules.gen import TRIGGERS

    rng = random.Random(seed)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        w = _Writer(f)
        g = _Gen(w, rng)
        clients = [_ip4(f"10.0.{i // 250}.{1 + i % 250}") for i in range(500)]
        servers = [_ip4(f"192.168.{i // 250}.{1 + i % 250}") for i in range(100)]
        k = 0
        while w.n < target:
            k += 1
            c, s = rng.choice(clients), rng.choice(servers)
            r = rng.random()
            if r < 0.45:  # HTTP, keep-alive, 1-3 requests
                ex = []
                for _ in range(rng.randint(1, 3)):
                    uri = (
                        rng.choice(TRIGGERS)
                        if rng.random() < 0.02
                        else f"/static/{rng.randrange(10**6)}/app.js"
                    )
                    req = (f"GET {uri} HTTP/1.1\r\nHost: www{rng.randrange(1000)}.example.com\r\n"
                           "User-Agent: Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0\r\nAccept: */*\r\n\r\n").encode()  # fmt: skip
                    body = os.urandom(rng.choice([200, 1500, 6000, 20000]))
                    resp = (
                        b"HTTP/1.1 200 OK\r\nContent-Type: text/javascript\r\nContent-Length: "
                        + str(len(body)).encode()
                        + b"\r\n\r\n"
                        + body
                    )
                    ex.append((req, resp))
                g.tcp_session(c, s, 80, ex)
            elif r < 0.65:  # DNS over UDP
                qid = rng.randrange(65536)
                name = f"host{rng.randrange(100000)}.example{rng.randrange(50)}.net"
                sp = 20000 + rng.randrange(40000)
                w.write(g.tick(), _ETH + _ipv4(c, s, 17, _udp(sp, 53, _dns_msg(qid, name, False))))
                w.write(g.tick(), _ETH_R + _ipv4(s, c, 17, _udp(53, sp, _dns_msg(qid, name, True))))
            elif r < 0.85:  # TLS with some encrypted data
                appdata = [(b"\x17\x03\x03" + struct.pack("!H", 1200) + os.urandom(1200), b"\x17\x03\x03" + struct.pack("!H", 4000) + os.urandom(4000))
                           for _ in range(rng.randint(1, 4))]  # fmt: skip
                g.tcp_session(
                    c,
                    s,
                    443,
                    [
                        (_client_hello(f"api{rng.randrange(500)}.example.org"), _server_hello()),
                        *appdata,
                    ],
                )
            elif r < 0.97:  # bulk TCP transfer (backup, file copy)
                g.tcp_session(
                    c,
                    s,
                    445,
                    [
                        (
                            b"\x00\x00\x00\x40" + os.urandom(64),
                            os.urandom(rng.choice([64_000, 256_000])),
                        )
                    ],
                )
            else:  # attacks
                a = rng.random()
                src = _ip4(f"172.16.{rng.randrange(250)}.{1 + rng.randrange(250)}")
                if a < 0.4:  # SYN port scan
                    for port in range(1, 200):
                        w.write(
                            g.tick(),
                            _ETH
                            + _ipv4(src, s, 6, _tcp(40000, port, rng.randrange(1 << 32), 0, 0x02)),
                        )
                elif a < 0.7:  # UDP flood
                    for _ in range(300):
                        w.write(
                            g.tick(),
                            _ETH
                            + _ipv4(
                                src, s, 17, _udp(rng.randrange(1024, 65535), 9999, os.urandom(64))
                            ),
                        )
                elif a < 0.9:  # ICMP sweep
                    for h in range(1, 200):
                        w.write(
                            g.tick(),
                            _ETH
                            + _ipv4(
                                src,
                                _ip4(f"192.168.0.{h}"),
                                1,
                                b"\x08\x00\x00\x00" + struct.pack("!HH", 1, h),
                            ),
                        )
                else:  # overlapping fragments (teardrop)
                    ipid = rng.randrange(65536)
                    w.write(g.tick(), _ETH + _ipv4(src, s, 17, b"A" * 48, ipid, 0x2000))
                    w.write(g.tick(), _ETH + _ipv4(src, s, 17, b"B" * 40, ipid, 3))
        n, nbytes = w.n, w.bytes
    tmp.rename(path)
    return n, nbytes


def capture(target: int) -> Path:
    path = CACHE_DIR / f"vmshield-bench-nids-v{FORMAT_VERSION}-{target}.pcap"
    if not path.exists():
        t0 = time.perf_counter()
        n, _ = generate(path, target)
        print(
            f"generated {path} ({n} packets, {path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f} s"
        )
    return path


def run_engine(
    path: Path, rules: object | None, attacks: object | None, profile: bool = False
) -> dict[str, float]:
    """One pass over the capture, read from disk as `vmshield nids` does (reading included, and
    the same compiled loop: `Engine.process_capture`)."""
    engine = Engine(EngineConfig(mode="ips"), rules=rules, attacks=attacks)
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    if profile:
        import cProfile
        import pstats

        pr = cProfile.Profile()
        pr.enable()
    counted: list[int] = [0]

    def count(_ev: object) -> None:
        counted[0] += 1

    actions = [0] * len(Action)
    native.tune_gc()  # the load frozen out of the collector before the clock starts
    t0 = time.perf_counter()
    c0 = time.process_time()
    with open(path, "rb") as f:
        run_capture(engine, read_packets(f, name=str(path)), count, actions)  # as `vmshield nids`
    events = counted[0] + len(engine.flush())
    n, nbytes = engine.n_packets, engine.n_bytes
    cpu = time.process_time() - c0
    dt = time.perf_counter() - t0
    if profile:
        pr.disable()
        pstats.Stats(pr).sort_stats("tottime").print_stats(25)
    st = engine.stats()
    return {
        "packets": n,
        "bytes": nbytes,
        "seconds": dt,
        "cpu_seconds": cpu,
        "pps": n / cpu,
        "pps_wall": n / dt,
        "mbps": nbytes * 8 / cpu / 1e6,
        "events": events,
        "alerts": st["alerts"],
        "flows": st["flows_created"],
        "rss_growth_mb": (proc.memory_info().rss - rss0) / 2**20,
        "bypassed_flows": st["bypassed_flows"],
        "attack_events": st["attack_events"],
    }


PEER_HEAD_PACKETS = 1000


def _head_of_capture(src: Path, dst: Path, n: int) -> None:
    """The global header and the first `n` records of a pcap file (start-up runs)."""
    with open(src, "rb") as f, open(dst, "wb") as out:
        out.write(f.read(24))
        for _ in range(n):
            hdr = f.read(16)
            if len(hdr) < 16:
                break
            out.write(hdr + f.read(struct.unpack("<I", hdr[8:12])[0]))


def _cpu_of(cmd: list[str], cwd: Path) -> tuple[float, float, str]:
    """(CPU seconds, wall seconds, output) of one command, its threads included."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    out = proc.stdout.read() if proc.stdout else ""
    _pid, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {out[-1500:]}")
    return ru.ru_utime + ru.ru_stime, wall, out


def _peer_commands(
    tool: str, capture_file: Path, rules: Path, full_eve: bool, log: Path
) -> list[str]:
    log.mkdir(parents=True, exist_ok=True)
    if tool == "suricata":
        cmd = ["suricata", "-r", str(capture_file), "-S", str(rules), "-k", "none"]
        cmd += ["--runmode", "single", "-l", str(log)]
        if not full_eve:  # fast.log (outputs.0) stays: the alerts, one line each
            cmd += ["--set", "outputs.1.eve-log.enabled=no"]
        return cmd
    conf = log / "engine.toml"
    # Suricata has no attack detectors: ours are off here, for the same work.
    conf.write_text(
        "[outputs]\n"
        + "".join(f"{k} = {'true' if full_eve else 'false'}\n" for k in ("http", "dns", "tls"))
        + f"flow = {'true' if full_eve else 'false'}\nanomaly = {'true' if full_eve else 'false'}\n"
    )
    cmd = [sys.executable, "-m", "vmshield", "nids", "--pcap", str(capture_file)]
    return cmd + [
        "--rules",
        str(rules),
        "--config",
        str(conf),
        "--no-attacks",
        "--eve",
        str(log / "eve.json"),
    ]


def _alerts_in(tool: str, log: Path) -> int:
    if tool == "suricata":
        with open(log / "fast.log", "rb") as f:
            return sum(1 for _ in f)
    with open(log / "eve.json", "rb") as f:
        return sum(1 for line in f if b'"event_type":"alert"' in line)


@dataclass
class PeerRow:
    """One tool in one output setting: its least disturbed run of `runs`."""

    tool: str
    output: str
    cpu: float = float("inf")  # whole command, full capture
    wall: float = 0.0
    startup_cpu: float = float("inf")  # whole command, first PEER_HEAD_PACKETS packets
    alerts: int = 0
    eve_mb: float = 0.0
    cpus: list[float] = field(default_factory=list)  # every run, for the spread

    def pps(self, packets: int) -> float:
        return (packets - PEER_HEAD_PACKETS) / max(self.cpu - self.startup_cpu, 1e-9)


def peer_comparison(path: Path, rules_text: str, packets: int, runs: int = 3) -> list[PeerRow]:
    """Both tools over the same capture and rules, as whole commands (see the module doc).
    Each command runs `runs` times, the tools alternated; the least CPU of each is kept (this
    machine's speed moves between runs; the least is the least disturbed)."""
    rows: list[PeerRow] = []
    with tempfile.TemporaryDirectory(prefix="vmshield-bench-peer-") as tmp_name:
        tmp = Path(tmp_name)
        rules = tmp / "bench.rules"
        rules.write_text(rules_text + "\n")
        head = tmp / "head.pcap"
        _head_of_capture(path, head, PEER_HEAD_PACKETS)
        for full_eve in (False, True):
            output = "full EVE" if full_eve else "alerts only"
            best = {tool: PeerRow(tool, output) for tool in ("vmshield", "suricata")}
            for _ in range(runs):
                for tool, row in best.items():
                    log = tmp / f"{tool}-{int(full_eve)}"
                    start_cpu, _w, _o = _cpu_of(
                        _peer_commands(tool, head, rules, full_eve, log / "head"), tmp
                    )
                    shutil.rmtree(log / "head")
                    cpu, wall, out = _cpu_of(_peer_commands(tool, path, rules, full_eve, log), tmp)
                    if tool == "suricata" and not re.search(
                        rf"\b{packets} packets\b", out + (log / "suricata.log").read_text()
                    ):
                        raise RuntimeError(f"suricata did not read {packets} packets: {out[-800:]}")
                    row.cpus.append(round(cpu, 2))
                    row.startup_cpu = min(row.startup_cpu, start_cpu)
                    if cpu < row.cpu:
                        eve = log / "eve.json"
                        row.cpu, row.wall, row.alerts = cpu, wall, _alerts_in(tool, log)
                        row.eve_mb = eve.stat().st_size / 1e6 if eve.exists() else 0.0
                    shutil.rmtree(log)
            rows.extend(best.values())
    return rows


def _print_peer(rows: list[PeerRow], packets: int) -> None:
    print("side by side, whole commands, same capture and rules (attack detection off):")
    for r in rows:
        print(
            f"  {r.output:<11} {r.tool:<9} {r.pps(packets):>9,.0f} packets/s per CPU second "
            f"after start-up ({r.cpu:.1f} s CPU, {r.wall:.1f} s wall, start-up "
            f"{r.startup_cpu:.2f} s CPU), alerts {r.alerts}, EVE {r.eve_mb:.0f} MB; "
            f"CPU s of each run {r.cpus}"
        )
    for output in ("alerts only", "full EVE"):
        ours = next(r for r in rows if r.tool == "vmshield" and r.output == output)
        peer = next(r for r in rows if r.tool == "suricata" and r.output == output)
        print(
            f"  {output}: vmshield / suricata = {ours.pps(packets) / peer.pps(packets):.2f}x "
            f"(packets/s per CPU second), {peer.wall / ours.wall:.2f}x (wall, whole command)"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=1_000_000, help="capture size (cached)")
    ap.add_argument("--rules", type=int, default=1000)
    ap.add_argument("--no-urls", action="store_true", help="skip the URL database figures")
    ap.add_argument("--no-attacks", action="store_true")
    ap.add_argument("--profile", action="store_true", help="cProfile the 1 000-rule run")
    ap.add_argument("--no-peer", action="store_true", help="skip the side-by-side run of Suricata")
    ap.add_argument("--peer-runs", type=int, default=3, help="runs of each side-by-side command")
    args = ap.parse_args()

    path = capture(args.packets)
    print(f"capture: {path} ({path.stat().st_size / 1e6:.0f} MB)")
    print(f"engine: {native.describe()}")

    from vmshield.engines.net.rules import Classification, RuleSet, Variables
    from vmshield.engines.net.rules.gen import generate as gen_rules

    t0 = time.perf_counter()
    rules_text = "\n".join(gen_rules(args.rules))
    rs = RuleSet.load(
        texts=[rules_text],
        variables=Variables.default(),
        classification=Classification.default(),
    )
    print(
        f"rules: {rs.stats.loaded} loaded, {rs.stats.rejected} rejected in {time.perf_counter() - t0:.2f} s"
    )

    def attacks() -> object | None:
        if args.no_attacks:
            return None
        try:
            from vmshield.engines.net.attacks import AttackDetector
        except ImportError:
            return None
        return AttackDetector()

    print(f"attack detection: {'on' if attacks() is not None else 'off (not available)'}")
    rows = []
    for label, rules in (("0 rules", None), (f"{rs.stats.loaded} rules", rs)):
        r = run_engine(path, rules, attacks(), profile=args.profile and rules is not None)
        rows.append((label, r))
        print(
            f"{label:>10}: {r['pps']:>9,.0f} packets/s  {r['mbps']:>6,.0f} Mbit/s per CPU second "
            f"({r['pps_wall']:,.0f} packets/s wall)  {r['packets']:,} packets, "
            f"cpu {r['cpu_seconds']:.1f} s, alerts {r['alerts']:,}, attack events "
            f"{r['attack_events']:,}, events {r['events']:,}, flows {r['flows']:,}, "
            f"bypassed {r['bypassed_flows']:,}, RSS +{r['rss_growth_mb']:.0f} MB"
        )
    print(f"peak RSS: {psutil.Process().memory_info().rss / 2**20:.0f} MB")
    if args.no_peer:
        pass
    elif shutil.which("suricata") is None:
        print("side by side: suricata not installed (scripts/install-suricata installs it)")
    else:
        packets = int(rows[0][1]["packets"])
        _print_peer(peer_comparison(path, rules_text, packets, args.peer_runs), packets)
    if not args.no_urls:
        sys.path.insert(0, str(Path(__file__).parent))
        try:
            import urls as url_bench  # bench/urls.py (URL database figures)
        except ImportError:
            print("URL database: bench/urls.py not available")
        else:
            out = url_bench.run()
            print(
                "URL database: "
                + "  ".join(
                    f"{k} {v:,.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in out.items()
                )
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
