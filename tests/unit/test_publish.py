"""Publishing is create-only: one writer owns `v<N>`, readers never see half a version.

On a file system (file://) and on fsspec's in-memory store standing in for an object
store (conditional put, then copies with the card last).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import fsspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelops_runtime import artifacts, publish

MODEL = "m"
FILES = ("model.safetensors", "metrics.json", "snapshot.json", "training.json", "members/0/model.json")


def _stage(store: str, token: str, files: int = 0) -> tuple[str, dict[str, bytes]]:
    """A staged version whose every file names its writer; the card is written last."""
    staging = publish.stage_uri(store, MODEL)
    fs, root = artifacts.filesystem(staging)
    content = {name: f"{token}:{name}".encode() * 64 for name in FILES}
    content.update({f"extra/{i}.bin": f"{token}:{i}".encode() * 16 for i in range(files)})
    content[artifacts.CARD] = token.encode()
    for name, data in content.items():
        fs.makedirs(f"{root}/{name}".rsplit("/", 1)[0], exist_ok=True)
        fs.pipe_file(f"{root}/{name}", data)
    return staging, content


def _run(token: str) -> dict[str, Any]:
    return {"jobId": f"job-{token}", "run": token}


def _seen(store: str, version: int = 1) -> dict[str, bytes] | None:
    """What a reader finds: None while the version is not published, else its files."""
    if version not in artifacts.list_versions(store, MODEL):
        return None
    fs, root = artifacts.filesystem(artifacts.version_uri(store, MODEL, version))
    return {str(p)[len(root) + 1 :]: fs.cat_file(p) for p in fs.find(root) if not str(p).endswith(publish.OWNER)}


def _memory_store() -> str:
    return f"memory://store-{uuid.uuid4().hex}"


@pytest.fixture(params=["file", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return tmp_path.as_uri() if request.param == "file" else _memory_store()


def test_a_second_publisher_of_a_version_is_refused(store: str) -> None:
    first, content = _stage(store, "a")
    publish.publish(first, artifacts.version_uri(store, MODEL, 1), _run("a"))
    second, _ = _stage(store, "b")
    with pytest.raises(publish.VersionTaken, match=r"already exists.*job-a"):
        publish.publish(second, artifacts.version_uri(store, MODEL, 1), _run("b"))
    assert _seen(store) == content
    assert publish.owner(artifacts.version_uri(store, MODEL, 1)) == _run("a")
    assert publish.next_number(store, MODEL) == 2


def test_concurrent_threads_exactly_one_wins(tmp_path: Path) -> None:
    store = tmp_path.as_uri()
    writers = 8
    staged = [_stage(store, f"w{i}", files=20) for i in range(writers)]
    barrier = threading.Barrier(writers)
    outcomes: list[str] = [""] * writers

    def write(i: int) -> None:
        barrier.wait()
        try:
            publish.publish(staged[i][0], artifacts.version_uri(store, MODEL, 1), _run(f"w{i}"))
            outcomes[i] = "won"
        except publish.VersionTaken:
            outcomes[i] = "taken"

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["taken"] * (writers - 1) + ["won"]
    winner = outcomes.index("won")
    assert _seen(store) == staged[winner][1]
    assert publish.owner(artifacts.version_uri(store, MODEL, 1)) == _run(f"w{winner}")


def _publish_in_process(store: str, token: str, barrier: Any, results: Any) -> None:
    staging, _ = _stage(store, token, files=20)
    barrier.wait()
    try:
        publish.publish(staging, artifacts.version_uri(store, MODEL, 1), _run(token))
        results.put((token, "won"))
    except publish.VersionTaken:
        results.put((token, "taken"))


def test_concurrent_processes_exactly_one_wins(tmp_path: Path) -> None:
    store = tmp_path.as_uri()
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(4), context.Queue()
    processes = [context.Process(target=_publish_in_process, args=(store, f"p{i}", barrier, results)) for i in range(4)]
    for process in processes:
        process.start()
    outcomes = dict(results.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(timeout=30)
    winners = [token for token, outcome in outcomes.items() if outcome == "won"]
    assert len(winners) == 1 and len(outcomes) == 4
    seen = _seen(store)
    assert seen is not None and seen[artifacts.CARD] == winners[0].encode()
    assert all(data.startswith(winners[0].encode()) for data in seen.values())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["file", "memory"]), stop=st.integers(0, 20), other_first=st.booleans())
def test_a_publish_stopped_at_any_step_leaves_no_partial_version(
    tmp_path_factory: pytest.TempPathFactory, kind: str, stop: int, other_first: bool
) -> None:
    store = tmp_path_factory.mktemp("store").as_uri() if kind == "file" else _memory_store()
    target = artifacts.version_uri(store, MODEL, 1)
    staging, content = _stage(store, "a", files=3)
    steps = publish.publish_steps(staging, target, _run("a"))
    for step in steps[: min(stop, len(steps))]:
        step()
        seen = _seen(store)
        assert seen is None or seen == content
    # The run starts again: it stages anew and publishes; its own claim does not stop it.
    retry, _ = _stage(store, "a", files=3)
    other, _ = _stage(store, "b", files=3)
    if other_first and stop == 0:
        publish.publish(other, target, _run("b"))
        assert _seen(store) is not None and publish.owner(target) == _run("b")
        return
    if _seen(store) is None:
        publish.publish(retry, target, _run("a"))
    else:  # whole already: not even its own run writes it again
        with pytest.raises(publish.VersionTaken) as taken:
            publish.publish(retry, target, _run("a"))
        assert publish.same_run(taken.value.owner, _run("a"))
    assert _seen(store) == content
    with pytest.raises(publish.VersionTaken):
        publish.publish(other, target, _run("b"))
    assert _seen(store) == content


@settings(max_examples=40, deadline=None)
@given(order=st.lists(st.booleans(), min_size=30, max_size=30))
def test_two_object_store_publishers_interleaved_one_wins(order: list[bool]) -> None:
    store = _memory_store()
    target = artifacts.version_uri(store, MODEL, 1)
    staged = {token: _stage(store, token, files=2) for token in ("a", "b")}
    pending = {token: publish.publish_steps(staging, target, _run(token)) for token, (staging, _) in staged.items()}
    lost: set[str] = set()
    turns = iter(order)
    while any(pending.values()):
        token = "a" if next(turns, True) else "b"
        if not pending[token]:
            token = "b" if token == "a" else "a"
        try:
            pending[token].pop(0)()
        except publish.VersionTaken:
            lost.add(token)
            pending[token] = []
        seen = _seen(store)
        assert seen is None or seen in (staged["a"][1], staged["b"][1])
    assert len(lost) == 1
    winner = ({"a", "b"} - lost).pop()
    assert _seen(store) == staged[winner][1]


_CHILD = """
import sys
from tests.unit.test_publish import _run, _stage
from modelops_runtime import artifacts, publish
store = sys.argv[1]
print("ready", flush=True)
staging, _ = _stage(store, "a", files=40)
publish.publish(staging, artifacts.version_uri(store, "m", 1), _run("a"))
print("done", flush=True)
"""


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(delay_ms=st.integers(0, 40))
def test_a_killed_publisher_leaves_the_whole_version_or_none(tmp_path_factory: pytest.TempPathFactory, delay_ms: int) -> None:
    store = tmp_path_factory.mktemp("killed").as_uri()
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, store], stdout=subprocess.PIPE, text=True,
        cwd=Path(__file__).parents[2], env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    time.sleep(delay_ms / 1000)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    expected = _stage(_memory_store(), "a", files=40)[1]
    seen = _seen(store)
    assert seen is None or seen == expected
    root = Path(store.removeprefix("file://")) / MODEL / "v1"
    assert not root.exists() or _seen(store) == expected, "a version folder is visible but not whole"


def test_a_store_from_before_publishing_is_read_as_it_is(tmp_path: Path) -> None:
    store = tmp_path.as_uri()
    legacy = tmp_path / MODEL / "v1"
    legacy.mkdir(parents=True)
    (legacy / artifacts.METRICS).write_text('{"accuracy": 0.5}')
    (legacy / artifacts.CARD).write_text("{}")
    (tmp_path / MODEL / "v2").mkdir()  # an old writer's reservation, never finished
    assert artifacts.list_versions(store, MODEL) == [1]
    assert artifacts.load_metrics(artifacts.version_uri(store, MODEL, 1)) == {"accuracy": 0.5}
    assert publish.owner(artifacts.version_uri(store, MODEL, 1)) is None
    assert publish.taken(store, MODEL) == [1, 2] and publish.next_number(store, MODEL) == 3
    staging, _ = _stage(store, "a")
    with pytest.raises(publish.VersionTaken, match="an earlier writer"):
        publish.publish(staging, artifacts.version_uri(store, MODEL, 1), _run("a"))
    assert (legacy / artifacts.CARD).read_text() == "{}"
    fs = fsspec.filesystem("file")
    assert fs.exists(str(tmp_path / MODEL / publish.STAGING))
    publish.discard(staging)
    assert not fs.exists(staging.removeprefix("file://"))
