"""Hooks for every test process: how the process ends once pytest has its verdict."""

from __future__ import annotations

import os
import sys

import pytest

_SESSION = pytest.StashKey[pytest.Session]()


def pytest_sessionfinish(session: pytest.Session) -> None:
    session.config.stash[_SESSION] = session


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave with pytest's exit status, skipping the interpreter's own teardown.

    Native threads that outlive the tests (Ray's core worker, gRPC, torch) have crashed
    that teardown with a segmentation fault after every test had passed and the summary
    was printed, turning a green run into exit 139. Every result is reported by now and
    every other plugin has unconfigured (this hook runs last), so nothing is lost.
    """
    session = config.stash.get(_SESSION, None)
    if session is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(session.exitstatus))
