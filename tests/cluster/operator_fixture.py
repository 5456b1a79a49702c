"""The operator as a real subprocess (`python -m modelops operator ...`) for cluster tests.

`OperatorProcess` starts the operator against the test control plane's kubeconfig with
its own free ports (metrics, health, webhook), a certificate folder that survives
restarts, and a uniquely named managed ValidatingWebhookConfiguration. Its log goes to
`.state/operator-logs/<name>.log` and is kept after the test. Stop it with `stop()`
(SIGTERM), or `kill()` (SIGKILL) to test crashes; `close()` also deletes the webhook
configuration, which must not outlive the operator (its failurePolicy is Fail).

    with running_operator(control_plane, [namespace]) as operator:
        ...
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tests.cluster.conftest import load_controlplane

REPO_ROOT = Path(__file__).resolve().parents[2]
LOG_ROOT = REPO_ROOT / ".state" / "operator-logs"
WEBHOOK_CONFIGS = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"

controlplane = load_controlplane()


class OperatorProcess:
    """One operator process; `start()` returns once it serves and validates."""

    def __init__(
        self,
        control_plane: Any,
        namespaces: Sequence[str] = (),
        *,
        name: str | None = None,
        webhook: bool = True,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.control_plane = control_plane
        self.namespaces = list(namespaces)
        self.name = name or f"operator-{uuid.uuid4().hex[:8]}"
        self.webhook = webhook
        self.extra_args = list(extra_args)
        # KWOK pods run no server: the tests point the operator at theirs by annotation,
        # which an operator honours only when started so.
        self.env = {"MODELOPS_ENDPOINT_OVERRIDES": "1", **(env or {})}
        self.metrics_port, self.health_port, self.webhook_port = controlplane.free_ports(3)
        LOG_ROOT.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_ROOT / f"{self.name}.log"
        self.cert_dir = LOG_ROOT / f"{self.name}-certs"
        self.webhook_config = f"{self.name}.modelops.dev"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    # -- life -----------------------------------------------------------------------------

    def command(self) -> list[str]:
        args = [
            sys.executable,
            "-m",
            "modelops",
            "operator",
            "--kubeconfig",
            str(self.control_plane.kubeconfig),
            "--metrics-port",
            str(self.metrics_port),
            "--health-port",
            str(self.health_port),
            "--retry-backoff",
            "1",
            "--resync",
            "30",
        ]
        for namespace in self.namespaces:
            args += ["--namespace", namespace]
        if self.webhook:
            args += [
                "--webhook-port",
                str(self.webhook_port),
                "--webhook-addr",
                "127.0.0.1",
                "--webhook-host",
                "127.0.0.1",
                "--webhook-cert-dir",
                str(self.cert_dir),
                "--webhook-config-name",
                self.webhook_config,
            ]
        else:
            args.append("--no-webhook")
        return args + self.extra_args

    def start(self, timeout: float = 120.0, tries: int = 3) -> OperatorProcess:
        """Start and wait until ready; free ports can be taken by someone else before we
        bind them, so a start that fails on a busy port is retried on new ports."""
        for attempt in range(tries):
            try:
                return self._start(timeout)
            except RuntimeError as error:
                if "address already in use" not in str(error) or attempt == tries - 1:
                    raise
                self.metrics_port, self.health_port, self.webhook_port = controlplane.free_ports(3)
        raise AssertionError("unreachable")

    def _start(self, timeout: float) -> OperatorProcess:
        self.starts += 1
        env = {**os.environ, "KUBECONFIG": str(self.control_plane.kubeconfig), **self.env}
        env["PYTHONUNBUFFERED"] = "1"
        log = self.log_path.open("ab")
        log.write(f"\n===== start {self.starts}: {' '.join(self.command())}\n".encode())
        log.flush()
        self.process = subprocess.Popen(
            self.command(), cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        self._wait(f"{self.name} healthz", self._healthy, timeout)
        if self.webhook:
            self._wait(f"{self.name} webhook configuration", self._webhook_ready, timeout)
        return self

    def _wait(self, what: str, ready: Any, timeout: float) -> None:
        """Like poll_until, but an operator that died fails at once, with its log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            if ready():
                return
            time.sleep(0.5)
        raise TimeoutError(
            f"timed out after {timeout:.0f}s waiting for {what}:\n{self.log_tail(40)}"
        )

    def _check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(
                f"operator exited with {self.process.returncode}:\n{self.log_tail(40)}"
            )

    def _healthy(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.health_port}/healthz"
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _webhook_ready(self) -> bool:
        try:
            config = self.control_plane.rest.get(f"{WEBHOOK_CONFIGS}/{self.webhook_config}")
        except controlplane.ApiError:
            return False
        return bool(config.get("webhooks"))

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as in a node failure or OOM kill."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self, grace: float = 30.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.kill()

    def close(self) -> None:
        self.stop()
        with contextlib.suppress(controlplane.ApiError):
            self.control_plane.rest.request("DELETE", f"{WEBHOOK_CONFIGS}/{self.webhook_config}")

    # -- observation ----------------------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text: str = response.read().decode()
            return text

    def metric(self, name: str, **labels: str) -> float | None:
        """One sample of /metrics, matched by name and exact labels."""
        from prometheus_client.parser import text_string_to_metric_families

        for family in text_string_to_metric_families(self.metrics()):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return None

    def cpu_seconds(self) -> float:
        """User + system CPU time of the operator process so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def peak_rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM in /proc status")

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def running_operator(
    control_plane: Any, namespaces: Sequence[str] = (), **kwargs: Any
) -> Iterator[OperatorProcess]:
    operator = OperatorProcess(control_plane, namespaces, **kwargs)
    try:
        operator.start()
        yield operator
    finally:
        operator.close()


def wait_for(what: str, fn: Any, timeout: float = 60.0, poll: float = 0.25) -> Any:
    """poll_until from the control-plane module: returns fn()'s first truthy value."""
    return controlplane.poll_until(what, fn, timeout=timeout, poll=poll)
