"""Kopf handlers of TrainingJobs: wiring only; the work is in controller and reconcile."""

from __future__ import annotations

from typing import Any

import kopf

from modelops.api.base import GROUP, VERSION
from modelops.k8s.controller.loop import ObjectLoops
from modelops.k8s.controller.wiring import Daemon, register
from modelops.k8s.kube import Kube
from modelops.k8s.metrics import METRICS
from modelops.k8s.trainingjob import names
from modelops.k8s.trainingjob.controller import TrainingController
from modelops.k8s.trainingjob.observe import OwnedPod, pod_view
from modelops.k8s.trainingjob.reconcile import Reconciler, TrainingSettings
from modelops.k8s.versions import VersionAllocator
from modelops.k8s.wakeups import Key


@kopf.on.startup()
def start_trainingjobs(memo: Any, **_: Any) -> None:
    kube: Kube = memo.kube
    settings: TrainingSettings = memo.training_settings
    reconciler = Reconciler(kube, VersionAllocator(kube), settings, METRICS)
    memo.trainingjobs = TrainingController(reconciler, METRICS)


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
        controller.loops.wake((namespace, labels[names.LABEL_JOB]))


async def _run(daemon: Daemon) -> None:
    controller: TrainingController = daemon.memo.trainingjobs
    # Kopf passes each index as a keyword argument named after its function.
    pods: kopf.Index[Key, OwnedPod] = daemon.indexes["trainingjob_pods"]
    await controller.run(daemon, lambda key: pods.get(key, ()))


def _loops(memo: Any) -> ObjectLoops | None:
    controller: TrainingController | None = memo.get("trainingjobs")
    return controller.loops if controller is not None else None


register(names.PLURAL, "trainingjob", _loops, _run)


@kopf.on.delete(GROUP, VERSION, names.PLURAL)
async def trainingjob_deleted(
    name: str, namespace: str | None, uid: str, spec: kopf.Spec, memo: Any, **_: Any
) -> None:
    controller: TrainingController = memo.trainingjobs
    assert namespace is not None, "TrainingJobs are namespaced"
    model = (spec.get("output") or {}).get("modelName")
    await controller.delete(namespace, name, uid, model)
