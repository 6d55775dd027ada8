"""Deterministic generator of realistic Suricata rule sets, for benchmarks and tests.

The shapes follow what public rule sets (ET Open) are made of: mostly HTTP rules on sticky buffers
(method, URI, host, user agent, body) with a fast pattern and a few relative contents or a pcre;
DNS query and TLS SNI / JA3 rules; TCP and UDP payload rules with offset/depth and byte tests;
flowbits pairs; thresholded scan rules; a few header-only rules (flags, dsize, itype).

`generate(n, seed)` returns rule text lines; `TRIGGERS` are payload fragments that a benchmark
capture can include so that a known share of the traffic alerts.
"""

from __future__ import annotations

import random

_WORDS = [
    "admin",
    "login",
    "panel",
    "upload",
    "shell",
    "cmd",
    "exec",
    "config",
    "backup",
    "wp-content",
    "plugins",
    "invoker",
    "jmx",
    "console",
    "status",
    "cgi-bin",
    "phpmyadmin",
    "setup",
    "install",
    "update",
    "api",
    "v1",
    "v2",
    "beacon",
    "gate",
    "task",
    "report",
    "check",
    "order",
    "bot",
    "client",
    "stage",
    "payload",
    "loader",
    "dropper",
    "inject",
    "export",
    "import",
    "debug",
    "test",
    "download",
    "files",
    "images",
    "static",
    "assets",
    "query",
    "search",
    "user",
    "account",
    "token",
    "session",
    "auth",
]
_TLDS = ("com", "net", "org", "info", "xyz", "top", "ru", "cn", "io", "biz")
_UAS = ("Mozilla/4.0 (compatible|3b| MSIE 6.0|3b|", "python-requests/", "curl/7.", "Wget/1.",
        "Go-http-client/1.1", "WinHttp", "NSIS_Inetc", "Java/1.", "libwww-perl", "sqlmap/")  # fmt: skip
_CLASSES = ("trojan-activity", "web-application-attack", "attempted-recon", "policy-violation",
            "bad-unknown", "misc-activity", "attempted-admin", "command-and-control")  # fmt: skip

# Strings a capture may carry to trigger rules: rule k*50 (k >= 0) matches the k-th trigger.
TRIGGERS = tuple(f"/vmshield-bench-trigger-{k:03d}.php" for k in range(40))


def _word(r: random.Random) -> str:
    return r.choice(_WORDS)


def _token(r: random.Random, n: int = 6) -> str:
    return "".join(r.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(n))


def _hex(r: random.Random, n: int) -> str:
    return " ".join(f"{r.randrange(256):02X}" for _ in range(n))


def generate(n: int = 1000, seed: int = 1, sid_base: int = 9_000_000) -> list[str]:
    r = random.Random(seed)
    out: list[str] = []
    for i in range(n):
        sid = sid_base + i
        cls = r.choice(_CLASSES)
        tail = f"classtype:{cls}; sid:{sid}; rev:{r.randint(1, 9)}; metadata:created_at 2024_01_{1 + i % 28:02d};"
        if i % 50 == 0 and i // 50 < len(TRIGGERS):
            t = TRIGGERS[i // 50]
            out.append(f'alert http $HOME_NET any -> any any (msg:"VMSHIELD BENCH trigger {i // 50}"; '
                       f'flow:established,to_server; http.uri; content:"{t}"; fast_pattern; {tail})')  # fmt: skip
            continue
        kind = r.random()
        if kind < 0.45:  # HTTP request rules
            w1, w2 = _word(r), _token(r)
            parts = [f'http.method; content:"{r.choice(["GET", "POST"])}";',
                     f'http.uri; content:"/{w1}/{w2}"; fast_pattern;']  # fmt: skip
            x = r.random()
            if x < 0.3:
                parts.append(f'content:".{r.choice(["php", "asp", "jsp", "cgi"])}"; distance:0;')
            elif x < 0.45:
                parts.append(f'pcre:"/\\/{w1}\\/{w2}[0-9a-f]{{8}}\\.php$/U";')
            elif x < 0.6:
                parts.append(f'http.user_agent; content:"{r.choice(_UAS)}"; startswith;')
            elif x < 0.7:
                parts.append(f'http.host; content:"{_token(r, 8)}.{r.choice(_TLDS)}"; endswith;')
            elif x < 0.8:
                parts.append(f'http.request_body; content:"{_word(r)}={_token(r, 4)}"; nocase;')
            elif x < 0.85:
                parts.append(f'http.header; content:"X-{_token(r, 5)}|3a 20|"; nocase;')
            out.append(f'alert http $HOME_NET any -> $EXTERNAL_NET any (msg:"ET MALWARE {w1} {w2} CnC"; '
                       f'flow:established,to_server; {" ".join(parts)} {tail})')  # fmt: skip
        elif kind < 0.55:  # HTTP response
            out.append(f'alert http $EXTERNAL_NET any -> $HOME_NET any (msg:"ET INFO response {i}"; '
                       f'flow:established,to_client; http.stat_code; content:"200"; file.data; '
                       f'content:"|{_hex(r, 4)}|"; startswith; content:"{_token(r, 8)}"; distance:0; {tail})')  # fmt: skip
        elif kind < 0.65:  # DNS
            d = f"{_token(r, 7)}.{r.choice(_TLDS)}"
            out.append(f'alert dns $HOME_NET any -> any any (msg:"ET DNS Query to {d}"; '
                       f'dns.query; dotprefix; content:".{d}"; nocase; endswith; {tail})')  # fmt: skip
        elif kind < 0.72:  # TLS
            if r.random() < 0.7:
                d = f"{_token(r, 9)}.{r.choice(_TLDS)}"
                out.append(f'alert tls $HOME_NET any -> $EXTERNAL_NET any (msg:"ET TLS SNI {d}"; '
                           f'flow:established,to_server; tls.sni; content:"{d}"; bsize:{len(d)}; {tail})')  # fmt: skip
            else:
                h = "".join(r.choice("0123456789abcdef") for _ in range(32))
                out.append(f'alert tls any any -> any any (msg:"ET JA3 {h[:8]}"; ja3.hash; content:"{h}"; {tail})')  # fmt: skip
        elif kind < 0.87:  # TCP payload
            port = r.choice(
                ["any", "$HTTP_PORTS", "445", "[139,445]", "1024:", "3389", "$SSH_PORTS"]
            )
            x = r.random()
            if x < 0.4:
                body = f'content:"|{_hex(r, 4)}|"; depth:{4 + r.randint(0, 8)}; content:"{_token(r, 6)}"; distance:0; within:64;'
            elif x < 0.7:
                body = f'content:"{_word(r)} {_token(r, 5)}"; nocase; pcre:"/^[a-z]+\\s{_token(r, 3)}/Ri";'
            else:
                body = f'content:"|{_hex(r, 3)}|"; offset:2; depth:3; byte_test:2,>,{r.randint(100, 9000)},0,relative; isdataat:20,relative;'
            if r.random() < 0.1:
                fb = f"vmshield.fb{i}"
                out.append(f'alert tcp $HOME_NET any -> any {port} (msg:"ET SET {i}"; flow:established,to_server; '
                           f'{body} flowbits:set,{fb}; flowbits:noalert; {tail})')  # fmt: skip
                continue
            out.append(f'alert tcp $EXTERNAL_NET any -> $HOME_NET {port} (msg:"ET EXPLOIT {i}"; '
                       f'flow:established,to_server; {body} {tail})')  # fmt: skip
        elif kind < 0.94:  # UDP
            out.append(f'alert udp any any -> $HOME_NET {r.choice(["161", "123", "1900", "5060", "any"])} '
                       f'(msg:"ET UDP {i}"; content:"|{_hex(r, 3)}|"; depth:{3 + r.randint(0, 10)}; '
                       f'content:"{_token(r, 4)}"; distance:0; {tail})')  # fmt: skip
        elif kind < 0.97:  # scans / thresholds (header only)
            out.append(f'alert tcp $EXTERNAL_NET any -> $HOME_NET {r.randint(1, 65535)} (msg:"ET SCAN {i}"; '
                       f'flow:stateless; flags:S,12; threshold:type threshold, track by_src, count 5, seconds 60; {tail})')  # fmt: skip
        else:
            out.append(
                f'alert icmp any any -> $HOME_NET any (msg:"GPL ICMP {i}"; itype:{r.randint(13, 40)}; {tail})'
            )
    return out
