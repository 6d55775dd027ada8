"""Fixtures shared by every area's tests."""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Vcsim:
    url: str  # http://127.0.0.1:PORT/sdk, without credentials
    user: str
    password: str
    pid: int


@pytest.fixture(scope="session")
def vcsim_binary() -> Path:
    """VMware's vCenter simulator, built from Debian's govmomi sources by tests/vcsim/build.sh."""
    subprocess.run([str(REPO / "tests/vcsim/build.sh")], check=True, timeout=300)
    return REPO / "tests/vcsim/vcsim"


@pytest.fixture
def vcsim(vcsim_binary: Path) -> Iterator[Vcsim]:
    """A fresh simulator per test: 1 datacenter, a cluster of 2 hosts, 1 standalone host, VMs."""
    proc = subprocess.Popen(
        [str(vcsim_binary)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line:
            raise RuntimeError("vcsim printed no URL")
        parsed = urllib.parse.urlparse(line)
        bare = parsed._replace(netloc=f"{parsed.hostname}:{parsed.port}").geturl()
        yield Vcsim(bare, parsed.username or "user", parsed.password or "pass", proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
