"""Helpers of the on-access tests: a scanner for the workers while the file engine is not there,
EICAR built at run time, and a harness that runs `vmshield svm` and `vmshield agent` as processes.

The injected scanner is for tests only: it reports the EICAR test string and can be made slow (a
file containing VMSHIELD-TEST-SLOW-<seconds>) to exercise deadlines.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent

# The EICAR test file, assembled so that no copy of it sits in the repository.
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-" + b"TEST-FILE!$H+H*"
_SLOW = re.compile(rb"VMSHIELD-TEST-SLOW-(\d+(?:\.\d+)?)")


def factory(db_paths: list[str]) -> tuple[Any, str]:
    """Scanner factory for `--scanner-factory onaccess_lib:factory` (tests only)."""
    version = (
        "test-"
        + hashlib.sha256(
            b"".join(Path(x).read_bytes() for x in db_paths if os.path.isfile(x))
        ).hexdigest()[:12]
    )

    def scan(data: bytes, name: str) -> dict[str, Any]:
        if b"VMSHIELD-TEST-CRASH" in data:
            os._exit(3)  # a parser that takes the whole worker down
        m = _SLOW.search(data)
        if m:
            time.sleep(float(m.group(1)))
        if b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE" in data:
            return {
                "status": "infected",
                "detections": [{"name": "Eicar-Test-Signature", "inner_path": ""}],
            }
        return {"status": "clean", "detections": []}

    return scan, version


def write_db(directory: Path) -> Path:
    """A ClamAV body-signature database that finds EICAR."""
    directory.mkdir(parents=True, exist_ok=True)
    db = directory / "test.ndb"
    db.write_text("Eicar-Test-Signature:0:*:" + b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE".hex() + "\n")
    return db


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    log: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(sig)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-3000:]
        return ""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(HERE), env.get("PYTHONPATH", "")])
    return env


def _wait_file(path: Path, proc: Proc, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists():
            return
        if proc.popen.poll() is not None:
            raise RuntimeError(f"process exited ({proc.popen.returncode}):\n{proc.tail()}")
        time.sleep(0.02)
    raise RuntimeError(f"not ready within {timeout}s:\n{proc.tail()}")


@dataclass
class Harness:
    """A temporary /tmp/vmsh-* tree: the SVM (with introspection), agents, guest directories."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="vmsh2-", dir="/tmp")))
    procs: list[Proc] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)
    svm: Proc | None = None

    @property
    def sock(self) -> Path:
        return self.root / "agents.sock"

    @property
    def control(self) -> Path:
        return self.root / "control.sock"

    @property
    def eve(self) -> Path:
        return self.root / "eve.json"

    @property
    def backup_dir(self) -> Path:
        return self.root / "backup"

    def guest(self, vm: str) -> Path:
        d = self.root / "guests" / vm
        d.mkdir(parents=True, exist_ok=True)
        return d

    def start_svm(
        self,
        *,
        action: str = "quarantine",
        failure_mode: str = "open",
        deadline: float = 2.0,
        vms: tuple[str, ...] = ("vm1", "vm2"),
        workers: int = 2,
        extra_toml: str = "",
        fake_scanner: bool = False,
        separate: bool = False,
        extra_args: list[str] | None = None,
        host: str = "testhost",
    ) -> Proc:
        for vm in vms:
            self.tokens.setdefault(vm, secrets.token_hex(16))
        (self.root / "tokens.toml").write_text(
            "".join(
                f'[[agent]]\nvm = "{vm}"\ntoken = "{tok}"\n\n' for vm, tok in self.tokens.items()
            )
        )
        db = write_db(self.root / "db")
        (self.root / "svm.toml").write_text(
            f'[svm]\nhost = "{host}"\ndb = ["{db}"]\nworkers = {workers}\nbackup_dir = "{self.backup_dir}"\n'
            f'eve = "{self.eve}"\nper_vm_concurrency = 2\n\n'
            f'[profiles.default]\naction = "{action}"\nfailure_mode = "{failure_mode}"\ndeadline = {deadline}\n'
            + extra_toml
        )
        ready = self.root / "svm.ready"
        with contextlib.suppress(FileNotFoundError):
            ready.unlink()
        cmd = [
            sys.executable,
            "-m",
            "vmshield",
            "svm",
            "--config",
            str(self.root / "svm.toml"),
            "--listen",
            f"unix:{self.sock}",
            "--control",
            str(self.control),
            "--tokens",
            str(self.root / "tokens.toml"),
            "--ready-file",
            str(ready),
            "-v",
            "--db-poll",
            "0.3",
        ]
        cmd += extra_args or []
        if fake_scanner:  # only where a test needs a scan that takes a chosen time
            cmd += ["--scanner-factory", "onaccess_lib:factory"]
        if separate:  # the SVM serves a separately running introspection service
            link = self.root / "svm-link.sock"
            i = cmd.index("--listen")
            cmd[i : i + 2] = ["--relay-listen", f"unix:{link}"]
            i = cmd.index("--control")
            cmd[i + 1] = str(self.root / "svm-control.sock")
        proc = self._spawn(cmd, "svm")
        _wait_file(ready, proc)
        self.svm = proc
        if separate:
            iready = self.root / "introspection.ready"
            with contextlib.suppress(FileNotFoundError):
                iready.unlink()
            intro = self._spawn(
                [
                    sys.executable,
                    "-m",
                    "vmshield",
                    "introspection",
                    "run",
                    "--listen",
                    f"unix:{self.sock}",
                    "--svm",
                    f"unix:{self.root / 'svm-link.sock'}",
                    "--tokens",
                    str(self.root / "tokens.toml"),
                    "--control",
                    str(self.control),
                    "--ready-file",
                    str(iready),
                    "-v",
                ],
                "introspection",
            )
            _wait_file(iready, intro)
        return proc

    def start_agent(
        self,
        vm: str,
        paths: list[Path] | None = None,
        *,
        deadline: float = 2.0,
        failure_mode: str = "open",
        extra: list[str] | None = None,
        wait_connected: bool = True,
    ) -> Proc:
        ready = self.root / f"agent-{vm}.ready"
        with contextlib.suppress(FileNotFoundError):
            ready.unlink()
        cmd = [
            sys.executable,
            "-m",
            "vmshield",
            "agent",
            "--endpoint",
            f"unix:{self.sock}",
            "--token",
            self.tokens.get(vm, "x" * 32),
            "--machine-id",
            f"lab-{vm}-" + "0" * 8,
            "--hostname",
            vm,
            "--deadline",
            str(deadline),
            "--failure-mode",
            failure_mode,
            "--ready-file",
            str(ready),
            "-v",
        ]
        for pth in paths or [self.guest(vm)]:
            cmd += ["--path", str(pth)]
        cmd += extra or []
        proc = self._spawn(cmd, f"agent-{vm}")
        _wait_file(ready, proc)
        if wait_connected:
            self.wait_connected(vm, proc)
        return proc

    def wait_connected(self, vm: str, proc: Proc | None = None, timeout: float = 20.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with contextlib.suppress(OSError, ValueError):
                if vm in self.health()["agents"]:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"agent {vm} did not connect:\n{proc.tail() if proc else ''}")

    def _spawn(self, cmd: list[str], name: str) -> Proc:
        log = self.root / f"{name}.log"
        with open(log, "ab") as f:
            popen = subprocess.Popen(
                cmd, stdout=f, stderr=f, env=_env(), cwd=self.root, start_new_session=True
            )
        proc = Proc(popen, log)
        self.procs.append(proc)
        return proc

    def control_request(self, obj: dict[str, Any], timeout: float = 30.0) -> list[dict[str, Any]]:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(str(self.control))
            s.sendall(json.dumps(obj).encode() + b"\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        finally:
            s.close()
        return [json.loads(line) for line in data.splitlines() if line.strip()]

    def health(self) -> dict[str, Any]:
        return self.control_request({"cmd": "health"})[0]

    def requests(self, vm: str) -> int:
        return int(self.health()["svm"]["requests_per_vm"].get(vm, 0))

    def backups(self) -> list[tuple[Any, bytes]]:
        from vmshield.engines.file.quarantine import QuarantineStore

        store = QuarantineStore(self.backup_dir, create=False)
        return [(e, store.read(e.id)) for e in store.list()]

    def events(self) -> list[dict[str, Any]]:
        if not self.eve.exists():
            return []
        return [json.loads(x) for x in self.eve.read_text().splitlines() if x.strip()]

    def close(self) -> None:
        # Agents first (SIGKILL if they do not stop): a dead agent's marks go with its group.
        for proc in reversed(self.procs):
            proc.stop()
        with contextlib.suppress(OSError):
            subprocess.run(
                ["rm", "-rf", "--one-file-system", str(self.root)], check=False, timeout=60
            )


def guest_cat(path: Path, timeout: float = 15.0) -> subprocess.CompletedProcess[bytes]:
    """Read a file from another process, as a guest process would (never from the test process:
    a permission event waits in the kernel, and a test must not be the one that waits)."""
    return subprocess.run(["cat", str(path)], capture_output=True, timeout=timeout)
