"""Kopf handlers of TrainingJobs: wiring only; the work is in controller and reconcile."""

from __future__ import annotations

import copy
from typing import Any

import kopf

from modelops.api.base import GROUP, VERSION
from modelops.k8s.kube import Kube
from modelops.k8s.metrics import METRICS
from modelops.k8s.trainingjob import names
from modelops.k8s.trainingjob.controller import TrainingController
from modelops.k8s.trainingjob.observe import OwnedPod, pod_view
from modelops.k8s.trainingjob.reconcile import Reconciler, TrainingSettings
from modelops.k8s.versions import VersionAllocator
from modelops.k8s.wakeups import Key
from modelops.lifecycle.training import EventNote


@kopf.on.startup()
def start_trainingjobs(memo: Any, **_: Any) -> None:
    kube: Kube = memo.kube
    settings: TrainingSettings = memo.training_settings
    reconciler = Reconciler(kube, VersionAllocator(kube), settings, METRICS)
    memo.trainingjobs = TrainingController(reconciler, METRICS)


@kopf.on.cleanup()
def stop_trainingjobs(memo: Any, **_: Any) -> None:
    controller: TrainingController | None = memo.get("trainingjobs")
    if controller is not None:
        controller.close()


@kopf.index(
    "pods", labels={names.LABEL_MANAGED_BY: names.MANAGED_BY, names.LABEL_JOB: kopf.PRESENT}
)
def trainingjob_pods(
    body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any
) -> dict[Key, OwnedPod]:
    owned = pod_view(body)
    if owned is None or namespace is None:
        return {}
    return {(namespace, labels[names.LABEL_JOB]): owned}


@kopf.on.event(
    "pods", labels={names.LABEL_MANAGED_BY: names.MANAGED_BY, names.LABEL_JOB: kopf.PRESENT}
)
def pod_event(namespace: str | None, labels: kopf.Labels, memo: Any, **_: Any) -> None:
    controller: TrainingController | None = memo.get("trainingjobs")
    if controller is not None and namespace is not None:
        controller.pod_changed(namespace, labels[names.LABEL_JOB])


@kopf.on.event(GROUP, VERSION, names.PLURAL)
def trainingjob_event(
    name: str, namespace: str | None, meta: kopf.Meta, memo: Any, **_: Any
) -> None:
    controller: TrainingController | None = memo.get("trainingjobs")
    if controller is not None and namespace is not None:
        controller.job_changed(namespace, name, meta.get("generation"))


@kopf.daemon(GROUP, VERSION, names.PLURAL, cancellation_timeout=10.0)
async def trainingjob_loop(
    name: str,
    namespace: str | None,
    uid: str,
    body: kopf.Body,
    memo: Any,
    stopped: kopf.DaemonStopped,
    logger: kopf.Logger,
    **kwargs: Any,
) -> None:
    controller: TrainingController = memo.trainingjobs
    # Kopf passes each index as a keyword argument named after its function.
    trainingjob_pods: kopf.Index[Key, OwnedPod] = kwargs["trainingjob_pods"]
    assert namespace is not None, "TrainingJobs are namespaced"

    def post(note: EventNote) -> None:
        kopf.event(body, type=note.type, reason=note.reason, message=note.message)

    await controller.run(
        namespace=namespace,
        name=name,
        uid=uid,
        pods=lambda key: trainingjob_pods.get(key, ()),
        # Kopf keeps a daemon's body up to date with the watch; the reconcile gets a copy.
        body=lambda: copy.deepcopy(dict(body)),
        post=post,
        stopped=stopped,
        logger=logger,
    )


@kopf.on.delete(GROUP, VERSION, names.PLURAL)
async def trainingjob_deleted(
    name: str, namespace: str | None, uid: str, spec: kopf.Spec, memo: Any, **_: Any
) -> None:
    controller: TrainingController = memo.trainingjobs
    assert namespace is not None, "TrainingJobs are namespaced"
    model = (spec.get("output") or {}).get("modelName")
    await controller.delete(namespace, name, uid, model)
