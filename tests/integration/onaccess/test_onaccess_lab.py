"""The lab: each VM (namespace) gets a directory tree and an agent; EICAR written into vm1 cannot
be read from inside vm1."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(240)]


def test_lab_eicar_read_from_inside_vm_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from vmshield.lab.lab import Lab

    state_dir = tempfile.mkdtemp(prefix="vmsh-labstate-", dir="/tmp")
    monkeypatch.setenv("VMSHIELD_LAB_DIR", state_dir)
    lab = Lab("vmsH" + secrets.token_hex(2))
    try:
        st = lab.up(vms=2, protect="none")
        assert set(st.hook["agents"]) == {"vm1", "vm2"}
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[3] / "src"))
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "vmshield",
                "lab",
                "--prefix",
                lab.prefix,
                "attack",
                "eicar",
                "--to",
                "vm1",
            ],
            capture_output=True,
            timeout=60,
            env=env,
            check=True,
        )
        path = out.stdout.decode().split(" written to ", 1)[1].split(" ", 1)[0]
        assert path.startswith(f"/tmp/vmsh-lab-{lab.prefix}/vms/vm1/")
        vm1 = st.host("vm1").netns
        r = subprocess.run(
            ["ip", "netns", "exec", vm1, "cat", path], capture_output=True, timeout=30
        )
        assert r.returncode != 0 and b"Operation not permitted" in r.stderr
        readme = Path(st.hook["agents"]["vm1"]["tree"]) / "home/user/readme.txt"
        ok = subprocess.run(
            ["ip", "netns", "exec", vm1, "cat", str(readme)], capture_output=True, timeout=30
        )
        assert ok.returncode == 0 and b"vm1's disk" in ok.stdout
    finally:
        lab.down()
        subprocess.run(["rm", "-rf", state_dir], check=False)
    assert not Path(f"/tmp/vmsh-lab-{lab.prefix}").exists()
    assert not any(
        lab.prefix in line
        for line in subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
    )
