"""Inline filter benchmark: the lab's bridge without vmshield, in standard mode, in monitoring mode.

    .venv/bin/python bench/inline.py [--quick] [--json FILE]

For each mode (a fresh lab of 2 VMs each, prefix vmsB<random>, removed at the end):
  - bulk TCP throughput vm1 -> vm2 (iperf3, one stream, 5 s), and a bidirectional bulk HTTP
    exchange (20 MB up, 100 MB down on one connection: both directions pass the engine's
    inspection depth, so standard mode can bypass the flow);
  - ping round trip vm1 -> vm2 (400 echo requests 5 ms apart): median and p99;
  - 64-byte UDP frames (iperf3 -u -l 18): the highest offered rate, stepping up, that arrives
    with <= 0.1 % loss, every packet through the engine in standard mode. The UDP flood detector
    is switched off for this run (it would rightly block the sender); everything else inspects.
Needs root. Prints a table; figures go to BENCHMARKS.md by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from vmshield.lab.lab import Lab, LabState  # noqa: E402

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


def rtt(st: LabState, count: int) -> tuple[float, float]:
    out = ns(st, "vm1", "ping", "-c", str(count), "-i", "0.005", "-W", "1", st.host("vm2").address)
    times = sorted(float(x) for x in re.findall(r"time=([\d.]+) ms", out.stdout))
    if not times:
        raise RuntimeError(f"ping failed: {out.stdout[-300:]}")
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    return statistics.median(times) * 1000, p99 * 1000  # microseconds


def small_packets(st: LabState, seconds: int, rates: list[int]) -> dict[str, Any]:
    best: dict[str, Any] = {"pps": 0}
    for rate in rates:
        out = ns(
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
        try:
            s = json.loads(out.stdout)["end"]["sum"]
        except (ValueError, KeyError):
            break
        sent = int(s.get("packets", 0))
        lost = float(s.get("lost_percent", 100.0))
        achieved = sent / float(s.get("seconds", seconds) or seconds)
        row = {"offered": rate, "sent_pps": round(achieved), "lost_percent": round(lost, 3)}
        best.setdefault("steps", []).append(row)
        if lost > 0.1:
            break
        best["pps"] = round(achieved * (1 - lost / 100))
        if achieved < rate * 0.9:  # the sender itself cannot go faster
            best["sender_limited"] = True
            break
    return best


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
            res["tcp_gbps"] = round(tcp_bulk(st, args.seconds), 2)
            res["http_bidir_gbps"] = round(http_bidir(st, tmp), 2)
            med, p99 = rtt(st, args.pings)
            res["rtt_median_us"], res["rtt_p99_us"] = round(med), round(p99)
            res["small"] = small_packets(
                st, args.udp_seconds, RATES if not args.quick else RATES[:4]
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
    args = ap.parse_args()
    args.seconds = 3 if args.quick else 5
    args.udp_seconds = 2 if args.quick else 3
    args.pings = 200 if args.quick else 400
    if os.geteuid() != 0:
        print("bench/inline.py needs root (namespaces, iptables)", file=sys.stderr)
        return 2
    results = []
    with tempfile.TemporaryDirectory(prefix="vmshield-bench-inline-") as d:
        for mode in ("none", "standard", "monitoring"):
            r = run_mode(mode, args, Path(d))
            results.append(r)
            print(json.dumps(r), flush=True)
    base = results[0]
    print()
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (2 cores)")
    print(
        f"{'mode':11} {'TCP Gbit/s':>10} {'x base':>7} {'HTTP bidir':>10} {'RTT med us':>10} "
        f"{'+us':>5} {'RTT p99 us':>10} {'64B pps':>9}"
    )
    for r in results:
        print(
            f"{r['mode']:11} {r['tcp_gbps']:10.2f} {r['tcp_gbps'] / base['tcp_gbps']:7.2f} "
            f"{r['http_bidir_gbps']:10.2f} {r['rtt_median_us']:10d} "
            f"{r['rtt_median_us'] - base['rtt_median_us']:5d} {r['rtt_p99_us']:10d} "
            f"{r['small']['pps']:9d}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
