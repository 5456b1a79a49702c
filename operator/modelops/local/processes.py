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


MARKER_ENV = "MODELOPS_LOCAL_RUN"


def marked_processes(marker: str) -> list[int]:
    """Pids whose environment carries `MODELOPS_LOCAL_RUN=<marker>`.

    Some children start grandchildren in sessions of their own (Ray's workers call
    setsid), out of reach of a process-group signal; the inherited environment
    still names the run they belong to.
    """
    needle = f"{MARKER_ENV}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def sweep(marker: str, grace_seconds: float = 5.0) -> list[int]:
    """SIGTERM, then SIGKILL, every process of the run that is still there."""
    pids = marked_processes(marker)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline and marked_processes(marker):
        time.sleep(0.1)
    for pid in marked_processes(marker):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return pids


class Supervisor:
    """Starts, tracks and stops the children; `stop_all` leaves no process behind."""

    def __init__(self, log_dir: Path, marker: str) -> None:
        self.log_dir = log_dir
        self.marker = marker
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
            env={**os.environ, **(env or {}), MARKER_ENV: self.marker},
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
        """Stop every child at once (one grace period in total), then sweep the run."""
        children = list(self.children.values())
        self.children.clear()
        for child in children:
            _signal_group(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        for child in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            _signal_group(child.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(timeout=5)
            child.log.close()
        sweep(self.marker)


def is_ours(pid: int) -> bool:
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
        if not is_ours(pid):
            continue
        stop_group(pid, 5.0)
        stopped.append(name)
    return stopped
