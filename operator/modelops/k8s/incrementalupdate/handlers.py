"""Kopf handlers of IncrementalUpdates: wiring only; the work is in controller and reconcile."""

from __future__ import annotations

from typing import Any

import kopf

from modelops.api.base import GROUP, VERSION
from modelops.k8s.config import OperatorConfig
from modelops.k8s.controller.loop import ObjectLoops
from modelops.k8s.controller.wiring import Daemon, register
from modelops.k8s.incrementalupdate import names
from modelops.k8s.incrementalupdate.builders import EvaluationSettings
from modelops.k8s.incrementalupdate.controller import UpdateController
from modelops.k8s.incrementalupdate.datascans import ROLE_SCAN, JobScanner
from modelops.k8s.incrementalupdate.reconcile import Reconciler, UpdateSettings
from modelops.k8s.kube import Kube
from modelops.k8s.metrics import METRICS

_EVALUATION: dict[str, Any] = {
    names.LABEL_MANAGED_BY: names.MANAGED_BY,
    names.LABEL_UPDATE: kopf.PRESENT,
    names.LABEL_ROLE: names.ROLE_EVALUATION,
}
_SCAN: dict[str, Any] = {
    names.LABEL_MANAGED_BY: names.MANAGED_BY,
    names.LABEL_UPDATE: kopf.PRESENT,
    names.LABEL_ROLE: ROLE_SCAN,
}


@kopf.on.startup()
def start_incrementalupdates(memo: Any, **_: Any) -> None:
    kube: Kube = memo.kube
    config: OperatorConfig = memo.config
    settings = UpdateSettings(
        evaluation=EvaluationSettings(
            image=config.workload_image,
            store_volume_claim=config.store_volume_claim,
            store_layout=config.store_layout,
        ),
        resync_seconds=memo.options.resync_seconds,
    )
    scanner = JobScanner(kube) if config.data_access == "job" else None
    reconciler = Reconciler(kube, settings, METRICS, scanner=scanner)
    memo.incrementalupdates = UpdateController(reconciler, METRICS)


def _wake_owner(namespace: str | None, labels: kopf.Labels, memo: Any) -> None:
    controller: UpdateController | None = memo.get("incrementalupdates")
    if controller is not None and namespace is not None:
        controller.loops.wake((namespace, labels[names.LABEL_UPDATE]))


@kopf.on.event(GROUP, VERSION, "trainingjobs", labels={names.LABEL_UPDATE: kopf.PRESENT})
def update_run_event(namespace: str | None, labels: kopf.Labels, memo: Any, **_: Any) -> None:
    _wake_owner(namespace, labels, memo)


@kopf.on.event("batch", "v1", "jobs", labels=_EVALUATION)
def evaluation_job_event(namespace: str | None, labels: kopf.Labels, memo: Any, **_: Any) -> None:
    _wake_owner(namespace, labels, memo)


@kopf.on.event("pods", labels=_EVALUATION)
def evaluation_pod_event(namespace: str | None, labels: kopf.Labels, memo: Any, **_: Any) -> None:
    _wake_owner(namespace, labels, memo)


async def _run(daemon: Daemon) -> None:
    controller: UpdateController = daemon.memo.incrementalupdates
    await controller.run(daemon)


def _loops(memo: Any) -> ObjectLoops | None:
    controller: UpdateController | None = memo.get("incrementalupdates")
    return controller.loops if controller is not None else None


register(names.PLURAL, "incrementalupdate", _loops, _run)


@kopf.on.event("batch", "v1", "jobs", labels=_SCAN)
def scan_job_event(namespace: str | None, labels: kopf.Labels, memo: Any, **_: Any) -> None:
    _wake_owner(namespace, labels, memo)


@kopf.on.event("pods", labels=_SCAN)
def scan_pod_event(namespace: str | None, labels: kopf.Labels, memo: Any, **_: Any) -> None:
    _wake_owner(namespace, labels, memo)
