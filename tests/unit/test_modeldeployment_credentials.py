"""Per-deployment admin tokens: derived from the operator's key, kept in a Secret that only
the deployment's own servers mount, sent by the operator with that deployment's calls. No
token is shared between deployments, and nothing refers to a namespace-wide Secret."""

from __future__ import annotations

import asyncio
import base64
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import pytest

from modelops.api.deployment import ModelDeploymentStatus
from modelops.k8s.config import OperatorConfig
from modelops.k8s.modeldeployment import batchjob, builders, controller, credentials, names
from modelops.k8s.modeldeployment.metrics_source import Endpoint
from modelops.k8s.modeldeployment.routing import RoutingResult, Split
from modelops.lifecycle.rollout import Action, Plan, RolloutState
from tests.unit.test_modeldeployment_builders import container, context, spec

KEY = b"k" * 32


def test_the_token_is_stable_for_one_deployment_and_differs_for_every_other() -> None:
    token = credentials.admin_token(KEY, "ml", "digits", "uid-1")
    assert token == credentials.admin_token(KEY, "ml", "digits", "uid-1")
    assert len(token) == 64 and int(token, 16) >= 0  # hex SHA-256
    others = [
        credentials.admin_token(KEY, "ml-b", "digits", "uid-1"),  # another namespace
        credentials.admin_token(KEY, "ml", "digits-b", "uid-1"),  # another deployment
        credentials.admin_token(KEY, "ml", "digits", "uid-2"),  # deleted and created again
        credentials.admin_token(b"j" * 32, "ml", "digits", "uid-1"),  # another operator key
    ]
    assert token not in others and len(set(others)) == len(others)


def test_the_servers_mount_their_own_token_and_no_env_names_a_shared_secret() -> None:
    built = builders.children(context(spec()))
    children = {f"{c['kind']}/{c['metadata']['name']}": c for c in built}
    secret = children["Secret/digits-admin"]
    assert names.admin_secret("digits") == "digits-admin"
    assert base64.b64decode(secret["data"]["token"]).decode() == "token-of-digits"
    owner = secret["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("ModelDeployment", "digits", "uid-1")
    assert owner["controller"] is True  # the garbage collector removes it with the deployment
    kinds = [c["kind"] for c in built]
    assert kinds.index("Secret") < kinds.index("Deployment")  # there before a pod mounts it
    deployment = children["Deployment/digits-server"]
    pod = deployment["spec"]["template"]["spec"]
    server = container(deployment)
    volume = next(v for v in pod["volumes"] if "secret" in v)
    assert volume["secret"] == {"secretName": "digits-admin", "defaultMode": 0o440}
    assert "optional" not in volume["secret"]  # no token, no server: never open endpoints
    mount = next(m for m in server["volumeMounts"] if m["name"] == volume["name"])
    assert mount["readOnly"] is True
    env = {e["name"]: e for e in server["env"]}
    assert env["MODELOPS_ADMIN_TOKEN_FILE"]["value"] == f"{mount['mountPath']}/token"
    assert "MODELOPS_ADMIN_TOKEN" not in env
    # The file is 0440: readable by the server's user through the pod's fsGroup.
    assert pod["securityContext"]["fsGroup"] == server["securityContext"]["runAsGroup"]
    for entry in server["env"]:
        assert "secretKeyRef" not in (entry.get("valueFrom") or {}), entry
    assert "token-of-digits" not in json.dumps(deployment)  # only the Secret holds it


def test_batch_prediction_pods_get_no_token() -> None:
    md_spec = spec(batchPrediction={"inputUri": "file:///data/in", "outputUri": "file:///data/out"})
    job = batchjob.batch_job(context(md_spec, version=7))
    pod = job["spec"]["template"]["spec"]
    assert not [v for v in pod["volumes"] if "secret" in v]
    assert not [e for e in container(job)["env"] if "ADMIN" in e["name"]]
    assert "token-of-digits" not in json.dumps(job)


def _loop(key: bytes, namespace: str, name: str, uid: str) -> controller.ServingLoop:
    shared = controller.Shared(
        kube=cast(Any, None),
        settings=builders.ServingSettings(image="runtime:1"),
        executor=ThreadPoolExecutor(max_workers=1),
        session=cast(Any, None),
        admin_key=key,
    )
    views = controller.Views(
        pods=lambda: [], deployment=lambda: None, jobs=lambda: [], trained=lambda _: set()
    )
    return controller.ServingLoop(shared, namespace, name, uid, views)


def test_the_loop_writes_and_sends_the_token_of_its_own_deployment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[str] = []

    async def apply_split(
        session: Any, endpoints: Any, split: Split, *, token: str
    ) -> RoutingResult:
        sent.append(token)
        return RoutingResult(current=(), changed=(), failed=(), state={})

    monkeypatch.setattr(controller, "apply_split", apply_split)
    status = ModelDeploymentStatus.model_validate({"activeVersion": 3})
    plan = Plan(state=RolloutState(stable=3), action=Action.STEADY, message="")
    tokens = {}
    for namespace, uid in (("ml", "uid-1"), ("ml-b", "uid-2")):
        loop = _loop(KEY, namespace, "digits", uid)
        ctx = loop._context(spec(), status, 1)
        secret = builders.admin_secret(ctx)
        written = base64.b64decode(secret["data"][credentials.SECRET_KEY]).decode()
        asyncio.run(loop._route(spec(), status, plan, [Endpoint("p", "127.0.0.1:1")]))
        assert written == sent[-1] == credentials.admin_token(KEY, namespace, "digits", uid)
        tokens[namespace] = written
    assert tokens["ml"] != tokens["ml-b"]
    assert tokens["ml"] not in repr(_loop(KEY, "ml", "digits", "uid-1")._context(spec(), status, 1))


def test_the_operator_reads_its_key_from_a_file_or_the_env_and_refuses_a_short_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("MODELOPS_ADMIN_KEY_FILE", raising=False)
    monkeypatch.delenv("MODELOPS_ADMIN_KEY", raising=False)
    assert OperatorConfig.from_env().admin_key is None  # the operator then makes a random one
    key = "x" * 48
    monkeypatch.setenv("MODELOPS_ADMIN_KEY", key)
    assert OperatorConfig.from_env().admin_key == key.encode()
    path = tmp_path / "key"
    path.write_text("f" * 40 + "\n")
    monkeypatch.setenv("MODELOPS_ADMIN_KEY_FILE", str(path))
    config = OperatorConfig.from_env()
    assert config.admin_key == b"f" * 40  # the file wins; a trailing newline is not key
    assert "f" * 40 not in repr(config)
    path.write_text("s3cr" * 3)
    with pytest.raises(ValueError, match="at least 32") as short:
        OperatorConfig.from_env()
    assert "s3cr" not in str(short.value)  # errors name the source, never the key
    monkeypatch.setenv("MODELOPS_ADMIN_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="cannot read"):
        OperatorConfig.from_env()
