"""Bad input to the on-access commands is refused with a message naming what is wrong."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    return subprocess.run(
        [sys.executable, "-m", "vmshield", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["agent", "--endpoint", "unix:/nonexistent.sock"], "nothing to protect"),
        (["agent", "--endpoint", "unix:/x.sock", "--path", "/"], "refusing to block /"),
        (["agent", "--endpoint", "unix:/x.sock", "--path", "/tmp"], "refusing to block /tmp"),
        (["agent", "--endpoint", "http://x", "--path", "/srv"], "expected unix:PATH"),
        (["agent", "--endpoint", "unix:/x.sock", "--path", "/no/such/dir"], "not a directory"),
        (
            [
                "agent",
                "--endpoint",
                "unix:/x.sock",
                "--path",
                "/usr/share",
                "--exclude-path",
                "re:(",
            ],
            "bad regular expression",
        ),
        (["svm", "--listen", "tcp://127.0.0.1:0"], "need --tls-cert"),
        (["svm", "--listen", "vsock://abc:1"], "CID must be a number"),
        (["introspection", "run", "--svm", "tcp://127.0.0.1:1"], "need --tls-cert"),
    ],
)
def test_bad_arguments_are_named(args: list[str], message: str, tmp_path: Path) -> None:
    r = run(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in r.stderr


def test_bad_svm_config_names_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "svm.toml"
    cfg.write_text('[profiles.strict]\naction = "vaporise"\n')
    r = run("svm", "--config", str(cfg), "--control", str(tmp_path / "c.sock"))
    assert r.returncode == 2 and "profiles.strict.action" in r.stderr and "vaporise" in r.stderr


def test_token_command_appends_a_usable_entry(tmp_path: Path) -> None:
    from vmshield.introspection.auth import Authenticator

    tokens = tmp_path / "tokens.toml"
    r = run("introspection", "token", "--tokens", str(tokens), "web1", "--uuid", "4210-AA")
    assert r.returncode == 0
    token = r.stdout.strip()
    auth = Authenticator.load(tokens)
    assert [(e.vm, e.token, e.uuid) for e in auth.tokens] == [("web1", token, "4210-AA")]
    again = run("introspection", "token", "--tokens", str(tokens), "web1")
    assert again.returncode == 2 and "already has a token" in again.stderr
