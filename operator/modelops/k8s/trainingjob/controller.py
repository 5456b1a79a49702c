"""The control loop of each TrainingJob, on the kit's per-object loop.

Pod events and spec changes wake the job's loop; a requeue time (retry back-off, TTL)
or the resync interval wakes it otherwise. Each pass reconciles from the pods the
index holds and the job as the watch delivered it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from functools import partial

from modelops.k8s.controller.loop import LoopSettings, ObjectLoops
from modelops.k8s.controller.status import Outcome
from modelops.k8s.controller.wiring import Daemon, serve
from modelops.k8s.metrics import OperatorMetrics
from modelops.k8s.trainingjob.observe import OwnedPod
from modelops.k8s.trainingjob.reconcile import RESOURCE, Reconciler
from modelops.k8s.wakeups import Key

# Pod updates come in bursts (a pod's phase, its conditions, its IPs).
DEBOUNCE_SECONDS = 0.05


class TrainingController:
    def __init__(self, reconciler: Reconciler, metrics: OperatorMetrics) -> None:
        self.reconciler = reconciler
        settings = reconciler.settings
        loop = LoopSettings(RESOURCE, settings.workers, settings.resync_seconds, DEBOUNCE_SECONDS)
        self.loops = ObjectLoops(loop, metrics)

    def close(self) -> None:
        self.loops.close()

    async def run(self, daemon: Daemon, pods: Callable[[Key], Iterable[OwnedPod]]) -> None:
        namespace, name, uid = daemon.namespace, daemon.name, daemon.uid

        def prepare() -> Callable[[], Outcome]:
            views = tuple(p.view for p in pods(daemon.key) if p.owner_uid == uid)
            # Kopf keeps a daemon's body up to date with the watch; the reconcile gets a copy.
            seen = copy.deepcopy(dict(daemon.body))
            return partial(self.reconciler.reconcile, namespace, name, views, seen)

        forget = partial(self.reconciler.forget, uid)
        await serve(daemon, self.loops, self.loops.on_pool(prepare), forget)

    async def delete(self, namespace: str, name: str, uid: str, model: str | None) -> None:
        """The finalizer's work: remove the children, forget the job's version entry."""

        def work() -> None:
            self.reconciler.delete_children(namespace, name)
            if model:
                self.reconciler.versions.forget(namespace, model, uid)

        await self.loops.call(work, "delete")
        self.reconciler.forget(uid)
        self.reconciler.metrics.observe_trials(namespace, name, None)
