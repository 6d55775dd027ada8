"""URL database benchmark: build, size, load, lookups/s, memory, for a generated feed.

    .venv/bin/python bench/urls.py [--entries 1000000] [--lookups 300000]

Times are CPU seconds of this process (time.process_time), so other load on the machine skews
them less. Called from bench/nids.py too (`run()` returns the figures). The feed is generated
here: random domains and URLs in a plain list, so the build includes parsing and
canonicalization.
"""

from __future__ import annotations

import argparse
import os
import random
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

from vmshield.engines.net.urls import UrlDatabase, build_database
from vmshield.engines.net.urls.canon import _host_cache, _suffix_cache

TLDS = ["com", "net", "org", "ru", "info", "xyz", "top", "de", "co.uk", "io"]


def _name(rng: random.Random, lo: int = 5, hi: int = 14) -> str:
    return "".join(rng.choices(string.ascii_lowercase + string.digits, k=rng.randint(lo, hi)))


def _domain(rng: random.Random) -> str:
    return f"{_name(rng)}.{rng.choice(TLDS)}"


def _url(rng: random.Random, host: str | None = None) -> str:
    host = host or _domain(rng)
    depth = rng.randint(0, 3)
    path = "/".join(_name(rng, 3, 10) for _ in range(depth))
    last = rng.choice(["index.php", "login.html", "x.exe", "a.zip", ""])
    query = rng.choice(["", "", "?id=" + _name(rng, 4, 8)])
    return f"http://www.{host}/{path + '/' if path else ''}{last}{query}"


_MEMORY_PROBE = """
import sys, time, psutil
from vmshield.engines.net.urls import UrlDatabase
p = psutil.Process()
r0 = p.memory_info().rss
t0 = time.perf_counter()
db = UrlDatabase(sys.argv[1])
t1 = time.perf_counter()
r1 = p.memory_info().rss
for i in range(100000):
    db.check_url(f"http://www.h{i % 5000}.example/p/{i}.html")
r2 = p.memory_info().rss
print(t1 - t0, (r1 - r0) / 1e6, (r2 - r0) / 1e6)
"""


def _fresh_process_memory(db_path: Path) -> dict[str, float]:
    """Load time (wall) and resident memory in a new interpreter: what an SVM pays."""
    res = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, str(db_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    load, rss_load, rss_lookups = (float(x) for x in res.stdout.split())
    return {
        "fresh_load_wall_s": load,
        "fresh_rss_after_load_mb": rss_load,
        "fresh_rss_after_100k_lookups_mb": rss_lookups,
    }


def _best_rate(fn: Any, items: Sequence[Any], repeat: int = 3) -> float:
    """Calls per CPU second, best of `repeat` passes (the machine is shared)."""
    best = 0.0
    for _ in range(repeat):
        t0 = time.process_time()
        for x in items:
            fn(x)
        best = max(best, len(items) / max(time.process_time() - t0, 1e-9))
    return best


def run(entries: int = 1_000_000, lookups: int = 300_000, seed: int = 1) -> dict[str, float]:
    rng = random.Random(seed)
    proc = psutil.Process()
    out: dict[str, float] = {"entries_in_feed": entries}
    with tempfile.TemporaryDirectory(prefix="vmshield-bench-url-") as tmp:
        feed = Path(tmp, "feed.txt")
        listed: list[str] = []
        with open(feed, "w") as f:
            for i in range(entries):
                line = _domain(rng) if i % 2 else _url(rng)
                if i % 1000 == 0:
                    listed.append(line)
                f.write(line + "\n")
        db_path = Path(tmp, "urls.db")
        t0 = time.process_time()
        report = build_database([("plain", feed)], db_path)
        out["build_s"] = time.process_time() - t0
        out["db_entries"] = report.stats.entries
        out["rejected"] = len(report.rejected)
        out["file_mb"] = db_path.stat().st_size / 1e6
        del report
        out.update(_fresh_process_memory(db_path))
        rss0 = proc.memory_info().rss
        t0 = time.process_time()
        db = UrlDatabase(db_path)
        out["load_s"] = time.process_time() - t0
        out["rss_after_load_mb"] = (proc.memory_info().rss - rss0) / 1e6

        # Raw expressions: hash + search, 1 in 10 listed.
        exprs = [f"{_domain(rng)}/{_name(rng)}.html" for _ in range(lookups)]
        for i in range(0, lookups, 10):
            exprs[i] = listed[(i // 10) % len(listed)].removeprefix("http://") + (
                "" if "/" in listed[(i // 10) % len(listed)] else "/"
            )
        look = db.lookup_expression
        out["expr_lookups_per_s"] = _best_rate(look, exprs)
        out["expr_hits"] = sum(1 for e in exprs if look(e))

        # Full URLs: canonicalize + up to 30 expressions + hash + search; distinct URLs.
        nurl = lookups // 3

        def page_list(hosts: list[str]) -> list[str]:
            urls = [_url(rng, rng.choice(hosts)) for _ in range(nurl)]
            for i in range(0, nurl, 100):  # 1 % listed, as full URLs or pages on listed domains
                item = listed[(i // 100) % len(listed)]
                urls[i] = item if "://" in item else _url(rng, item)
            return urls

        from vmshield.engines.net.urls.canon import url_expressions

        check = db.check_url
        # First pass over pages of hosts not seen yet (1 URL in 20 is the first on its host);
        # three lists with their own hosts, best pass kept.
        first_pass = 0.0
        for _ in range(3):
            hosts = [_domain(rng) for _ in range(max(1, nurl // 20))]  # pages share hosts
            urls = page_list(hosts)
            _host_cache.clear()
            _suffix_cache.clear()
            first_pass = max(first_pass, _best_rate(check, urls, repeat=1))
        out["url_lookups_per_s_first_pass"] = first_pass
        out["url_lookups_per_s"] = _best_rate(check, urls)  # the last list again: hosts seen
        exprs_per_url = sum(len(url_expressions(u)) for u in urls[:1000])
        out["expressions_per_url"] = exprs_per_url / 1000

        url_hits = sum(1 for u in urls if check(u))
        out["url_hits"] = url_hits
        # Worst case: every URL on a host never seen before. Three passes, each on its own new
        # hosts, best one kept (the machine is shared).
        fresh_sets = [[_url(rng) for _ in range(nurl)] for _ in range(3)]
        _host_cache.clear()
        _suffix_cache.clear()
        out["url_lookups_new_hosts_per_s"] = max(_best_rate(check, f, repeat=1) for f in fresh_sets)
        # The engine's HTTP call: raw Host header and origin-form target, bytes, new hosts.
        http = db.check_http
        requests = [
            [(u.split("/")[2].encode(), ("/" + u.split("/", 3)[3]).encode()) for u in f]
            for f in fresh_sets
        ]
        http_rate = 0.0
        for r in requests:
            t0 = time.process_time()
            for host, target in r:
                http(host, target)
            http_rate = max(http_rate, len(r) / max(time.process_time() - t0, 1e-9))
        out["http_lookups_new_hosts_per_s"] = http_rate

        names = [f"www.{rng.choice(hosts)}" for _ in range(nurl)]
        check_host = db.check_host
        out["host_lookups_per_s"] = _best_rate(check_host, names)
        # DNS query names and TLS SNI never seen before.
        new_names = [[f"www.{_domain(rng)}" for _ in range(nurl)] for _ in range(3)]
        out["host_lookups_new_names_per_s"] = max(
            _best_rate(check_host, n, repeat=1) for n in new_names
        )
        db.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--lookups", type=int, default=300_000)
    args = ap.parse_args(argv)
    res = run(args.entries, args.lookups)
    print(f"URL database benchmark (python {sys.version.split()[0]}, pid {os.getpid()})")
    for k, v in res.items():
        print(f"  {k:24} {v:,.3f}" if isinstance(v, float) else f"  {k:24} {v:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
