"""Helpers for the lab and filter integration tests: labs with random prefixes, leftovers, events."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vmshield.filter import sysnet
from vmshield.lab.lab import Lab, LabState

VMSHIELD = [sys.executable, "-m", "vmshield"]


def new_prefix() -> str:
    return "vmsG" + secrets.token_hex(2)


def leftovers(prefix: str) -> list[str]:
    """Everything on this host that still carries the lab's prefix."""
    found = [f"netns {n}" for n in sysnet.netns_list() if n.startswith(f"{prefix}-")]
    found += [f"link {n}" for n in sysnet.link_names() if n.startswith(f"{prefix}-")]
    for v6 in (False, True):
        rules = sysnet.ipt("-S", check=False, v6=v6)
        found += [f"ip(6)tables: {ln}" for ln in rules.splitlines() if f"VMS-{prefix}" in ln]
    sets = sysnet.run(["ipset", "list", "-n"], check=False).split()
    found += [f"ipset {s}" for s in sets if s.startswith(f"{prefix}-")]
    tables = sysnet.run(["nft", "list", "tables", "bridge"], check=False).split("\n")
    found += [f"nft {t}" for t in tables if t.startswith(f"table bridge vms_{prefix}")]
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if (
                prefix in cmd
                and "vmshield" in cmd
                and int(d.name) != os.getpid()
                and "pytest" not in cmd
            ):
                found.append(f"process {d.name}: {cmd[:120]}")
    return found


@contextmanager
def lab_up(state_dir: Path, prefix: str = "", **kw: Any) -> Iterator[LabState]:
    os.environ["VMSHIELD_LAB_DIR"] = str(state_dir)
    prefix = prefix or new_prefix()
    lab = Lab(prefix)
    kw.setdefault("onaccess", False)  # the on-access hook has its own tests
    subnet = ""
    try:
        st = lab.up(**kw)
        subnet = st.subnet
        yield st
    finally:
        lab.down()
        left = leftovers(prefix)
        assert not left, f"lab {prefix} left behind: {left}"
        if subnet:
            # Nor connections in the host's conntrack table, which a later lab given the same
            # subnet would inherit (with their bypass marks).
            tracked = subprocess.run(
                ["conntrack", "-L", "-s", subnet], capture_output=True, text=True, check=False
            ).stdout
            assert not tracked.strip(), f"lab {prefix} left conntrack entries: {tracked}"


def ns(
    st: LabState, host: str, *cmd: str, timeout: float = 15.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        sysnet.in_ns(st.host(host).netns, *cmd),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def http(
    st: LabState,
    src: str,
    dst: str,
    path: str = "/",
    timeout: float = 5.0,
    extra: tuple[str, ...] = (),
) -> tuple[int, str]:
    """(curl exit code, body) for an HTTP GET from one lab host to another."""
    p = ns(
        st,
        src,
        "curl",
        "-s",
        "-m",
        str(timeout),
        *extra,
        f"http://{st.host(dst).address}{path}",
        timeout=timeout + 5,
    )
    return p.returncode, p.stdout


def events(st: LabState) -> list[dict[str, Any]]:
    out = []
    try:
        with open(st.eve, "rb") as f:
            for line in f:
                out.append(json.loads(line))
    except FileNotFoundError:
        pass
    return out


def wait_events(
    st: LabState, pred: Callable[[dict[str, Any]], bool], timeout: float = 8.0, count: int = 1
) -> list[dict[str, Any]]:
    """Events matching `pred`, waiting up to `timeout` for at least `count` of them."""
    deadline = time.monotonic() + timeout
    while True:
        hits = [e for e in events(st) if pred(e)]
        if len(hits) >= count or time.monotonic() > deadline:
            return hits
        time.sleep(0.1)


def cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VMSHIELD, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=os.environ.copy(),
    )
