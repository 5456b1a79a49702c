"""One Ray instance for a whole `modelops run`, started when the first job needs it.

Starting Ray takes seconds to tens of seconds; a job that started its own would pay that
for every training run, update and search. The head is a supervised child like the
others (`ray start --head --block`), stopped with them; each training process joins it
with `--ray-address` and the run's own Ray token (`env`), as the operator's pods do.
Jobs with one worker and no search run without Ray at all (see
the runtime's `train` command), so a run that has only those never starts it.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
from pathlib import Path

from modelops.local.processes import Supervisor

PROCESS = "ray-head"


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def head_env(token: str) -> dict[str, str]:
    """The environment of a head that checks `token` on every connection, and of its clients."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}


def head_argv(python: str, host: str, port: int, cpus: int, temp_dir: Path) -> list[str]:
    """`ray start --head --block` on host:port with `cpus` CPUs and no dashboard.

    `temp_dir` must be short: Ray's socket paths under it must fit 107 bytes.
    """
    return [
        python, "-m", "ray.scripts.scripts", "start", "--head", "--block",
        f"--node-ip-address={host}", f"--port={port}", f"--num-cpus={cpus}", "--num-gpus=0",
        "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp_dir}",
    ]  # fmt: skip


class RayHead:
    """Starts the head on first use; `address` is None until its GCS accepts connections."""

    def __init__(self, supervisor: Supervisor, python: str, cpus: int, temp_dir: Path, host: str = "127.0.0.1") -> None:
        self.supervisor = supervisor
        self.python = python
        self.cpus = cpus
        self.temp_dir = temp_dir
        self.host = host
        self.port: int | None = None
        # Ray checks a token on every connection; each run makes its own.
        self.token = secrets.token_hex(32)

    def env(self) -> dict[str, str]:
        """What the head and every process that joins it need in their environment."""
        return head_env(self.token)

    def argv(self, port: int) -> list[str]:
        return head_argv(self.python, self.host, port, self.cpus, self.temp_dir)

    def _listening(self) -> bool:
        if self.port is None:
            return False
        with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=0.2):
            return True
        return False

    def address(self) -> str | None:
        """The head's address once it serves; starts it (or starts it again) when needed."""
        child = self.supervisor.get(PROCESS)
        if child is None or child.returncode() is not None:
            if child is not None:
                self.supervisor.reap(PROCESS)
            self.port = free_port(self.host)
            self.temp_dir.mkdir(parents=True, exist_ok=True)
            # Ray Train's settings come from each job's driver (the runtime's train command),
            # which hands them to the controller and workers it starts on this head.
            self.supervisor.start(PROCESS, self.argv(self.port), env=self.env())
            return None
        return f"{self.host}:{self.port}" if self._listening() else None
