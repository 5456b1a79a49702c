"""Kopf handlers of ModelDeployments: wiring only; the work is in controller.py.

Indexes keep what the loops read (server pods, the Deployment, batch Jobs, the
versions Succeeded TrainingJobs produced, the versions IncrementalUpdates promoted) in
memory, updated by watches, so a pass costs API calls only for what it writes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import aiohttp
import kopf

from modelops.api.base import GROUP, VERSION
from modelops.k8s.config import OperatorConfig
from modelops.k8s.controller.loop import LoopSettings, ObjectLoops
from modelops.k8s.controller.status import Outcome
from modelops.k8s.controller.wiring import Daemon, register, serve
from modelops.k8s.metrics import METRICS
from modelops.k8s.modeldeployment import credentials, names
from modelops.k8s.modeldeployment.builders import ServingSettings
from modelops.k8s.modeldeployment.controller import ServingLoop, Shared, Views
from modelops.lifecycle.promotion import promoted_by_training, promoted_by_update

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, ModelDeployment label value)


def _ours(role: str) -> dict[str, Any]:
    return {
        names.LABEL_MANAGED_BY: names.MANAGED_BY,
        names.LABEL_DEPLOYMENT: kopf.PRESENT,
        names.LABEL_ROLE: role,
    }


def asked(meta: Mapping[str, Any]) -> tuple[Any, ...]:
    """What the user asks of a ModelDeployment: its spec, and the promote annotation."""
    annotations = meta.get("annotations") or {}
    return (meta.get("generation"), tuple(sorted(annotations.items())))


class Serving:
    """The loops' shared parts, on the kit's per-object loops."""

    def __init__(self, shared: Shared, loops: ObjectLoops) -> None:
        self.shared = shared
        self.loops = loops


@kopf.on.startup()
async def start_modeldeployments(memo: Any, **_: Any) -> None:
    config: OperatorConfig = memo.config
    admin_key = config.admin_key
    if admin_key is None:
        log.warning(
            "no MODELOPS_ADMIN_KEY_FILE or MODELOPS_ADMIN_KEY: the inference servers' admin "
            "tokens come from a random key and change whenever the operator restarts"
        )
        admin_key = credentials.random_key()
    settings = ServingSettings(
        image=config.workload_image,
        store_volume_claim=config.store_volume_claim,
        store_layout=config.store_layout,
    )
    loops = ObjectLoops(
        LoopSettings(resource=names.PLURAL, workers=8, resync_seconds=memo.options.resync_seconds),
        METRICS,
    )
    shared = Shared(
        kube=memo.kube,
        settings=settings,
        # The passes' API calls (`Shared.call`) run on the loops' pool.
        executor=loops.executor,
        session=aiohttp.ClientSession(),
        policy=config.policy(),
        endpoint_overrides=config.endpoint_overrides,
        admin_key=admin_key,
    )
    memo.serving = Serving(shared, loops)


@kopf.on.cleanup()
async def stop_modeldeployments(memo: Any, **_: Any) -> None:
    serving: Serving | None = memo.get("serving")
    if serving is not None:
        await serving.shared.session.close()


@kopf.index("pods", labels=_ours(names.ROLE_SERVER))
def modeldeployment_pods(
    name: str,
    namespace: str | None,
    labels: kopf.Labels,
    meta: kopf.Meta,
    status: kopf.Status,
    **_: Any,
) -> dict[Key, dict[str, Any]]:
    view = {
        "metadata": {"name": name, "deletionTimestamp": meta.get("deletionTimestamp")},
        "status": {"phase": status.get("phase"), "podIP": status.get("podIP")},
    }
    return {(namespace or "", labels[names.LABEL_DEPLOYMENT]): view}


@kopf.index("apps", "v1", "deployments", labels=_ours(names.ROLE_SERVER))
def modeldeployment_deployments(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[Key, dict[str, Any]]:
    view = {
        "metadata": {"generation": body["metadata"].get("generation")},
        "spec": {"replicas": (body.get("spec") or {}).get("replicas")},
        "status": dict(body.get("status") or {}),
    }
    return {(namespace or "", labels[names.LABEL_DEPLOYMENT]): view}


@kopf.index("batch", "v1", "jobs", labels=_ours(names.ROLE_BATCH))
def modeldeployment_jobs(
    name: str, namespace: str | None, labels: kopf.Labels, status: kopf.Status, **_: Any
) -> dict[Key, dict[str, Any]]:
    view = {
        "name": name,
        "active": status.get("active", 0),
        "succeeded": status.get("succeeded", 0),
        "failed": status.get("failed", 0),
    }
    return {(namespace or "", labels[names.LABEL_DEPLOYMENT]): view}


@kopf.index(GROUP, VERSION, "trainingjobs")
def trained_model_versions(
    namespace: str | None, labels: kopf.Labels, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> dict[Key, int] | None:
    """(namespace, model) → versions of Succeeded TrainingJobs: promoted by their own gate.

    An update run's version is not: its IncrementalUpdate promotes it, or not.
    """
    promoted = promoted_by_training(labels, spec, status)
    if promoted is None:
        return None
    model, version = promoted
    return {(namespace or "", model): version}


@kopf.index(GROUP, VERSION, "incrementalupdates")
def updated_model_versions(
    namespace: str | None, status: kopf.Status, **_: Any
) -> dict[Key, list[int]] | None:
    """(namespace, model) → versions an IncrementalUpdate's evaluation gate promoted."""
    promoted = promoted_by_update(status)
    if promoted is None:
        return None
    model, versions = promoted
    return {(namespace or "", model): sorted(versions)}


def _first(store: Any) -> Mapping[str, Any] | None:
    for item in store or ():
        found: Mapping[str, Any] = item
        return found
    return None


async def _run(daemon: Daemon) -> None:
    serving: Serving = daemon.memo.serving
    namespace, name, uid, key = daemon.namespace, daemon.name, daemon.uid, daemon.key
    kwargs, body = daemon.indexes, daemon.body
    pods: kopf.Index[Key, dict[str, Any]] = kwargs["modeldeployment_pods"]
    deployments: kopf.Index[Key, dict[str, Any]] = kwargs["modeldeployment_deployments"]
    jobs: kopf.Index[Key, dict[str, Any]] = kwargs["modeldeployment_jobs"]
    trained: kopf.Index[Key, int] = kwargs["trained_model_versions"]
    updated: kopf.Index[Key, list[int]] = kwargs["updated_model_versions"]

    def list_of(index: kopf.Index[Key, dict[str, Any]]) -> Sequence[Mapping[str, Any]]:
        return list(index.get(key, ()))

    views = Views(
        pods=lambda: list_of(pods),
        deployment=lambda: _first(deployments.get(key)),
        jobs=lambda: list_of(jobs),
        trained=lambda model: (
            set(trained.get((namespace, model), ()))
            | {v for versions in updated.get((namespace, model), ()) for v in versions}
        ),
    )

    loop = ServingLoop(serving.shared, namespace, name, uid, views)

    async def one_pass() -> Outcome:
        result = await loop.run_once(body)
        if result is None:
            return Outcome()
        return Outcome(
            events=tuple(result.notes),
            requeue_after=result.interval,
            generation=asked(body.get("metadata") or {}),
        )

    await serve(daemon, serving.loops, one_pass, partial(serving.shared.status.forget, uid))


def _loops(memo: Any) -> ObjectLoops | None:
    serving: Serving | None = memo.get("serving")
    return serving.loops if serving is not None else None


# A new promote annotation wakes the loop as a spec change does.
register(names.PLURAL, "modeldeployment", _loops, _run, asked=asked)
