"""`modelops operator --kubeconfig FILE` against a real HTTP server standing in for the API.

The server records every request's Authorization and User-Agent headers, so the tests
see whether Kopf's own client (User-Agent `kopf/...`) got the flag's credentials. The
environment has no KUBECONFIG and a HOME without `~/.kube`: nothing but the flag can
point at the server.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.runtime

TOKEN = "flag-token"


@dataclass
class FakeApi:
    """What the stand-in API server saw, and the status it answers every request with."""

    status: int = 200
    seen: list[tuple[str, str, str]] = field(default_factory=list)  # (path, auth, agent)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def kopf_requests(self) -> list[tuple[str, str, str]]:
        with self.lock:
            return [s for s in self.seen if s[2].startswith("kopf/")]


def _handler(api: FakeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            with api.lock:
                api.seen.append(
                    (
                        self.path,
                        self.headers.get("Authorization", ""),
                        self.headers.get("User-Agent", ""),
                    )
                )
            # Discovery with no groups: enough for Kopf to start its watches and idle.
            if api.status != 200:
                body = {
                    "kind": "Status",
                    "status": "Failure",
                    "reason": "Unauthorized",
                    "message": "Unauthorized",
                    "code": api.status,
                }
            elif self.path.startswith("/apis"):
                body = {"kind": "APIGroupList", "groups": []}
            else:
                body = {"kind": "APIVersions", "versions": ["v1"]}
            data = json.dumps(body).encode()
            self.send_response(api.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def fake_api() -> Iterator[tuple[FakeApi, str]]:
    api = FakeApi()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": server}}],
                "users": [{"name": "fake", "user": {"token": TOKEN}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                "current-context": "fake",
            }
        )
    )
    return path


def _operator(tmp_path: Path, kubeconfig: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["HOME"] = str(tmp_path)  # no ~/.kube/config to fall back on
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelops",
            "operator",
            "--kubeconfig",
            str(kubeconfig),
            "--no-webhook",
            "--metrics-port",
            str(_free_port()),
            "--health-port",
            str(_free_port()),
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _stop(process: subprocess.Popen[str]) -> str:
    if process.poll() is None:
        process.terminate()
    try:
        out, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
    return out


def test_kopf_logs_in_with_the_kubeconfig_flag(
    tmp_path: Path, fake_api: tuple[FakeApi, str]
) -> None:
    api, url = fake_api
    process = _operator(tmp_path, _kubeconfig(tmp_path / "config", url))
    try:
        deadline = time.monotonic() + 60
        while not api.kopf_requests() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        out = _stop(process)
    assert api.kopf_requests(), f"Kopf never reached the flag's server:\n{out}"
    assert {auth for _, auth, _ in api.kopf_requests()} == {f"Bearer {TOKEN}"}
    assert "login_via_client" not in out


def _exit_of(process: subprocess.Popen[str], seconds: float) -> tuple[int | None, str]:
    try:
        out, _ = process.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        return None, _stop(process)
    return process.returncode, out


def test_a_closed_port_stops_the_operator_with_a_message(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_free_port()}"  # nobody listens there
    process = _operator(tmp_path, _kubeconfig(tmp_path / "config", url))
    code, out = _exit_of(process, 30)
    assert code not in (None, 0), out
    assert f"cannot reach the Kubernetes API at {url}" in out


def test_rejected_credentials_stop_the_operator_with_a_message(
    tmp_path: Path, fake_api: tuple[FakeApi, str]
) -> None:
    api, url = fake_api
    api.status = 401
    process = _operator(tmp_path, _kubeconfig(tmp_path / "config", url))
    code, out = _exit_of(process, 30)
    assert code not in (None, 0), out
    assert f"the Kubernetes API at {url} refused the credentials" in out
    assert "401" in out


def test_a_missing_kubeconfig_stops_the_operator_with_a_message(tmp_path: Path) -> None:
    process = _operator(tmp_path, tmp_path / "absent")
    code, out = _exit_of(process, 30)
    assert code not in (None, 0), out
    assert f"cannot load the kubeconfig {tmp_path / 'absent'}" in out
