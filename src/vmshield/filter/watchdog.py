"""Outage watchdog: reports at once when traffic bypasses the filter because the SVM is down.

A killed or crashed network service cannot report its own death, and the kernel keeps working
without it: with `--queue-bypass` (fail-open) the protected VMs' traffic flows uninspected, with
fail-closed it is dropped. This small process is started by the service (its own session, so a
kill of the service or of its process group does not take it along) and watches, every 100 ms:

- the service's PID (and its start time, so a reused PID is not mistaken for the service);
- in standard mode, the NFQUEUE numbers of the filter in /proc/net/netfilter/nfnetlink_queue:
  a queue that is not listed has no listener, so the kernel bypasses (or drops) its packets.

Events (`filter`, the same shape as the service's own state events):
  bypass_active    fail-open: traffic flows uninspected (service dead, or a queue without a
                   listener for longer than the service needs to restart a worker)
  traffic_blocked  fail-closed: the protected VMs' traffic is dropped
  bypass_ended     every queue has a listener again (a new service bound them), or the filter's
                   rules were removed (traffic is then no longer filtered at all: `reason` says so)

The watchdog exits once its service is gone and the outage is over (a restarted service starts
its own watchdog), and on SIGTERM (the service stops it first on a clean stop). It never touches
the kernel objects: only reads /proc and lists the chains.

    python -m vmshield.filter.watchdog --name N --pid PID --mode standard --queues 1000:1001 \
        --eve eve.json [--fail-closed] [--bridge BR] [--ports a,b] [--host H]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmshield.events import SEVERITY_HIGH, SEVERITY_INFO, Event, eve_line

NFQ_PROC = "/proc/net/netfilter/nfnetlink_queue"
POLL_SECONDS = 0.1
# A live service restarts a dead worker within about a second (and says so itself); only a queue
# left without a listener longer than this is reported by the watchdog.
WORKER_GRACE_SECONDS = 3.0
RULES_CHECK_SECONDS = 1.0


def proc_start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), or None when it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = stat[stat.rfind(")") + 2 :].split()
    if not rest or rest[0] in ("Z", "X"):
        return None  # a zombie is dead: killed, not yet reaped by its parent
    try:
        return int(rest[19])
    except (IndexError, ValueError):
        return None


def queue_listeners(text: str | None = None) -> set[int]:
    """Queue numbers that have a bound listener (only those appear in the proc file)."""
    if text is None:
        try:
            text = Path(NFQ_PROC).read_text()
        except OSError:
            return set()
    found = set()
    for line in text.splitlines():
        f = line.split()
        if f and f[0].isdigit():
            found.add(int(f[0]))
    return found


def parse_queues(spec: str) -> list[int]:
    first, _, last = spec.partition(":")
    try:
        a, b = int(first), int(last or first)
    except ValueError:
        raise ValueError(f"--queues expects FIRST:LAST, got {spec!r}") from None
    if not 0 <= a <= b <= 65535 or b - a > 64:
        raise ValueError(f"--queues out of range: {spec!r}")
    return list(range(a, b + 1))


@dataclass
class Watch:
    """The state machine, separate from the polling so that it can be tested with a fake clock."""

    name: str
    mode: str
    queues: list[int]
    fail_closed: bool
    pid: int
    started: int | None
    extra: dict[str, Any] = field(default_factory=dict)
    down_since: float | None = None  # wall clock of the outage start
    missing_since: float | None = None  # monotonic: queue without listener, service alive
    reported: bool = False

    def _event(self, state: str, severity: int, **more: Any) -> Event:
        data = {
            "filter": {
                "state": state,
                "name": self.name,
                "mode": self.mode,
                "fail_closed": self.fail_closed,
                "service_pid": self.pid,
                **self.extra,
                **more,
            }
        }
        return Event(event_type="filter", severity=severity, data=data)

    def service_alive(self) -> bool:
        st = proc_start_time(self.pid)
        return st is not None and (self.started is None or st == self.started)

    def step(
        self,
        alive: bool,
        listening: set[int],
        rules_present: bool,
        now: float,
        wall: float,
        handed_over: bool = False,
    ) -> tuple[list[Event], bool]:
        """One observation -> events to emit, and whether the watchdog is finished."""
        out: list[Event] = []
        if handed_over:
            # A new service of this filter started and protects the traffic (it asked us to go).
            if self.reported:
                out.append(self._ended(wall, "a new service took over"))
            return out, True
        inline = self.mode == "standard"
        missing = [q for q in self.queues if q not in listening] if inline else []
        if alive and missing:
            if self.missing_since is None:
                self.missing_since = now
        else:
            self.missing_since = None
        down = (not alive) or (
            self.missing_since is not None and now - self.missing_since >= WORKER_GRACE_SECONDS
        )
        if not rules_present:
            # The filter was removed (lab down, cleanup): nothing is bypassed any more, and nothing
            # is filtered either; say so if an outage was open, then stop watching.
            if self.reported:
                out.append(self._ended(wall, "filter rules removed: traffic is no longer filtered"))
            return out, True
        if down and not self.reported:
            self.reported = True
            self.down_since = wall
            closed = inline and self.fail_closed
            out.append(
                self._event(
                    "traffic_blocked" if closed else "bypass_active",
                    SEVERITY_HIGH,
                    reason="service process gone" if not alive else "queue without listener",
                    traffic="blocked" if closed else "uninspected",
                    queues_without_listener=missing,
                    since=wall,
                )
            )
        elif self.reported and inline and not missing:
            # Every queue has a listener again: a restarted service (or worker) took over.
            out.append(self._ended(wall, "queues have listeners again"))
            self.reported = False
            self.down_since = None
            if not alive:
                return out, True
        return out, False

    def _ended(self, wall: float, reason: str) -> Event:
        since = self.down_since or wall
        return self._event(
            "bypass_ended",
            SEVERITY_INFO,
            reason=reason,
            since=since,
            until=wall,
            seconds=round(wall - since, 3),
        )


def _rules_present(name: str, mode: str) -> bool:
    if mode == "standard":
        try:
            r = subprocess.run(
                ["iptables", "-w", "5", "-S", f"VMS-{name}"],
                capture_output=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return True  # cannot tell: keep watching
        return r.returncode == 0
    return Path(f"/sys/class/net/{name}-mir").exists()


class _Out:
    def __init__(self, eve: str | None, host: str | None) -> None:
        self.eve = eve
        self.host = host

    def emit(self, ev: Event) -> None:
        if self.host:
            ev.host = self.host
        line = eve_line(ev)
        # One write() per line on an O_APPEND file: lines of the service and of this process do not
        # interleave.
        if self.eve:
            try:
                fd = os.open(self.eve, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                try:
                    os.write(fd, line)
                finally:
                    os.close(fd)
                return
            except OSError as exc:
                print(f"vmshield watchdog: cannot write {self.eve}: {exc}", file=sys.stderr)
        sys.stderr.buffer.write(line)
        sys.stderr.flush()


def run(watch: Watch, out: _Out, stop: list[bool], handover: list[bool]) -> int:
    last_rules = 0.0
    rules = True
    while not stop[0]:
        now = time.monotonic()
        if now - last_rules >= RULES_CHECK_SECONDS:
            last_rules = now
            rules = _rules_present(watch.name, watch.mode)
        events, finished = watch.step(
            watch.service_alive(), queue_listeners(), rules, now, time.time(), handover[0]
        )
        for ev in events:
            out.emit(ev)
        if finished:
            return 0
        time.sleep(POLL_SECONDS)
    return 0


def _watchdog_pids(name: str) -> list[int]:
    needle = f"vmshield.filter.watchdog --name {name} ".encode()
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if needle in cmd:
                found.append(int(d.name))
    return found


def take_over(name: str, timeout: float = 3.0) -> int:
    """Called by a starting service: the watchdogs of a previous (dead) service of this filter
    report the end of the outage and exit. Returns how many there were."""
    pids = _watchdog_pids(name)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(proc_start_time(p) is not None for p in pids):
        time.sleep(0.02)
    for pid in pids:
        if proc_start_time(pid) is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return len(pids)


def stop_watchdog(proc: subprocess.Popen[bytes] | None, timeout: float = 3.0) -> None:
    """A clean stop: the service ends its watchdog before removing the rules (no false alarm)."""
    if proc is None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def spawn(
    name: str,
    mode: str,
    queues: list[int],
    fail_closed: bool,
    eve: str | None,
    host: str | None,
    bridge: str,
    ports: list[str],
    pid: int | None = None,
) -> subprocess.Popen[bytes]:
    """Start the watchdog of the calling service in its own session (it must outlive a kill)."""
    cmd = [
        sys.executable,
        "-m",
        "vmshield.filter.watchdog",
        "--name",
        name,
        "--pid",
        str(pid or os.getpid()),
        "--mode",
        mode,
        "--bridge",
        bridge,
        "--ports",
        ",".join(ports),
    ]
    if queues:
        cmd += ["--queues", f"{queues[0]}:{queues[-1]}"]
    if fail_closed:
        cmd.append("--fail-closed")
    if eve:
        cmd += ["--eve", eve]
    if host:
        cmd += ["--host", host]
    return subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m vmshield.filter.watchdog",
        description="report at once when the network filter's SVM is down",
    )
    ap.add_argument("--name", required=True)
    ap.add_argument("--pid", type=int, required=True, help="the network service's PID")
    ap.add_argument("--mode", choices=("standard", "monitoring"), required=True)
    ap.add_argument("--queues", default="", help="FIRST:LAST NFQUEUE numbers (standard mode)")
    ap.add_argument("--fail-closed", action="store_true")
    ap.add_argument("--eve")
    ap.add_argument("--host")
    ap.add_argument("--bridge", default="")
    ap.add_argument("--ports", default="")
    args = ap.parse_args(argv)
    try:
        queues = parse_queues(args.queues) if args.queues else []
    except ValueError as exc:
        print(f"vmshield watchdog: {exc}", file=sys.stderr)
        return 2
    if args.mode == "standard" and not queues:
        print("vmshield watchdog: --queues is required in standard mode", file=sys.stderr)
        return 2
    started = proc_start_time(args.pid)
    watch = Watch(
        name=args.name,
        mode=args.mode,
        queues=queues,
        fail_closed=args.fail_closed,
        pid=args.pid,
        started=started,
        extra={"bridge": args.bridge, "ports": [p for p in args.ports.split(",") if p]},
    )
    stop = [False]
    handover = [False]

    def _term(*_: Any) -> None:
        stop[0] = True

    def _handover(*_: Any) -> None:
        handover[0] = True

    signal.signal(signal.SIGUSR1, _handover)
    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, _term)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the service's terminal going away is no reason
    return run(watch, _Out(args.eve, args.host), stop, handover)


if __name__ == "__main__":
    sys.exit(main())
