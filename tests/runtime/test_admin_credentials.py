"""A ModelDeployment's admin token opens its own servers and no other deployment's.

One real server process, started with the token file its pod would mount (the content of
the Secret the operator's builders write for that deployment), driven over HTTP by the
operator's own routing client with its own token and with the tokens of other
deployments: another namespace, another name, the same name created again.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from modelops.api.deployment import ModelDeploymentSpec
from modelops.k8s.modeldeployment import builders, credentials, routing
from modelops.k8s.modeldeployment.metrics_source import Endpoint
from tests.runtime.serve_helpers import ServerProcess, save_classifier

pytestmark = pytest.mark.runtime

KEY = secrets.token_bytes(credentials.KEY_BYTES)
MINE = ("ml", "digits", "uid-mine")
THEIRS = [
    ("ml-other", "digits", "uid-mine"),  # the same name in another tenant's namespace
    ("ml", "digits-b", "uid-b"),  # another deployment in the same namespace
    ("ml", "digits", "uid-again"),  # this one deleted and created again
]


def token(namespace: str, name: str, uid: str, key: bytes = KEY) -> str:
    return credentials.admin_token(key, namespace, name, uid)


def secret_file_content(namespace: str, name: str, uid: str) -> bytes:
    """What the kubelet writes into the server's volume: the Secret the builders make."""
    ctx = builders.ServingContext(
        name=name,
        namespace=namespace,
        uid=uid,
        spec=ModelDeploymentSpec.model_validate({"model": {"name": "m", "version": "1"}}),
        settings=builders.ServingSettings(image="runtime"),
        version=1,
        replicas=1,
        admin_token=token(namespace, name, uid),
    )
    return base64.b64decode(builders.admin_secret(ctx)["data"][credentials.SECRET_KEY])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    root = tmp_path_factory.mktemp("admin")
    store = f"file://{root / 'store'}"
    for version in (1, 2):
        save_classifier(store, "m", version)
    token_file = root / "admin" / credentials.SECRET_KEY
    token_file.parent.mkdir()
    token_file.write_bytes(secret_file_content(*MINE))
    token_file.chmod(credentials.FILE_MODE)
    args = ["--store", store, "--model", "m", "--version", "1", "--max-wait-ms", "2"]
    env = {credentials.FILE_ENV: str(token_file)}
    with ServerProcess(args, root / "server.log", env=env) as process:
        yield process, token_file


def _endpoint(server: ServerProcess) -> Endpoint:
    return Endpoint("server-0", server.url.removeprefix("http://"))


async def _read(server: ServerProcess, admin_token: str) -> dict[str, Any] | str:
    """The routing state, or the error the operator's client raised."""
    async with aiohttp.ClientSession() as session:
        try:
            return await routing.read_state(session, _endpoint(server), token=admin_token)
        except RuntimeError as error:
            return str(error)


def test_a_deployments_token_opens_its_servers_and_no_other_deployments_does(
    server: tuple[ServerProcess, Path],
) -> None:
    process, _ = server
    state = asyncio.run(_read(process, token(*MINE)))
    assert isinstance(state, dict) and state["routing"]["stable"] == "1", state
    for other in THEIRS:
        refused = asyncio.run(_read(process, token(*other)))
        assert isinstance(refused, str) and "HTTP 401" in refused, (other, refused)

    async def splits() -> tuple[routing.RoutingResult, routing.RoutingResult]:
        split = routing.Split(stable="1", candidate="2", weight=50.0)
        async with aiohttp.ClientSession() as session:
            endpoints = [_endpoint(process)]
            theirs = await routing.apply_split(session, endpoints, split, token=token(*THEIRS[0]))
            mine = await routing.apply_split(session, endpoints, split, token=token(*MINE))
        return theirs, mine

    theirs, mine = asyncio.run(splits())
    assert theirs.changed == () and "HTTP 401" in theirs.failed[0][1], theirs
    assert mine.complete and mine.changed == ("server-0",), mine
    state = asyncio.run(_read(process, token(*MINE)))
    assert isinstance(state, dict)
    assert state["routing"] == {"stable": "1", "candidate": "2", "weight": 50.0, "shadow": False}


def test_a_new_key_applies_when_the_mounted_token_changes_without_a_restart(
    server: tuple[ServerProcess, Path],
) -> None:
    """Rotation: the operator restarted with a new key rewrites the Secret; the kubelet
    refreshes the file, and the server (which re-reads it per call) takes the new token."""
    process, token_file = server
    before = token_file.read_bytes()
    rotated = token(*MINE, key=secrets.token_bytes(credentials.KEY_BYTES))
    token_file.chmod(0o640)
    token_file.write_text(rotated)
    try:
        assert isinstance(asyncio.run(_read(process, rotated)), dict)
        old = asyncio.run(_read(process, token(*MINE)))
        assert isinstance(old, str) and "HTTP 401" in old, old
    finally:
        token_file.write_bytes(before)
