"""On-access file protection for the lab's VMs (the hook `vmshield lab up/down` calls).

Each lab VM (a network namespace) gets a directory tree standing for its disk, under
/tmp/vmsh-lab-<prefix>/vms/<vm>/, and a thin agent running inside its namespace that watches it.
One `vmshield svm` process (file protection only; the lab's network protection runs separately)
serves them over a Unix socket, with enrolment tokens per VM, and a lab database that detects the
EICAR test file. The lab profile blocks access to infected files (action deny) so that the
attack can be observed: `vmshield lab attack eicar --to vm1` (or `python -m vmshield.lab.onaccess
eicar --to vm1`) writes EICAR into vm1's tree and prints its path; reading it from inside vm1
(`ip netns exec <prefix>-vm1 cat PATH`) fails with "Operation not permitted".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from vmshield.lab.lab import LabError, LabState, load_state, save_state

# The EICAR test file, assembled at run time (no copy of it in the repository).
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-" + b"TEST-FILE!$H+H*"
READY_TIMEOUT = 60.0


def lab_dir(prefix: str) -> Path:
    return Path(f"/tmp/vmsh-lab-{prefix}")


def vm_tree(st: LabState, vm: str) -> Path:
    return lab_dir(st.prefix) / "vms" / vm


def _spawn(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as f:
        return subprocess.Popen(cmd, stdout=f, stderr=f, start_new_session=True)


def _wait(path: Path, proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    end = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < end:
        if path.exists():
            return
        if proc.poll() is not None:
            raise LabError(
                f"{what} exited ({proc.returncode}):\n{log.read_text(errors='replace')[-2000:]}"
            )
        time.sleep(0.05)
    raise LabError(f"{what} was not ready within {READY_TIMEOUT:.0f}s")


def setup(st: LabState) -> dict[str, Any]:
    """Directory trees, the SVM and one agent per VM. Returns what teardown needs (kept in state)."""
    root = lab_dir(st.prefix)
    if root.exists():
        _remove_tree(root)
    (root / "vms").mkdir(parents=True, mode=0o755)
    (root / "db").mkdir()
    db = root / "db" / "lab.ndb"
    db.write_text("Eicar-Test-Signature:0:*:" + b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE".hex() + "\n")
    tokens = {vm.name: secrets.token_hex(24) for vm in st.vms}
    (root / "tokens.toml").write_text(
        "".join(f'[[agent]]\nvm = "{vm}"\ntoken = "{tok}"\n\n' for vm, tok in tokens.items())
    )
    (root / "tokens.toml").chmod(0o600)
    (root / "svm.toml").write_text(
        f'[svm]\nhost = "lab-{st.prefix}"\ndb = ["{db}"]\nworkers = 2\nbackup_dir = "{root / "backup"}"\n'
        f'eve = "{root / "eve.json"}"\n\n[profiles.default]\naction = "deny"\n'
        f'failure_mode = "{"closed" if st.fail_closed else "open"}"\ndeadline = 3.0\n'
    )
    hook: dict[str, Any] = {
        "dir": str(root),
        "svm_pid": 0,
        "agents": {},
        "control": str(root / "control.sock"),
    }
    ready = root / "svm.ready"
    svm = _spawn(
        [
            sys.executable,
            "-m",
            "vmshield",
            "svm",
            "--config",
            str(root / "svm.toml"),
            "--listen",
            f"unix:{root / 'agents.sock'}",
            "--control",
            str(root / "control.sock"),
            "--tokens",
            str(root / "tokens.toml"),
            "--data-dir",
            str(root / "data"),
            "--ready-file",
            str(ready),
        ],
        root / "svm.log",
    )
    hook["svm_pid"] = svm.pid
    st.hook = hook
    save_state(st)  # `down` after a failure below needs the pids
    _wait(ready, svm, root / "svm.log", "the lab SVM")
    for vm in st.vms:
        tree = vm_tree(st, vm.name)
        tree.mkdir(parents=True)
        # Its own small filesystem, like a VM's disk: the agent marks the whole filesystem, so new
        # directories are covered and `ip netns exec` (a new mount namespace each time) is too.
        mount = [
            "mount",
            "-t",
            "tmpfs",
            "-o",
            "size=256m,mode=755",
            f"vmsh-lab-{vm.name}",
            str(tree),
        ]
        subprocess.run(mount, check=True, timeout=30)
        hook.setdefault("mounts", []).append(str(tree))
        save_state(st)
        for sub in ("home/user", "tmp", "opt/app"):
            (tree / sub).mkdir(parents=True, exist_ok=True)
        (tree / "home/user/readme.txt").write_text(f"This is {vm.name}'s disk.\n")
        aready = root / f"agent-{vm.name}.ready"
        log = root / f"agent-{vm.name}.log"
        agent = _spawn(
            [
                "ip",
                "netns",
                "exec",
                vm.netns,
                sys.executable,
                "-m",
                "vmshield",
                "agent",
                "--endpoint",
                f"unix:{root / 'agents.sock'}",
                f"--token={tokens[vm.name]}",
                "--machine-id",
                f"lab-{st.prefix}-{vm.name}",
                "--hostname",
                vm.name,
                "--filesystem",
                str(tree),
                "--ready-file",
                str(aready),
                "--failure-mode",
                "closed" if st.fail_closed else "open",
            ],
            log,
        )
        hook["agents"][vm.name] = {"pid": agent.pid, "tree": str(tree)}
        save_state(st)
        _wait(aready, agent, log, f"the agent of {vm.name}")
    return hook


def _kill(pid: int, needle: str) -> None:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return
    if needle not in cmd:
        return  # not ours any more (pid reused)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + 10
    while time.monotonic() < end and Path(f"/proc/{pid}").exists():
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _remove_tree(root: Path) -> None:
    if not str(root).startswith("/tmp/vmsh-lab-"):
        raise LabError(f"refusing to remove {root}")
    vms = root / "vms"
    if vms.is_dir():
        for d in vms.iterdir():
            if os.path.ismount(d):  # a leftover of a crashed lab
                subprocess.run(["umount", "-l", str(d)], capture_output=True, timeout=30)
    shutil.rmtree(root, ignore_errors=True)


def teardown(st: LabState) -> None:
    """Stop the agents (their marks go with them), the SVM, and remove the trees. Idempotent."""
    hook = st.hook or {}
    root = lab_dir(st.prefix)
    for info in (hook.get("agents") or {}).values():
        _kill(int(info.get("pid", 0)), "vmshield")
    if hook.get("svm_pid"):
        _kill(int(hook["svm_pid"]), "vmshield")
    for mnt in hook.get("mounts") or []:
        if os.path.ismount(mnt):
            r = subprocess.run(["umount", mnt], capture_output=True, timeout=30)
            if r.returncode != 0:
                subprocess.run(["umount", "-l", mnt], capture_output=True, timeout=30)
    if root.exists():
        _remove_tree(root)


def attack_eicar(st: LabState, target: str = "vm1") -> Path:
    """Write the EICAR test file into `target`'s tree; returns its path."""
    host = st.host(target)
    hook = st.hook or {}
    if target not in (hook.get("agents") or {}):
        raise LabError(
            f"{host.name} has no on-access protection in lab {st.prefix} (is the lab up?)"
        )
    path = vm_tree(st, host.name) / "home/user/Downloads/eicar.com"
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write from inside the VM, as a download would.
    subprocess.run(
        ["ip", "netns", "exec", host.netns, "sh", "-c", 'cat > "$1"', "sh", str(path)],
        input=EICAR,
        check=True,
        timeout=30,
    )
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vmshield.lab.onaccess")
    ap.add_argument("scenario", choices=["eicar"])
    ap.add_argument("--to", default="vm1")
    ap.add_argument("--prefix", default="vms")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    try:
        st = load_state(args.prefix)
        if st is None:
            raise LabError(f"lab {args.prefix} is not up")
        path = attack_eicar(st, args.to)
    except (LabError, subprocess.SubprocessError, OSError) as exc:
        print(f"vmshield lab: {exc}", file=sys.stderr)
        return 2
    vm = st.host(args.to)
    if args.json:
        print(json.dumps({"path": str(path), "vm": vm.name, "netns": vm.netns}))
    else:
        print(path)
        print(f"try: ip netns exec {vm.netns} cat {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
