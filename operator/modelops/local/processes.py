"""Child processes of local mode, each in its own process group, so none is orphaned."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def returncode(self) -> int | None:
        return self.process.poll()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def stop_group(pid: int, grace_seconds: float = 10.0) -> None:
    """SIGTERM a process group, then SIGKILL what is left after the grace period."""
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    _signal_group(pid, signal.SIGKILL)


class Supervisor:
    """Starts, tracks and stops the children; `stop_all` leaves no process behind."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: dict[str, Child] = {}
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> Child:
        if name in self.children and self.children[name].returncode() is None:
            raise RuntimeError(f"{name} is already running")
        log_path = self.log_dir / f"{name}.log"
        log = log_path.open("ab")
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # its own group: we can stop it with all its children
        )
        child = Child(name, process, log_path, log)
        self.children[name] = child
        return child

    def get(self, name: str) -> Child | None:
        return self.children.get(name)

    def stop(self, name: str, grace_seconds: float = 10.0) -> None:
        child = self.children.pop(name, None)
        if child is None:
            return
        stop_group(child.pid, grace_seconds)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.process.wait(timeout=grace_seconds)
        child.log.close()

    def reap(self, name: str) -> int | None:
        """Forget a finished child and return its exit code; None while it runs."""
        child = self.children.get(name)
        if child is None or child.returncode() is None:
            return None
        self.children.pop(name)
        child.log.close()
        stop_group(child.pid, 0.5)  # anything it left behind in its group
        return child.returncode()

    def pids(self) -> dict[str, int]:
        return {name: child.pid for name, child in self.children.items()}

    def stop_all(self, grace_seconds: float = 10.0) -> None:
        for pid in [child.pid for child in self.children.values()]:
            _signal_group(pid, signal.SIGTERM)
        for name in list(self.children):
            self.stop(name, grace_seconds)


def _is_ours(pid: int) -> bool:
    """Guard against a recycled pid: only groups running our runtime are stopped."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"modelops" in cmdline


def stop_leftovers(recorded: Mapping[str, int]) -> list[str]:
    """Stop process groups a previous run recorded but did not stop (it was killed)."""
    stopped = []
    for name, pid in recorded.items():
        if not _is_ours(pid):
            continue
        stop_group(pid, 5.0)
        stopped.append(name)
    return stopped
