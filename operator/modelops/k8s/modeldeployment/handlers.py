"""Kopf handlers of ModelDeployments: wiring only; the work is in controller.py.

Indexes keep what the loops read (server pods, the Deployment, batch Jobs, the
versions Succeeded TrainingJobs produced, the versions IncrementalUpdates promoted) in
memory, updated by watches, so a pass costs API calls only for what it writes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import kopf

from modelops.api.base import GROUP, VERSION
from modelops.k8s.config import OperatorConfig
from modelops.k8s.modeldeployment import names
from modelops.k8s.modeldeployment.builders import ServingSettings
from modelops.k8s.modeldeployment.controller import ServingLoop, Shared, Views
from modelops.k8s.modeldeployment.status import Note

Key = tuple[str, str]  # (namespace, ModelDeployment label value)
# TrainingJobs an IncrementalUpdate runs carry this label: their gate, not their success,
# promotes them (see incrementalupdate/reconcile.py).
UPDATE_RUN_LABEL = f"{names.DOMAIN}/update"
ERROR_PAUSE_SECONDS = 5.0


def _ours(role: str) -> dict[str, Any]:
    return {
        names.LABEL_MANAGED_BY: names.MANAGED_BY,
        names.LABEL_DEPLOYMENT: kopf.PRESENT,
        names.LABEL_ROLE: role,
    }


class Serving:
    """The loops' shared parts, and a wake-up per loop."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.wakers: dict[Key, asyncio.Event] = {}
        self.seen: dict[Key, tuple[Any, ...]] = {}

    def wake_on_change(self, key: Key, generation: Any, annotations: Mapping[str, str]) -> None:
        """Wake a loop when its spec or annotations changed (not for its own status writes)."""
        fingerprint = (generation, tuple(sorted(annotations.items())))
        if self.seen.get(key) != fingerprint:
            self.seen[key] = fingerprint
            event = self.wakers.get(key)
            if event is not None:
                event.set()


@kopf.on.startup()
async def start_modeldeployments(memo: Any, **_: Any) -> None:
    config: OperatorConfig = memo.config
    settings = ServingSettings(
        image=config.workload_image, store_volume_claim=config.store_volume_claim
    )
    shared = Shared(
        kube=memo.kube,
        settings=settings,
        executor=ThreadPoolExecutor(max_workers=8, thread_name_prefix="modeldeployment"),
        session=aiohttp.ClientSession(),
    )
    memo.serving = Serving(shared)


@kopf.on.cleanup()
async def stop_modeldeployments(memo: Any, **_: Any) -> None:
    serving: Serving | None = memo.get("serving")
    if serving is not None:
        await serving.shared.session.close()
        serving.shared.executor.shutdown(wait=False, cancel_futures=True)


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
    if UPDATE_RUN_LABEL in labels:
        return None
    produced = status.get("modelVersion") or {}
    model = (spec.get("output") or {}).get("modelName")
    if status.get("phase") != "Succeeded" or not model or not produced.get("version"):
        return None
    return {(namespace or "", str(model)): int(produced["version"])}


@kopf.index(GROUP, VERSION, "incrementalupdates")
def updated_model_versions(
    namespace: str | None, status: kopf.Status, **_: Any
) -> dict[Key, list[int]] | None:
    """(namespace, model) → versions an IncrementalUpdate's evaluation gate promoted."""
    model = status.get("modelName")
    versions = {int(v) for v in status.get("promotedVersions") or ()}
    if status.get("promotedVersion"):
        versions.add(int(status["promotedVersion"]))
    if not model or not versions:
        return None
    return {(namespace or "", str(model)): sorted(versions)}


@kopf.on.event(GROUP, VERSION, names.PLURAL)
def modeldeployment_event(
    name: str, namespace: str | None, meta: kopf.Meta, memo: Any, **_: Any
) -> None:
    serving: Serving | None = memo.get("serving")
    if serving is not None and namespace is not None:
        key = (namespace, names.label_value(name))
        serving.wake_on_change(key, meta.get("generation"), dict(meta.get("annotations") or {}))


def _first(store: Any) -> Mapping[str, Any] | None:
    for item in store or ():
        found: Mapping[str, Any] = item
        return found
    return None


@kopf.daemon(GROUP, VERSION, names.PLURAL, cancellation_timeout=10.0)
async def modeldeployment_loop(
    name: str,
    namespace: str | None,
    uid: str,
    body: kopf.Body,
    memo: Any,
    stopped: kopf.DaemonStopped,
    logger: kopf.Logger,
    **kwargs: Any,
) -> None:
    serving: Serving = memo.serving
    assert namespace is not None, "ModelDeployments are namespaced"
    key = (namespace, names.label_value(name))
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

    def post(note: Note) -> None:
        kopf.event(body, type=note.type, reason=note.reason, message=note.message[:1024])

    loop = ServingLoop(serving.shared, namespace, name, uid, views, post)
    waker = serving.wakers.setdefault(key, asyncio.Event())
    try:
        while not stopped:
            interval = ERROR_PAUSE_SECONDS
            try:
                interval = (await loop.run_once(body)).interval
            except Exception:  # the loop never dies; the next pass starts from what it sees
                logger.exception("serving loop pass failed")
            waker.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waker.wait(), timeout=interval)
    finally:
        if serving.wakers.get(key) is waker:
            del serving.wakers[key]
            serving.seen.pop(key, None)
