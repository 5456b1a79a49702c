"""Throttling (503 SlowDown) is retried with back-off, in both of botocore's retry modes.

The server's own SlowDown comes from SeaweedFS's S3 circuit breaker (`weed shell`
`s3.circuitBreaker`), set to admit no write (or no read) at all and lifted once the
client has been refused a few times. For exact counts, both retry modes and giving up, a
real HTTP proxy in front of the server answers the next N requests with S3's 503 SlowDown
document itself (`tests/runtime/s3_proxy.py`). The proxy counts what crossed it either way.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from modelops_runtime import artifacts
from tests.runtime.s3_helpers import BUCKET, fresh_prefix, key_of, read
from tests.runtime.s3_proxy import S3Proxy

pytestmark = pytest.mark.runtime

THROTTLED = 2


@pytest.fixture
def proxy(s3_server: Any) -> Iterator[S3Proxy]:
    proxy = S3Proxy(s3_server.endpoint).start()
    yield proxy
    proxy.stop()


@pytest.mark.parametrize("mode", ["standard", "adaptive"])
def test_a_throttled_write_and_read_are_retried_until_they_succeed(
    s3: Any, proxy: S3Proxy, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    monkeypatch.setenv("MODELOPS_S3_ENDPOINT_URL", proxy.endpoint)
    monkeypatch.setenv("MODELOPS_S3_RETRY_MODE", mode)
    monkeypatch.setenv("MODELOPS_S3_MAX_ATTEMPTS", str(THROTTLED + 2))
    uri = f"{fresh_prefix('throttle')}/state.json"
    object_path = f"/{BUCKET}/{key_of(uri)}"
    artifacts.filesystem(uri)  # the bucket's first-use check, outside the counts
    proxy.reset()

    proxy.throttle_next(THROTTLED)
    artifacts.write_json(uri, {"epoch": 3})
    puts = [(s.method, s.status) for s in proxy.seen if s.path == object_path and s.method == "PUT"]
    refused = [s for s in proxy.seen if s.status == 503]
    assert len(refused) == THROTTLED, proxy.seen
    # Whatever the throttled requests were, the put itself went through once, after them.
    assert puts[-1] == ("PUT", 200) and puts.count(("PUT", 200)) == 1, puts
    assert read(s3, uri) == b'{\n  "epoch": 3\n}'

    proxy.reset()
    proxy.throttle_next(THROTTLED)
    assert artifacts.read_json(uri) == {"epoch": 3}
    gets = [s.status for s in proxy.seen if s.path == object_path and s.method in ("GET", "HEAD")]
    assert len([s for s in proxy.seen if s.status == 503]) == THROTTLED, proxy.seen
    assert gets[-1] in (200, 206) and 503 in gets, gets


def test_throttling_past_the_attempts_fails(
    s3: Any, proxy: S3Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELOPS_S3_ENDPOINT_URL", proxy.endpoint)
    monkeypatch.setenv("MODELOPS_S3_MAX_ATTEMPTS", "2")
    uri = f"{fresh_prefix('throttle')}/state.json"
    artifacts.filesystem(uri)
    proxy.reset()
    proxy.throttle_next(10_000)
    with pytest.raises(OSError, match="Service Unavailable"):
        artifacts.read_json(uri)
    # Each request was tried as often as configured, then the run was told.
    paths = Counter(s.path for s in proxy.seen)
    assert proxy.seen and {s.status for s in proxy.seen} == {503}
    assert max(paths.values()) >= 2, paths
    print(f"requests answered SlowDown before the read gave up: {sum(paths.values())}")
    proxy.throttle_next(0)


def test_the_retry_mode_and_attempts_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelops_runtime import storage

    monkeypatch.setenv("MODELOPS_S3_RETRY_MODE", "legacy")
    with pytest.raises(
        ValueError, match="MODELOPS_S3_RETRY_MODE must be standard or adaptive, not 'legacy'"
    ):
        storage.options("s3://b/x")
    monkeypatch.setenv("MODELOPS_S3_RETRY_MODE", "adaptive")
    monkeypatch.setenv("MODELOPS_S3_MAX_ATTEMPTS", "0")
    with pytest.raises(
        ValueError, match="MODELOPS_S3_MAX_ATTEMPTS must be a whole number >= 1, not '0'"
    ):
        storage.options("s3://b/x")
    monkeypatch.setenv("MODELOPS_S3_MAX_ATTEMPTS", "4")
    assert storage.options("s3://b/x")["config_kwargs"]["retries"] == {
        "max_attempts": 4,
        "mode": "adaptive",
    }


def breaker(server: Any, command: str) -> None:
    """Apply a `s3.circuitBreaker` command through `weed shell`, as an operator would."""
    master, filer = server.shell_addresses()
    shell = [str(server.weed), "shell", f"-master={master}", f"-filer={filer}"]
    done = subprocess.run(
        shell,
        input=f"s3.circuitBreaker {command} -apply\nexit\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def refused_directly(server: Any, action: str, key: str) -> bool:
    """Whether the server itself now answers SlowDown to a write (or read) of `key`."""
    from botocore.exceptions import ClientError

    client = server.client()
    try:
        if action == "Write":
            client.put_object(Bucket=BUCKET, Key=key, Body=b"probe")
        else:
            client.head_object(Bucket=BUCKET, Key=key)
    except ClientError as error:
        return error.response["Error"]["Code"] in ("SlowDown", "503")
    return False


def wait_for(condition: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_the_servers_own_slowdown_is_waited_out(
    s3: Any, proxy: S3Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELOPS_S3_ENDPOINT_URL", proxy.endpoint)
    root = fresh_prefix("breaker")
    uri, probe = f"{root}/state.json", key_of(f"{root}/probe")
    object_path = f"/{BUCKET}/{key_of(uri)}"
    artifacts.filesystem(uri)
    outcome: dict[str, Any] = {}

    def run(name: str, step: Any) -> threading.Thread:
        def target() -> None:
            try:
                outcome[name] = step()
            except Exception as error:  # reported by the assertion below
                outcome[name] = error

        thread = threading.Thread(target=target)
        thread.start()
        return thread

    def refused(methods: tuple[str, ...]) -> int:
        return len(
            [
                s
                for s in proxy.seen
                if s.path == object_path and s.method in methods and s.status == 503
            ]
        )

    try:
        for action, methods, step in (
            ("Write", ("PUT",), lambda: artifacts.write_json(uri, {"epoch": 5})),
            ("Read", ("GET", "HEAD"), lambda: artifacts.read_json(uri)),
        ):
            breaker(s3, f"-global -type Count -actions {action} -values 0")
            wait_for(
                lambda action=action: refused_directly(s3, action, probe),
                f"the breaker on {action}",
            )
            proxy.reset()
            thread = run(action, step)
            wait_for(
                lambda methods=methods: refused(methods) >= 2, f"two refused {action.lower()}s"
            )
            breaker(s3, "-global -disable")
            thread.join(timeout=60)
            assert not isinstance(outcome.get(action), Exception), outcome
            statuses = [
                s.status for s in proxy.seen if s.path == object_path and s.method in methods
            ]
            assert statuses.count(503) >= 2 and statuses[-1] in (200, 206), statuses
            print(
                f"{action}: {statuses.count(503)} SlowDown answers from the server, then {statuses[-1]}"
            )
    finally:
        breaker(s3, "-delete")
    assert outcome["Read"] == {"epoch": 5}
    assert read(s3, uri) == b'{\n  "epoch": 5\n}'
