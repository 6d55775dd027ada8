"""IPv6 through the inline filter, live: the block page reaches an IPv6 client (an injected IPv6
TCP segment with a correct checksum, or curl would not accept it). The lab is IPv4-only; this
test turns IPv6 on inside two of its namespaces with ULA addresses (fd00:231::/48) only."""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
from filterlab_lib import lab_up, ns, wait_events

from vmshield.lab.attacks import LAB_BLOCKED_HTTP

pytestmark = [pytest.mark.root, pytest.mark.slow]

_SERVER = (
    "import http.server, socket, sys\n"
    "class S(http.server.HTTPServer):\n"
    "    address_family = socket.AF_INET6\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        b = b'v6 server'\n"
    "        self.send_response(200); self.send_header('Content-Length', str(len(b)))\n"
    "        self.end_headers(); self.wfile.write(b)\n"
    "    def log_message(self, *a): pass\n"
    "S((sys.argv[1], 80), H).serve_forever()\n"
)


def test_ipv6_blocked_url_gets_the_block_page(tmp_path: Path) -> None:
    net = f"fd00:231:{secrets.randbelow(0xFFFF):x}"
    with lab_up(tmp_path, vms=2, protect="standard") as st:
        addr = {"vm1": f"{net}::11", "vm2": f"{net}::12"}
        for vm, a in addr.items():
            for key in ("all", "default", "eth0"):
                ns(st, vm, "sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=0")
            assert (
                ns(st, vm, "ip", "addr", "add", f"{a}/64", "dev", "eth0", "nodad").returncode == 0
            )
        server = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                st.host("vm2").netns,
                sys.executable,
                "-c",
                _SERVER,
                addr["vm2"],
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://[{addr['vm2']}]"
            ok = None
            for _ in range(30):  # neighbour discovery and the server's start
                ok = ns(st, "vm1", "curl", "-s", "-m", "3", f"{url}/fine")
                if ok.stdout == "v6 server":
                    break
                time.sleep(0.2)
            assert ok is not None and ok.stdout == "v6 server", ok
            p = ns(
                st,
                "vm1",
                "curl",
                "-s",
                "-m",
                "4",
                "-H",
                f"Host: {LAB_BLOCKED_HTTP}",
                f"{url}/payload.exe",
            )
            assert "Access blocked" in p.stdout and LAB_BLOCKED_HTTP in p.stdout, p
            assert "v6 server" not in p.stdout
            urls = wait_events(st, lambda e: e.get("event_type") == "url")
            assert urls and urls[0]["dest_ip"] == addr["vm2"], urls
        finally:
            server.kill()
            server.wait()
