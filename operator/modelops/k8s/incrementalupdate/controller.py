"""The control loop of each IncrementalUpdate, on the kit's per-object loop.

Events of its child TrainingJobs and evaluation pods, and changes of its spec, wake its
loop; otherwise it sleeps until the next data check (`spec.detect.intervalSeconds`) or
the resync interval. Reconciles (API calls, the data scan) run on the kit's worker pool.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from modelops.k8s.controller.loop import LoopSettings, ObjectLoops
from modelops.k8s.controller.status import Outcome
from modelops.k8s.controller.wiring import Daemon, serve
from modelops.k8s.incrementalupdate.reconcile import RESOURCE, Reconciler
from modelops.k8s.metrics import OperatorMetrics


class UpdateController:
    def __init__(self, reconciler: Reconciler, metrics: OperatorMetrics) -> None:
        self.reconciler = reconciler
        settings = reconciler.settings
        loop = LoopSettings(RESOURCE, settings.workers, settings.resync_seconds)
        self.loops = ObjectLoops(loop, metrics)

    def close(self) -> None:
        self.loops.close()

    async def run(self, daemon: Daemon) -> None:
        def prepare() -> Callable[[], Outcome]:
            return partial(self.reconciler.reconcile, daemon.namespace, daemon.name)

        forget = partial(self.reconciler.forget, daemon.uid)
        await serve(daemon, self.loops, self.loops.on_pool(prepare), forget)
