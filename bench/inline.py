"""Inline filter benchmark: the lab's bridge without vmshield, in standard mode, in monitoring mode.

    .venv/bin/python bench/inline.py [--quick] [--json FILE]

For each mode (a fresh lab of 2 VMs each, prefix vmsB<random>, removed at the end):
  - bulk TCP throughput vm1 -> vm2 (iperf3, one stream, 5 s), and a bidirectional bulk HTTP
    exchange (20 MB up, 100 MB down on one connection: both directions pass the engine's
    inspection depth, so standard mode can bypass the flow);
  - ping round trip vm1 -> vm2 (400 echo requests 5 ms apart): median and p99; and 0.5 ms
    apart ("warm": after 5 ms idle this VM runs the whole path several times slower);
  - 64-byte UDP frames (iperf3 -u -l 18): the highest offered rate, stepping up, that arrives
    with <= 0.1 % loss, every packet through the engine in standard mode. The UDP flood detector
    is switched off for this run (it would rightly block the sender); everything else inspects.
With --worker-loop: the capacity of the inline worker loop, measured on its CPU time while it
drains a queue filled beforehand (so the sender's speed and the machine's other load do not
bound it): (a) the NFQUEUE client alone (receive, parse, batched accept), (b) the service's real
worker (the lab's policy, the engine, every packet inspected; the worker is stopped with SIGSTOP
while the queue fills, then continued).
Needs root. Prints a table; figures go to BENCHMARKS.md by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from vmshield.lab.lab import Lab, LabState  # noqa: E402

FAST_RATES = [10_000, 20_000, 30_000, 40_000, 50_000, 75_000, 100_000, 150_000, 200_000]
RATES = [5_000, 10_000, 15_000, 20_000, 30_000, 50_000, 75_000, 100_000, 150_000, 200_000, 300_000]


def ns(st: LabState, host: str, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", st.host(host).netns, *cmd],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def iperf_server(st: LabState) -> subprocess.Popen[bytes]:
    p = subprocess.Popen(
        ["ip", "netns", "exec", st.host("vm2").netns, "iperf3", "-s"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.3)
    return p


def tcp_bulk(st: LabState, seconds: int) -> float:
    out = ns(st, "vm1", "iperf3", "-c", st.host("vm2").address, "-t", str(seconds), "-J")
    doc = json.loads(out.stdout)
    return float(doc["end"]["sum_received"]["bits_per_second"]) / 1e9


def http_bidir(st: LabState, tmp: Path) -> float:
    up = tmp / "up.bin"
    if not up.exists():
        up.write_bytes(b"u" * 20_000_000)
    t0 = time.monotonic()
    out = ns(
        st,
        "vm1",
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{size_upload} %{size_download}",
        "--data-binary",
        f"@{up}",
        f"http://{st.host('vm2').address}/bytes/64000000",
    )
    dt = time.monotonic() - t0
    a, b = (int(x) for x in out.stdout.split())
    return (a + b) * 8 / dt / 1e9


def rtt(st: LabState, count: int, interval: str = "0.005") -> tuple[float, float]:
    out = ns(st, "vm1", "ping", "-c", str(count), "-i", interval, "-W", "1", st.host("vm2").address)
    times = sorted(float(x) for x in re.findall(r"time=([\d.]+) ms", out.stdout))
    if not times:
        raise RuntimeError(f"ping failed: {out.stdout[-300:]}")
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    return statistics.median(times) * 1000, p99 * 1000  # microseconds


def _queued(st: LabState) -> int:
    """Packets handed to the filter's queues so far (the kernel numbers each queued packet; what
    a fail-open queue lets through uninspected when full never gets a number)."""
    base = 1000 + (zlib.crc32(st.prefix.encode()) % 4000) * 8
    total = 0
    try:
        lines = Path("/proc/net/netfilter/nfnetlink_queue").read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        f = line.split()
        if len(f) >= 8 and f[0].isdigit() and base <= int(f[0]) < base + 16:
            total += int(f[7])
    return total


def _iperf_udp(st: LabState, rate: int, seconds: int) -> subprocess.CompletedProcess[str]:
    return ns(
        st,
        "vm1",
        "iperf3",
        "-c",
        st.host("vm2").address,
        "-u",
        "-l",
        "18",
        "-b",
        str(rate * 18 * 8),
        "-t",
        str(seconds),
        "-w",
        "4M",  # socket buffers: without them iperf3 itself loses datagrams at 25 000/s
        "-J",
        timeout=seconds + 30,
    )


def small_packets(st: LabState, seconds: int, rates: list[int]) -> dict[str, Any]:
    best: dict[str, Any] = {"pps": 0, "inspected_pps": 0}
    for rate in rates:
        q0 = _queued(st)
        try:
            out = _iperf_udp(st, rate, seconds)
        except subprocess.TimeoutExpired:
            # iperf3 sometimes never finishes its UDP test on a machine this loaded.
            best.setdefault("steps", []).append({"offered": rate, "error": "iperf3 timed out"})
            break
        try:
            s = json.loads(out.stdout)["end"]["sum"]
        except (ValueError, KeyError):
            break
        sent = int(s.get("packets", 0))
        lost = float(s.get("lost_percent", 100.0))
        achieved = sent / float(s.get("seconds", seconds) or seconds)
        queued = _queued(st) - q0
        row = {
            "offered": rate,
            "sent_pps": round(achieved),
            "lost_percent": round(lost, 3),
            # Queued: went through the engine (standard mode); the rest crossed uninspected.
            "queued_percent": round(100.0 * queued / sent, 2) if sent else 0.0,
        }
        best.setdefault("steps", []).append(row)
        if lost > 0.1:
            break
        best["pps"] = round(achieved * (1 - lost / 100))
        if sent and queued >= sent * 0.999:
            best["inspected_pps"] = best["pps"]
        if achieved < rate * 0.9:  # the sender itself cannot go faster
            best["sender_limited"] = True
            break
    return best


# A paced 64-byte UDP sender that is not the bottleneck (iperf3 -l 18 tops out near 25 000/s
# here): sendto in a tight loop, paced per millisecond slice.
_BLAST = r"""
import socket, sys, time
dst, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
data, addr = b"v" * 18, (dst, 9)
sent = errors = 0
t0 = time.perf_counter()
end = t0 + seconds
while True:
    now = time.perf_counter()
    if now >= end:
        break
    due = int((now - t0) * rate) + 1
    while sent + errors < due:
        try:
            s.sendto(data, addr)
            sent += 1
        except OSError:
            errors += 1
print(sent, errors, time.perf_counter() - t0)
"""

# Holds UDP port 9 open in the receiving VM without reading: arrivals are counted by the
# interface, no ICMP unreachable goes back through the filter.
_SINK = "import socket, time; s = socket.socket(2, 2); s.bind(('0.0.0.0', 9)); time.sleep(3600)"


def _rx_packets(st: LabState, host: str) -> int:
    out = ns(st, host, "ip", "-s", "-j", "link", "show", "eth0")
    return int(json.loads(out.stdout)[0]["stats64"]["rx"]["packets"])


def small_packets_fast(st: LabState, seconds: float, rates: list[int]) -> dict[str, Any]:
    sink = subprocess.Popen(
        ["ip", "netns", "exec", st.host("vm2").netns, sys.executable, "-c", _SINK]
    )
    best: dict[str, Any] = {"pps": 0, "inspected_pps": 0, "steps": []}
    try:
        time.sleep(0.3)
        for rate in rates:
            q0, r0 = _queued(st), _rx_packets(st, "vm2")
            out = ns(
                st,
                "vm1",
                sys.executable,
                "-c",
                _BLAST,
                st.host("vm2").address,
                str(rate),
                str(seconds),
                timeout=seconds + 30,
            )
            time.sleep(0.5)  # what is still queued arrives
            try:
                sent, errors, took = out.stdout.split()
            except ValueError:
                break
            n, dt = int(sent), float(took)
            got = _rx_packets(st, "vm2") - r0
            queued = _queued(st) - q0
            lost = 100.0 * max(0, n - got) / n if n else 100.0
            row = {
                "offered": rate,
                "sent_pps": round(n / dt),
                "lost_percent": round(lost, 3),
                "queued_percent": round(100.0 * queued / n, 2) if n else 0.0,
                "send_errors": int(errors),
            }
            best["steps"].append(row)
            if lost > 0.1:
                break
            best["pps"] = round(n / dt)
            if queued >= n * 0.999:
                best["inspected_pps"] = best["pps"]
            if n / dt < rate * 0.9:
                best["sender_limited"] = True
                break
    finally:
        sink.kill()
        sink.wait()
    return best


def _queue_line(qnum: int) -> list[int]:
    for line in Path("/proc/net/netfilter/nfnetlink_queue").read_text().splitlines():
        f = line.split()
        if len(f) >= 8 and f[0].isdigit() and int(f[0]) == qnum:
            return [int(x) for x in f[:9]]
    raise RuntimeError(f"queue {qnum} has no listener")


def _cpu_seconds(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def _fill(st: LabState, n: int) -> None:
    """Send n 64-byte UDP frames vm1 -> vm2 (paced over ~0.3 s) while nobody reads the queue."""
    out = ns(
        st, "vm1", sys.executable, "-c", _BLAST, st.host("vm2").address, str(int(n / 0.3)), "0.3"
    )
    if not out.stdout.strip():
        raise RuntimeError(f"sender failed: {out.stderr[-300:]}")


def worker_loop(args: argparse.Namespace, tmp: Path, n: int = 6000) -> dict[str, Any]:
    """CPU per packet of the NFQUEUE client alone and of the service's worker with the engine."""
    from vmshield.filter import rules as R
    from vmshield.filter.nfqueue import NfQueue

    os.environ["VMSHIELD_LAB_DIR"] = str(tmp / "labs")
    prefix = "vmsB" + secrets.token_hex(2)
    conf = tmp / "bench.toml"
    conf.write_text("[attacks.udp_flood]\nenabled = false\n")
    lab = Lab(prefix)
    res: dict[str, Any] = {"mode": "worker-loop", "packets": n}
    sink = None
    try:
        st = lab.up(vms=2, protect="none", onaccess=False)
        sink = subprocess.Popen(
            ["ip", "netns", "exec", st.host("vm2").netns, sys.executable, "-c", _SINK]
        )
        # (a) the client alone, in this process: receive + parse + one batched accept per burst.
        qnum = 1000 + (zlib.crc32(prefix.encode()) % 4000) * 8
        nfq = NfQueue(qnum, maxlen=n * 2)
        ports = [h.port for h in st.hosts]
        rules = R.InlineRules(prefix, ports, qnum, 1)
        rules.install()
        client = []
        try:
            for _ in range(args.rounds):
                _fill(st, n)
                time.sleep(0.2)
                queued = _queue_line(qnum)[2]
                c0 = time.process_time()
                got = 0
                t_recv = t_verdict = 0.0
                while True:
                    t0 = time.perf_counter()
                    pkts = nfq.receive(1024, timeout=0)
                    t1 = time.perf_counter()
                    t_recv += t1 - t0
                    if not pkts:
                        break
                    got += len(pkts)
                    nfq.batch_accept(pkts[-1].packet_id)
                    nfq.flush()
                    t_verdict += time.perf_counter() - t1
                cpu = time.process_time() - c0
                per = 1e6 / max(got, 1)
                client.append(
                    {
                        "queued": queued,
                        "handled": got,
                        "cpu_us": cpu * per,
                        # receive = system call + parsing; verdict = the batch message, in which
                        # the kernel also forwards the accepted packets on to vm2.
                        "receive_us": round(t_recv * per, 2),
                        "verdict_us": round(t_verdict * per, 2),
                    }
                )
        finally:
            rules.remove()
            nfq.close()
        res["client"] = client
        lab.down()
        # (b) the service's worker, one queue, the lab's policy.
        lab = Lab(prefix)
        st = lab.up(vms=2, protect="standard", workers=1, config=str(conf), onaccess=False)
        sink.kill()
        sink.wait()
        sink = subprocess.Popen(
            ["ip", "netns", "exec", st.host("vm2").netns, sys.executable, "-c", _SINK]
        )
        qbase = 1000 + (zlib.crc32(prefix.encode()) % 4000) * 8
        wpid = _queue_line(qbase)[1]  # the listener's netlink port id: the worker's PID
        worker = []
        for _ in range(args.rounds):
            os.kill(wpid, signal.SIGSTOP)
            try:
                before = _queue_line(qbase)
                _fill(st, n)
                time.sleep(0.2)
                queued = _queue_line(qbase)[2]
                c0 = _cpu_seconds(wpid)
                t0 = time.monotonic()
            finally:
                os.kill(wpid, signal.SIGCONT)
            while _queue_line(qbase)[2] > 0 and time.monotonic() - t0 < 30:
                time.sleep(0.01)
            wall = time.monotonic() - t0
            cpu = _cpu_seconds(wpid) - c0
            handled = _queue_line(qbase)[7] - before[7]
            worker.append(
                {
                    "queued": queued,
                    "handled": handled,
                    "cpu_us": cpu / max(handled, 1) * 1e6,
                    "wall_us": wall / max(handled, 1) * 1e6,
                }
            )
        res["worker"] = worker
    finally:
        if sink is not None:
            sink.kill()
            sink.wait()
        lab.down()
    res["client_receive_us_per_packet"] = min(r["receive_us"] for r in res["client"])
    for key in ("client", "worker"):
        best = min(r["cpu_us"] for r in res[key])
        res[f"{key}_cpu_us_per_packet"] = round(best, 2)
        res[f"{key}_packets_per_cpu_second"] = round(1e6 / best)
    return res


def run_mode(mode: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    os.environ["VMSHIELD_LAB_DIR"] = str(tmp / "labs")
    prefix = "vmsB" + secrets.token_hex(2)
    conf = tmp / "bench.toml"
    conf.write_text("[attacks.udp_flood]\nenabled = false\n")
    lab = Lab(prefix)
    res: dict[str, Any] = {"mode": mode}
    try:
        st = lab.up(vms=2, protect=mode, workers=args.workers, config=str(conf), onaccess=False)
        srv = iperf_server(st)
        try:
            if not args.small_only:
                res["tcp_gbps"] = round(tcp_bulk(st, args.seconds), 2)
                res["http_bidir_gbps"] = round(http_bidir(st, tmp), 2)
                med, p99 = rtt(st, args.pings)
                res["rtt_median_us"], res["rtt_p99_us"] = round(med), round(p99)
                # Back to back (0.5 ms apart): what the path costs when nothing went cold. 200
                # of them, after a pause: 500 echo requests in a second is the ICMP flood
                # detector's threshold, and a block would end the measurement.
                time.sleep(1.5)
                med, p99 = rtt(st, 200, "0.0005")
                res["rtt_warm_median_us"], res["rtt_warm_p99_us"] = round(med), round(p99)
            res["small"] = small_packets(
                st, args.udp_seconds, RATES if not args.quick else RATES[:4]
            )
            res["small_fast"] = small_packets_fast(
                st, args.udp_seconds, FAST_RATES if not args.quick else FAST_RATES[:4]
            )
        finally:
            srv.kill()
            srv.wait()
    finally:
        lab.down()
    return res


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json")
    ap.add_argument("--modes", default="none,standard,monitoring")
    ap.add_argument("--small-only", action="store_true", help="only the 64-byte packet test")
    ap.add_argument(
        "--worker-loop", action="store_true", help="only the worker loop's CPU per packet"
    )
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    args.seconds = 3 if args.quick else 5
    args.udp_seconds = 2 if args.quick else 3
    args.pings = 200 if args.quick else 400
    if os.geteuid() != 0:
        print("bench/inline.py needs root (namespaces, iptables)", file=sys.stderr)
        return 2
    results = []
    if args.worker_loop:
        with tempfile.TemporaryDirectory(prefix="vmshield-bench-inline-") as d:
            r = worker_loop(args, Path(d))
        print(json.dumps(r), flush=True)
        print(
            f"NFQUEUE client alone: {r['client_cpu_us_per_packet']} us CPU/packet "
            f"({r['client_packets_per_cpu_second']} packets per CPU second; receive and parse "
            f"{r['client_receive_us_per_packet']} us); service worker "
            f"with the engine: {r['worker_cpu_us_per_packet']} us "
            f"({r['worker_packets_per_cpu_second']} per CPU second)"
        )
        return 0
    with tempfile.TemporaryDirectory(prefix="vmshield-bench-inline-") as d:
        for mode in args.modes.split(","):
            r = run_mode(mode, args, Path(d))
            results.append(r)
            print(json.dumps(r), flush=True)
    if args.small_only or results[0]["mode"] != "none":
        return 0
    base = results[0]
    print()
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (2 cores)")
    print(
        f"{'mode':11} {'TCP Gbit/s':>10} {'x base':>7} {'HTTP bidir':>10} {'RTT med us':>10} "
        f"{'+us':>5} {'RTT p99 us':>10} {'warm +us':>8} {'64B pps':>9}"
    )
    for r in results:
        print(
            f"{r['mode']:11} {r['tcp_gbps']:10.2f} {r['tcp_gbps'] / base['tcp_gbps']:7.2f} "
            f"{r['http_bidir_gbps']:10.2f} {r['rtt_median_us']:10d} "
            f"{r['rtt_median_us'] - base['rtt_median_us']:5d} {r['rtt_p99_us']:10d} "
            f"{r['rtt_warm_median_us'] - base['rtt_warm_median_us']:8d} "
            f"{r['small']['pps']:9d} (inspected: {r['small']['inspected_pps']}; paced sender: "
            f"{r['small_fast']['pps']}, inspected {r['small_fast']['inspected_pps']})"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
