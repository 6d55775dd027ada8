"""On-access protection end to end: real fanotify, a real `vmshield svm` and `vmshield agent`,
guest accesses made by separate processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from onaccess_lib import EICAR, Harness, guest_cat

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]


def test_infected_open_denied_clean_allowed(harness: Harness) -> None:
    harness.start_svm(action="deny")
    g = harness.guest("vm1")
    (g / "clean.txt").write_bytes(b"hello, guest\n")
    (g / "eicar.com").write_bytes(EICAR)
    harness.start_agent("vm1")
    r = guest_cat(g / "clean.txt")
    assert r.returncode == 0 and r.stdout == b"hello, guest\n"
    r = guest_cat(g / "eicar.com")
    assert r.returncode != 0
    assert b"Operation not permitted" in r.stderr
    assert (g / "eicar.com").exists()  # action deny: refused, left in place
    ev = [e for e in harness.events() if e["event_type"] == "file"]
    assert ev and ev[-1]["vm"] == "vm1" and ev[-1]["action"] == "deny"
    assert ev[-1]["file"]["detections"][0]["name"].startswith("Eicar-Test-Signature")
    assert ev[-1]["file"]["path"] == str(g / "eicar.com")


def test_exec_of_infected_file_denied(harness: Harness) -> None:
    harness.start_svm(action="deny")
    g = harness.guest("vm1")
    good = g / "good.sh"
    good.write_text("#!/bin/sh\necho fine\n")
    bad = g / "bad.sh"
    bad.write_bytes(b"#!/bin/sh\necho infected\n# " + EICAR + b"\n")
    good.chmod(0o755)
    bad.chmod(0o755)
    harness.start_agent("vm1")
    ok = subprocess.run([str(good)], capture_output=True, timeout=15)
    assert ok.returncode == 0 and ok.stdout == b"fine\n"
    r = subprocess.run(["sh", "-c", f"exec {bad}"], capture_output=True, timeout=15)
    assert r.returncode != 0 and b"infected" not in r.stdout
    assert b"Operation not permitted" in r.stderr or b"ermission denied" in r.stderr


def test_exec_only_profile_intercepts_exec_not_open(harness: Harness) -> None:
    harness.start_svm(action="deny", extra_toml='on_access = ["exec"]\n')
    g = harness.guest("vm1")
    bad = g / "bad.sh"
    bad.write_bytes(b"#!/bin/sh\necho infected\n# " + EICAR + b"\n")
    bad.chmod(0o755)
    harness.start_agent("vm1")
    assert guest_cat(bad).returncode == 0  # open is not intercepted by this profile
    with pytest.raises(PermissionError):  # execve() itself fails with EPERM
        subprocess.run([str(bad)], capture_output=True, timeout=15)


def test_save_of_infected_file_is_quarantined_with_backup(harness: Harness) -> None:
    harness.start_svm(action="quarantine")
    g = harness.guest("vm1")
    harness.start_agent("vm1")
    target = g / "download.bin"
    subprocess.run(["sh", "-c", f"cat > {target}"], input=EICAR, timeout=15, check=True)
    deadline = time.monotonic() + 15
    while target.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not target.exists(), "the infected file was not removed after the save"
    backups = harness.backups()
    assert len(backups) == 1
    entry, data = backups[0]
    assert data == EICAR and entry.original_path == str(target) and entry.vm == "vm1"
    ev = [e for e in harness.events() if e["event_type"] == "file" and e["action"] == "quarantine"]
    assert ev and ev[-1]["file"]["access"] == "close_write" and ev[-1]["backup_id"] == entry.id


def test_second_open_served_by_cache_and_modification_rescans(harness: Harness) -> None:
    harness.start_svm()
    g = harness.guest("vm1")
    f = g / "doc.txt"
    f.write_bytes(b"version one\n")
    harness.start_agent("vm1")
    assert guest_cat(f).returncode == 0
    first = harness.requests("vm1")
    assert first == 1
    for _ in range(5):
        assert guest_cat(f).returncode == 0
    assert harness.requests("vm1") == first, "a cached clean file reached the SVM again"
    # Modify from a guest process: the kernel drops the ignore mark, the key changes.
    subprocess.run(["sh", "-c", f"echo more >> {f}"], timeout=15, check=True)
    end = time.monotonic() + 20  # the scan after the save is asynchronous
    while harness.requests("vm1") == first and time.monotonic() < end:
        time.sleep(0.05)
    assert harness.requests("vm1") > first
    # Now infect it: the next open must be scanned again and refused.
    subprocess.run(["sh", "-c", f"cat >> {f}"], input=EICAR, timeout=15, check=True)
    time.sleep(0.3)
    r = guest_cat(f)
    assert r.returncode != 0 or not f.exists()


def test_shared_file_across_vms_scanned_once(harness: Harness) -> None:
    harness.start_svm(vms=("vm1", "vm2"))
    data = os.urandom(200_000)
    for vm in ("vm1", "vm2"):
        (harness.guest(vm) / "shared.dll").write_bytes(data)
    harness.start_agent("vm1")
    harness.start_agent("vm2")
    assert guest_cat(harness.guest("vm1") / "shared.dll").returncode == 0
    assert guest_cat(harness.guest("vm2") / "shared.dll").returncode == 0
    h = harness.health()["svm"]
    assert h["requests_per_vm"] == {"vm1": 1, "vm2": 1}
    assert h["scans"] == 1 and h["cache_hits"] == 1


def test_svm_stopped_fail_open_answers_within_deadline(harness: Harness) -> None:
    svm = harness.start_svm(failure_mode="open", deadline=1.0)
    g = harness.guest("vm1")
    f = g / "report.txt"
    f.write_bytes(b"quarterly figures\n")
    agent = harness.start_agent("vm1", deadline=1.0)
    svm.stop()
    t0 = time.monotonic()
    r = guest_cat(f)
    assert r.returncode == 0 and r.stdout == b"quarterly figures\n"
    assert time.monotonic() - t0 < 10  # answered by the failure mode, not left hanging
    # Back: the file allowed blind is rescanned and the agent reports the episode.
    harness.start_svm(failure_mode="open", deadline=1.0)
    harness.wait_connected("vm1", agent)
    end = time.monotonic() + 15
    states: set[str] = set()
    while time.monotonic() < end and not {"fail_open", "rescanned"} <= states:
        states = {e["agent"]["state"] for e in harness.events() if e["event_type"] == "agent"}
        time.sleep(0.1)
    assert {"fail_open", "rescanned"} <= states, states


def test_late_verdict_fail_closed_denies_within_deadline(harness: Harness) -> None:
    harness.start_svm(failure_mode="closed", deadline=0.5, fake_scanner=True)
    g = harness.guest("vm1")
    slow = g / "slow.bin"
    slow.write_bytes(b"VMSHIELD-TEST-SLOW-5 " + os.urandom(100))
    harness.start_agent("vm1", failure_mode="closed", deadline=0.5)
    t0 = time.monotonic()
    r = guest_cat(slow)
    elapsed = time.monotonic() - t0
    assert r.returncode != 0 and b"Operation not permitted" in r.stderr
    assert elapsed < 4.5  # the 5-second scan was not waited for


def test_svm_unreachable_fail_closed_denies(harness: Harness) -> None:
    svm = harness.start_svm(failure_mode="closed", deadline=1.0)
    f = harness.guest("vm1") / "a.txt"
    f.write_bytes(b"x")
    harness.start_agent("vm1", failure_mode="closed", deadline=1.0)
    svm.stop()
    r = guest_cat(f)
    assert r.returncode != 0 and b"Operation not permitted" in r.stderr


def test_thousand_files_eight_processes_no_deadlock(harness: Harness) -> None:
    harness.start_svm()
    g = harness.guest("vm1")
    for i in range(1000):
        (g / f"f{i:04d}.txt").write_bytes(f"file {i}\n".encode() * (1 + i % 7))
    harness.start_agent("vm1")
    script = (
        "import sys\n"
        "k=int(sys.argv[2]); n=0\n"
        "for i in range(k, 1000, 8):\n"
        "    with open(f'{sys.argv[1]}/f{i:04d}.txt','rb') as fh: n += len(fh.read())\n"
        "print(n)\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(g), str(k)], stdout=subprocess.PIPE)
        for k in range(8)
    ]
    total = 0
    for pr in procs:
        out, _ = pr.communicate(timeout=120)
        assert pr.returncode == 0
        total += int(out)
    assert total == sum(len(f"file {i}\n".encode() * (1 + i % 7)) for i in range(1000))
    # Every file was checked (by its open, or by the agent reading ahead of the walkers), and
    # scanned once; the walkers' opens that found their file already cleared never reached the SVM.
    svm = harness.health()["svm"]
    assert svm["scans"] == 1000
    assert harness.requests("vm1") + svm["prefetches_per_vm"].get("vm1", 0) >= 1000


def test_excluded_path_and_process_not_intercepted(harness: Harness) -> None:
    harness.start_svm(action="deny")
    g = harness.guest("vm1")
    (g / "skip.log").write_bytes(EICAR)
    (g / "eicar.txt").write_bytes(EICAR)
    harness.start_agent("vm1", extra=["--exclude-path", "*.log", "--exclude-process", "re:^head$"])
    assert guest_cat(g / "skip.log").returncode == 0
    assert (
        subprocess.run(
            ["head", "-c", "3", str(g / "eicar.txt")], capture_output=True, timeout=15
        ).returncode
        == 0
    )
    assert guest_cat(g / "eicar.txt").returncode != 0
    assert harness.requests("vm1") == 1


def _raw_session(harness: Harness, vm: str):  # type: ignore[no-untyped-def]
    import socket

    from vmshield.transport import protocol as p

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(str(harness.sock))
    info = p.VmInfo(machine_id=f"raw-{vm}-00000000", hostname=vm)
    s.sendall(p.encode(p.Hello(versions=[1], info=info, token=harness.tokens[vm])))
    dec = p.FrameDecoder()
    msgs: list[p.Message] = []
    while not msgs:
        msgs += dec.feed(s.recv(65536))
    assert isinstance(msgs[0], p.Welcome) and msgs[0].vm == vm
    return s, dec


def _read_until_closed(s, dec):  # type: ignore[no-untyped-def]
    out = []
    while True:
        data = s.recv(65536)
        if not data:
            return out
        out += dec.feed(data)


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(b"\x00\x00\x00\x05\xc1\xc1\xc1\xc1\xc1", id="undecodable"),
        pytest.param(b"\x7f\xff\xff\xff" + b"A" * 100, id="oversized-length"),
        pytest.param(None, id="bad-field"),
    ],
)
def test_malformed_guest_message_closes_only_that_connection(
    harness: Harness, frame: bytes | None
) -> None:
    import msgspec

    from vmshield.transport import protocol as p

    harness.start_svm(vms=("vm1", "vm2"))
    (harness.guest("vm2") / "a.txt").write_bytes(b"vm2 data\n")
    harness.start_agent("vm2")
    s, dec = _raw_session(harness, "vm1")
    if frame is None:  # well-formed msgpack, but a relative path and a bogus hash
        body = msgspec.msgpack.encode(
            {"type": "scan", "id": 1, "path": "etc/passwd", "sha256": "zz", "size": 1}
        )
        frame = len(body).to_bytes(4, "big") + body
    s.sendall(frame)
    replies = _read_until_closed(s, dec)
    s.close()
    assert replies and isinstance(replies[-1], p.Error) and replies[-1].code == "protocol"
    # The other VM is unaffected: its agent still gets verdicts.
    r = guest_cat(harness.guest("vm2") / "a.txt")
    assert r.returncode == 0 and r.stdout == b"vm2 data\n"
    h = harness.health()
    assert h["vms"]["vm1"]["protocol_errors"] == 1
    assert "vm2" in h["agents"], harness.procs[-1].tail()
    assert h["svm"]["requests_per_vm"].get("vm2") == 1, (
        h,
        harness.procs[-1].tail(),
        harness.procs[0].tail(),
    )


def test_wrong_token_refused(harness: Harness) -> None:
    harness.start_svm(vms=("vm1",))
    proc = harness.start_agent("vm2", wait_connected=False)  # no token for vm2 in the service
    time.sleep(1.0)
    assert "vm2" not in harness.health()["agents"]
    assert harness.health()["rejected_connections"] >= 1
    assert proc.popen.poll() is None  # the agent keeps retrying with backoff


def test_poisoned_hash_does_not_clear_infected_content(harness: Harness) -> None:
    """A guest that announces EICAR's hash but sends other bytes must not get a clean verdict cached
    for EICAR's hash (which every other VM on the host would then trust)."""
    import hashlib

    from vmshield.transport import protocol as p

    harness.start_svm(action="deny", vms=("vm1", "vm2"))
    (harness.guest("vm2") / "eicar.com").write_bytes(EICAR)
    s, dec = _raw_session(harness, "vm1")
    sha = hashlib.sha256(EICAR).hexdigest()
    s.sendall(p.encode(p.ScanRequest(id=7, path="/x", sha256=sha, size=len(EICAR))))
    msgs: list[p.Message] = []
    while not any(isinstance(m, p.NeedContent) for m in msgs):
        msgs += dec.feed(s.recv(65536))
    s.sendall(p.encode(p.Content(id=7, offset=0, data=b"A" * len(EICAR), final=True)))
    while not any(isinstance(m, p.Verdict) for m in msgs):
        msgs += dec.feed(s.recv(65536))
    v = next(m for m in msgs if isinstance(m, p.Verdict))
    assert v.status == "error" and v.status != "clean"
    s.close()
    harness.start_agent("vm2")
    assert guest_cat(harness.guest("vm2") / "eicar.com").returncode != 0


def test_on_demand_scan_through_the_agent(harness: Harness) -> None:
    harness.start_svm(action="quarantine")
    g = harness.guest("vm1")
    (g / "sub").mkdir()
    for i in range(30):
        (g / "sub" / f"doc{i}.txt").write_bytes(f"document {i}\n".encode())
    (g / "sub" / "eicar.com").write_bytes(EICAR)
    harness.start_agent("vm1")
    from onaccess_lib import _env

    cmd = [
        sys.executable,
        "-m",
        "vmshield",
        "scan",
        "--vm",
        "vm1",
        "--control",
        str(harness.control),
        str(g),
    ]
    r = subprocess.run(cmd, capture_output=True, timeout=120, env=_env())
    out = r.stdout.decode()
    assert r.returncode == 1, (out, r.stderr)
    assert f"{g}/sub/eicar.com: Eicar-Test-Signature" in out and "FOUND (quarantine)" in out
    assert f"{g}/sub/doc7.txt: OK" in out and "Scanned files: 31" in out
    assert not (g / "sub" / "eicar.com").exists()  # the profile's action was carried out
    r2 = subprocess.run(cmd, capture_output=True, timeout=120, env=_env())
    assert r2.returncode == 0 and "Answered from the verdict cache: 30" in r2.stdout.decode()
    bad = subprocess.run([*cmd[:5], "vm9", *cmd[6:]], capture_output=True, timeout=60, env=_env())
    assert bad.returncode == 2 and b"no agent connected for VM 'vm9'" in bad.stderr


def test_profile_exclusions_reach_the_agent(harness: Harness) -> None:
    harness.start_svm(action="deny", extra_toml='exclude_paths = ["*.vmdk", "re:/cache/"]\n')
    g = harness.guest("vm1")
    (g / "disk.vmdk").write_bytes(EICAR)
    (g / "other.bin").write_bytes(EICAR)
    harness.start_agent("vm1")
    assert guest_cat(g / "disk.vmdk").returncode == 0
    assert guest_cat(g / "other.bin").returncode != 0


def test_new_database_version_flushes_clean_caches(harness: Harness) -> None:
    harness.start_svm(action="deny")
    g = harness.guest("vm1")
    f = g / "tool.bin"
    f.write_bytes(b"harmless until today: VMSHIELD-NEW-THREAT-0042\n")
    harness.start_agent("vm1")
    assert guest_cat(f).returncode == 0
    assert guest_cat(f).returncode == 0 and harness.requests("vm1") == 1  # kernel-cached
    old = harness.health()["svm"]["db_version"]
    with open(harness.root / "db" / "test.ndb", "a") as db:
        db.write("Test.NewThreat:0:*:" + b"VMSHIELD-NEW-THREAT-0042".hex() + "\n")
    end = time.monotonic() + 60
    while harness.health()["svm"]["db_version"] == old and time.monotonic() < end:
        time.sleep(0.1)
    assert harness.health()["svm"]["db_version"] != old
    # The agent drops its ignore marks and user-space cache: the same file is scanned again.
    end = time.monotonic() + 20
    r = guest_cat(f)
    while r.returncode == 0 and time.monotonic() < end:
        time.sleep(0.1)
        r = guest_cat(f)
    assert r.returncode != 0 and b"Operation not permitted" in r.stderr
    assert harness.requests("vm1") >= 2


def test_svm_and_introspection_in_separate_processes(harness: Harness) -> None:
    harness.start_svm(action="quarantine", separate=True)
    g = harness.guest("vm1")
    (g / "clean.txt").write_bytes(b"fine\n")
    (g / "eicar.com").write_bytes(EICAR)
    harness.start_agent("vm1")
    assert guest_cat(g / "clean.txt").returncode == 0
    r = guest_cat(g / "eicar.com")
    assert r.returncode != 0 and b"Operation not permitted" in r.stderr
    end = time.monotonic() + 10
    while (g / "eicar.com").exists() and time.monotonic() < end:
        time.sleep(0.05)
    assert not (g / "eicar.com").exists()  # quarantined: the content crossed both links
    ((entry, data),) = harness.backups()
    assert data == EICAR and entry.vm == "vm1"
    h = harness.health()
    assert h["svm"]["connected"] and h["svm"]["requests_per_vm"] == {"vm1": 2}
    states = {e["agent"]["state"] for e in harness.events() if e["event_type"] == "agent"}
    assert "connected" in states  # the relay's events reach the SVM's log over the link


def test_disinfect_replaces_archive_atomically_with_backup(harness: Harness) -> None:
    import io
    import zipfile

    harness.start_svm(action="disinfect")
    g = harness.guest("vm1")
    harness.start_agent("vm1")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("notes.txt", "keep me\n")
        z.writestr("eicar.com", EICAR)
    target = g / "bundle.zip"
    subprocess.run(["sh", "-c", f"cat > {target}"], input=buf.getvalue(), timeout=15, check=True)
    end = time.monotonic() + 20
    names: list[str] = []
    while time.monotonic() < end:
        r = guest_cat(target)
        if r.returncode == 0 and r.stdout != buf.getvalue():
            names = zipfile.ZipFile(io.BytesIO(r.stdout)).namelist()
            break
        time.sleep(0.1)
    assert names == ["notes.txt"]  # the infected member is gone, the rest kept
    backups = harness.backups()  # one per action taken (an open racing the save may add one)
    assert backups and all(
        d == buf.getvalue() and e.original_path == str(target) for e, d in backups
    )
    assert not list(g.glob(".*.tmp"))  # no temporary file left behind
    ev = [e for e in harness.events() if e["event_type"] == "file"]
    assert (
        ev[-1]["action"] == "disinfect"
        and ev[-1]["file"]["detections"][0]["inner_path"] == "eicar.com"
    )


def test_delete_action_on_open(harness: Harness) -> None:
    harness.start_svm(action="delete")
    g = harness.guest("vm1")
    (g / "payload.exe").write_bytes(EICAR)
    harness.start_agent("vm1")
    r = guest_cat(g / "payload.exe")
    assert r.returncode != 0 and b"Operation not permitted" in r.stderr
    end = time.monotonic() + 10
    while (g / "payload.exe").exists() and time.monotonic() < end:
        time.sleep(0.05)
    assert not (g / "payload.exe").exists()
    backups = harness.backups()
    assert backups and all(d == EICAR for _, d in backups)


def test_requests_beyond_the_agreed_window_close_the_connection(harness: Harness) -> None:
    import hashlib

    from vmshield.transport import protocol as p

    harness.start_svm(vms=("vm1",))
    s, dec = _raw_session(harness, "vm1")
    # Never answer NeedContent: every request stays in flight; 64 are allowed, the 65th is not.
    for i in range(1, 66):
        body = f"content {i}".encode()
        s.sendall(
            p.encode(
                p.ScanRequest(
                    id=i, path=f"/f{i}", sha256=hashlib.sha256(body).hexdigest(), size=len(body)
                )
            )
        )
    replies = _read_until_closed(s, dec)
    s.close()
    errors = [m for m in replies if isinstance(m, p.Error)]
    assert errors and "more than 64 requests in flight" in errors[-1].message


def test_agent_stopping_answers_pending_events(harness: Harness) -> None:
    harness.start_svm(failure_mode="open", deadline=30, fake_scanner=True)
    g = harness.guest("vm1")
    slow = g / "slow.bin"
    slow.write_bytes(b"VMSHIELD-TEST-SLOW-20 " + os.urandom(64))
    agent = harness.start_agent("vm1", deadline=30)
    reader = subprocess.Popen(["cat", str(slow)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(1.0)
    assert reader.poll() is None  # waiting for the (slow) verdict
    t0 = time.monotonic()
    agent.stop()  # SIGTERM: pending permission events are answered (fail-open) before exit
    out, _ = reader.communicate(timeout=15)
    assert (
        time.monotonic() - t0 < 10
        and reader.returncode == 0
        and out.startswith(b"VMSHIELD-TEST-SLOW")
    )


def test_agent_over_tcp_with_mutual_tls(harness: Harness) -> None:
    import socket

    from onaccess_lib import _env, _wait_file

    from vmshield.transport import tls

    ca_pem, ca_key = tls.create_ca(harness.root / "ca")
    srv_cert, srv_key = tls.issue(
        ca_pem, ca_key, "svm", harness.root / "pki", server=True, dns_names=["127.0.0.1"]
    )
    vm_cert, vm_key = tls.issue(ca_pem, ca_key, "vm1", harness.root / "pki")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    harness.start_svm(action="deny", vms=("vm1",))
    harness.svm.stop()  # type: ignore[union-attr]
    ready = harness.root / "svm-tls.ready"
    svm = harness._spawn(
        [
            sys.executable,
            "-m",
            "vmshield",
            "svm",
            "--config",
            str(harness.root / "svm.toml"),
            "--listen",
            f"tcp://127.0.0.1:{port}",
            "--tls-cert",
            str(srv_cert),
            "--tls-key",
            str(srv_key),
            "--tls-ca",
            str(ca_pem),
            "--control",
            str(harness.control),
            "--ready-file",
            str(ready),
        ],
        "svm-tls",
    )
    _wait_file(ready, svm)
    g = harness.guest("vm1")
    (g / "eicar.com").write_bytes(EICAR)
    (g / "ok.txt").write_bytes(b"ok\n")
    aready = harness.root / "agent-tls.ready"
    harness._spawn(
        [
            sys.executable,
            "-m",
            "vmshield",
            "agent",
            "--endpoint",
            f"tcp://127.0.0.1:{port}",
            "--tls-cert",
            str(vm_cert),
            "--tls-key",
            str(vm_key),
            "--tls-ca",
            str(ca_pem),
            "--machine-id",
            "tls-vm1-00000000",
            "--path",
            str(g),
            "--ready-file",
            str(aready),
        ],
        "agent-tls",
    )
    _wait_file(aready, harness.procs[-1])
    harness.wait_connected("vm1")  # the certificate's common name is the VM
    assert guest_cat(g / "ok.txt").returncode == 0
    assert guest_cat(g / "eicar.com").returncode != 0
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "vmshield",
            "agent",
            "--endpoint",
            f"tcp://127.0.0.1:{port}",
            "--path",
            str(g),
        ],
        capture_output=True,
        timeout=30,
        env=_env(),
    )
    assert bad.returncode == 2 and b"needs --tls-cert" in bad.stderr


def test_directories_created_after_start_are_protected(harness: Harness) -> None:
    harness.start_svm(action="deny")
    g = harness.guest("vm1")
    harness.start_agent("vm1")  # paths mode: the tree's directories are marked one by one
    sub = g / "new" / "deeper"
    subprocess.run(["mkdir", "-p", str(sub)], check=True, timeout=15)
    (sub / "eicar.com").write_bytes(EICAR)
    # Marked on the inotify notice, well within 3 s (the periodic walk would take up to 30 s).
    end = time.monotonic() + 3
    r = guest_cat(sub / "eicar.com")
    while r.returncode == 0 and time.monotonic() < end:
        time.sleep(0.1)
        r = guest_cat(sub / "eicar.com")
    assert r.returncode != 0 and b"Operation not permitted" in r.stderr


def test_file_over_the_size_limit_answered_without_reading(harness: Harness) -> None:
    """A file far over the scan limit (sparse, 8 GiB) is not hashed: the answer comes from its
    size alone, per profile: allowed and reported as limits_exceeded, or denied when strict."""
    harness.start_svm(
        extra_toml='\n[profiles.strict]\nunscannable = "deny"\n\n[vms.vm2]\nprofile = "strict"\n'
    )
    big1, big2 = harness.guest("vm1") / "disk.img", harness.guest("vm2") / "disk.img"
    for big in (big1, big2):
        with open(big, "wb") as f:
            f.truncate(8 << 30)  # hashing 8 GiB of zeros would take far beyond the deadline
    harness.start_agent("vm1", deadline=2.0, failure_mode="closed")
    harness.start_agent("vm2", deadline=2.0, failure_mode="closed")
    r = subprocess.run(["head", "-c", "4", str(big1)], capture_output=True, timeout=15)
    assert r.returncode == 0 and r.stdout == b"\0" * 4
    r = subprocess.run(["head", "-c", "4", str(big2)], capture_output=True, timeout=15)
    assert r.returncode != 0 and b"Operation not permitted" in r.stderr
    ev = [e for e in harness.events() if e["event_type"] == "file"]
    by_vm = {e["vm"]: e for e in ev if e["file"]["path"].endswith("disk.img")}
    assert by_vm["vm1"]["file"]["status"] == "limits_exceeded"
    assert by_vm["vm1"]["action"] == "allow" and by_vm["vm1"]["file"]["sha256"] == ""
    assert by_vm["vm2"]["action"] == "deny"
    assert harness.health()["svm"]["scans"] == 0


def test_small_file_content_sent_with_the_request(harness: Harness) -> None:
    """A small file travels inside its scan request (no content round trip), checked against its
    hash like fetched content; inline content that is not the announced size closes the session."""
    import hashlib

    from vmshield.transport import protocol as p

    harness.start_svm(action="deny", vms=("vm1", "vm2"))
    s, dec = _raw_session(harness, "vm1")

    def ask(rid: int, data: bytes, sha: str) -> list[p.Message]:
        s.sendall(p.encode(p.ScanRequest(id=rid, path="/x", sha256=sha, size=len(data), data=data)))
        msgs: list[p.Message] = []
        while not any(isinstance(m, p.Verdict) for m in msgs):
            msgs += dec.feed(s.recv(65536))
        assert not any(isinstance(m, p.NeedContent) for m in msgs)
        return msgs

    clean = b"clean small file\n" * 100
    (v,) = ask(1, clean, hashlib.sha256(clean).hexdigest())
    assert isinstance(v, p.Verdict) and v.status == "clean" and not v.cached
    # Other bytes under an infected file's hash: an error, nothing cached for that hash...
    inf = EICAR + b"\n"
    (v,) = ask(2, b"A" * len(inf), hashlib.sha256(inf).hexdigest())
    assert isinstance(v, p.Verdict) and v.status == "error"
    # ... so the real content is scanned and found.
    (v,) = ask(3, inf, hashlib.sha256(inf).hexdigest())
    assert isinstance(v, p.Verdict) and v.status == "infected" and v.action == "deny"
    assert not v.cached
    bad = p.ScanRequest(id=4, path="/x", sha256="0" * 64, size=10, data=b"short")
    s.sendall(p.encode(bad))
    msgs = _read_until_closed(s, dec)
    assert any(isinstance(m, p.Error) and "scan.data" in m.message for m in msgs)
    s.close()
    assert harness.health()["vms"]["vm1"]["content_bytes"] == len(clean) + 2 * len(inf)


def test_read_ahead_of_a_directory_walk(harness: Harness) -> None:
    """After a cold open the agent checks the next files of the directory in the background: a
    guest reading them next finds them cleared without asking the SVM. An infected file met by
    the read-ahead is left alone (no action, no event) until a guest really opens it."""
    harness.start_svm(action="quarantine")
    g = harness.guest("vm1")
    for i in range(30):
        (g / f"f{i:02d}").write_bytes(b"EICAR-like? no: clean file %d\n" % i)
    (g / "f15").write_bytes(EICAR)
    atime = (g / "f10").stat().st_atime_ns
    harness.start_agent("vm1")
    assert guest_cat(g / "f00").returncode == 0
    deadline = time.monotonic() + 20
    while harness.health()["svm"]["prefetches_per_vm"].get("vm1", 0) < 16:
        assert time.monotonic() < deadline, harness.health()
        time.sleep(0.05)
    assert harness.requests("vm1") == 1
    assert (g / "f10").stat().st_atime_ns == atime  # read ahead, not read: access time kept
    assert (g / "f15").exists()
    assert not [e for e in harness.events() if e["event_type"] == "file"]
    for i in range(1, 15):
        assert guest_cat(g / f"f{i:02d}").returncode == 0
    assert harness.requests("vm1") == 1  # all answered by the agent's caches
    r = guest_cat(g / "f15")
    assert r.returncode != 0 and b"Operation not permitted" in r.stderr
    deadline = time.monotonic() + 10
    while (g / "f15").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    (ev,) = [e for e in harness.events() if e["event_type"] == "file"]
    assert ev["action"] == "quarantine" and ev["file"]["path"] == str(g / "f15")
    assert ev["file"]["access"] == "open"
