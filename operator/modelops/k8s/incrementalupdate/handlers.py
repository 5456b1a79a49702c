"""Kopf handlers of IncrementalUpdates: wiring only; the work is in controller and reconcile."""

from __future__ import annotations

from typing import Any

import kopf

from modelops.api.base import GROUP, VERSION
from modelops.k8s.config import OperatorConfig
from modelops.k8s.incrementalupdate import names
from modelops.k8s.incrementalupdate.builders import EvaluationSettings
from modelops.k8s.incrementalupdate.controller import UpdateController
from modelops.k8s.incrementalupdate.reconcile import Reconciler, UpdateSettings
from modelops.k8s.kube import Kube
from modelops.k8s.metrics import METRICS
from modelops.lifecycle.training import EventNote

_EVALUATION: dict[str, Any] = {
    names.LABEL_MANAGED_BY: names.MANAGED_BY,
    names.LABEL_UPDATE: kopf.PRESENT,
    names.LABEL_ROLE: names.ROLE_EVALUATION,
}


@kopf.on.startup()
def start_incrementalupdates(memo: Any, **_: Any) -> None:
    kube: Kube = memo.kube
    config: OperatorConfig = memo.config
    settings = UpdateSettings(
        evaluation=EvaluationSettings(
            image=config.workload_image, store_volume_claim=config.store_volume_claim
        ),
        resync_seconds=memo.options.resync_seconds,
    )
    memo.incrementalupdates = UpdateController(Reconciler(kube, settings, METRICS), METRICS)


@kopf.on.cleanup()
def stop_incrementalupdates(memo: Any, **_: Any) -> None:
    controller: UpdateController | None = memo.get("incrementalupdates")
    if controller is not None:
        controller.close()


def _wake_owner(namespace: str | None, labels: kopf.Labels, memo: Any) -> None:
    controller: UpdateController | None = memo.get("incrementalupdates")
    if controller is not None and namespace is not None:
        controller.child_changed(namespace, labels[names.LABEL_UPDATE])


@kopf.on.event(GROUP, VERSION, "trainingjobs", labels={names.LABEL_UPDATE: kopf.PRESENT})
def update_run_event(namespace: str | None, labels: kopf.Labels, memo: Any, **_: Any) -> None:
    _wake_owner(namespace, labels, memo)


@kopf.on.event("batch", "v1", "jobs", labels=_EVALUATION)
def evaluation_job_event(namespace: str | None, labels: kopf.Labels, memo: Any, **_: Any) -> None:
    _wake_owner(namespace, labels, memo)


@kopf.on.event("pods", labels=_EVALUATION)
def evaluation_pod_event(namespace: str | None, labels: kopf.Labels, memo: Any, **_: Any) -> None:
    _wake_owner(namespace, labels, memo)


@kopf.on.event(GROUP, VERSION, names.PLURAL)
def incrementalupdate_event(
    name: str, namespace: str | None, meta: kopf.Meta, memo: Any, **_: Any
) -> None:
    controller: UpdateController | None = memo.get("incrementalupdates")
    if controller is not None and namespace is not None:
        controller.update_changed(namespace, name, meta.get("generation"))


@kopf.daemon(GROUP, VERSION, names.PLURAL, cancellation_timeout=10.0)
async def incrementalupdate_loop(
    name: str,
    namespace: str | None,
    uid: str,
    body: kopf.Body,
    memo: Any,
    stopped: kopf.DaemonStopped,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    controller: UpdateController = memo.incrementalupdates
    assert namespace is not None, "IncrementalUpdates are namespaced"

    def post(note: EventNote) -> None:
        kopf.event(body, type=note.type, reason=note.reason, message=note.message)

    await controller.run(
        namespace=namespace, name=name, uid=uid, post=post, stopped=stopped, logger=logger
    )
