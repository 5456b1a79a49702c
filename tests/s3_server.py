"""A real S3-compatible server for the tests: SeaweedFS's `weed mini` on loopback.

`weed` is built by `.ci/setup.d/seaweedfs.sh` into the version-keyed cache; the version
is read from that script, so the two never disagree. A test that needs the server fails,
not skips, when the binary is missing. Every port is chosen free on 127.0.0.1 and every
extra service (WebDAV, admin UI, Iceberg/Lance catalogs, telemetry) is off: the server
listens on loopback only and calls nowhere.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

SETUP_SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "setup.d" / "seaweedfs.sh"
ACCESS_KEY = "modelops-test-key"
SECRET_KEY = "modelops-test-secret-0123456789abcdef"  # a test server's own, on loopback
REGION = "us-east-1"


def version() -> str:
    found = re.search(r'^VERSION="([^"]+)"', SETUP_SCRIPT.read_text(), re.MULTILINE)
    assert found, f"{SETUP_SCRIPT} names no VERSION"
    return found.group(1)


def binary() -> Path:
    base = os.environ.get("MODELOPS_CACHE") or str(Path.home() / ".cache" / "modelops")
    return Path(base) / "seaweedfs" / version() / "weed"


def free_ports(count: int) -> list[int]:
    """Distinct free ports: all bound at once, so none is handed out twice."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


class S3Server:
    """`weed mini` with one admin identity and the given buckets; start(), stop(), restart()."""

    def __init__(self, root: Path, buckets: list[str], ip: str = "127.0.0.1") -> None:
        self.weed = binary()
        if not self.weed.is_file():
            raise FileNotFoundError(
                f"SeaweedFS's weed is not built ({self.weed}); run: bash {SETUP_SCRIPT.relative_to(SETUP_SCRIPT.parents[2])}"
            )
        self.root = root
        self.buckets = buckets
        ports = free_ports(10)
        self.port = ports[0]
        # Another address (the real node's, which its pods reach) serves a cluster's pods.
        self.ip = ip
        self.endpoint = f"http://{ip}:{self.port}"
        self._ports = ports
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = root / "weed.log"
        self.config = root / "s3.json"
        identity = {
            "name": "modelops",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        self.config.write_text(json.dumps({"identities": [identity]}))
        (root / "data").mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        (
            s3,
            s3_grpc,
            master,
            master_grpc,
            filer,
            filer_grpc,
            volume,
            volume_grpc,
            admin,
            admin_grpc,
        ) = self._ports
        return [
            str(self.weed),
            "mini",
            f"-dir={self.root / 'data'}",
            f"-ip={self.ip}",
            f"-ip.bind={self.ip}",
            f"-s3.port={s3}",
            f"-s3.port.grpc={s3_grpc}",
            f"-master.port={master}",
            f"-master.port.grpc={master_grpc}",
            f"-filer.port={filer}",
            f"-filer.port.grpc={filer_grpc}",
            f"-volume.port={volume}",
            f"-volume.port.grpc={volume_grpc}",
            f"-s3.config={self.config}",
            f"-bucket={','.join(self.buckets)}",
            "-master.telemetry=false",
            "-webdav=false",
            # The admin server runs even without its UI: its ports are chosen too.
            "-admin.ui=false",
            f"-admin.port={admin}",
            f"-admin.port.grpc={admin_grpc}",
            "-admin.port.legacy=0",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ]

    def shell_addresses(self) -> tuple[str, str]:
        """`weed shell`'s -master and -filer: each host:port.grpcPort."""
        _, _, master, master_grpc, filer, filer_grpc, *_ = self._ports
        return f"{self.ip}:{master}.{master_grpc}", f"{self.ip}:{filer}.{filer_grpc}"

    def env(self) -> dict[str, str]:
        """What a pod's Secret and config would give the runtime."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "MODELOPS_S3_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": REGION,
        }

    def client(self) -> Any:
        """A plain botocore client, independent of the code under test."""
        import botocore.session
        from botocore.config import Config

        return botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(
                s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=2
            ),
        )

    def start(self, timeout_s: float = 60.0) -> None:
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        client = self.client()
        while time.monotonic() - started < timeout_s:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited with {self.process.returncode}:\n{self.log()}")
            if self._buckets_ready(client):
                self.start_seconds = time.monotonic() - started
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"weed's S3 gateway not ready in {timeout_s}s:\n{self.log()}")

    def _buckets_ready(self, client: Any) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            for bucket in self.buckets:
                client.head_bucket(Bucket=bucket)
        except (BotoCoreError, ClientError):
            return False
        return True

    def stop(self, kill: bool = False) -> None:
        """SIGTERM (or SIGKILL with `kill`), then SIGKILL if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]
