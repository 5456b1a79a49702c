"""The control loop of each IncrementalUpdate: reconcile, then sleep until woken or due.

Kopf runs one daemon per IncrementalUpdate (and restarts them all when the operator
starts: every update is reconciled from its status and the children found by name).
Events of its child TrainingJobs and evaluation pods, and changes of its spec, wake
its loop; otherwise it sleeps until the next data check (`spec.detect.intervalSeconds`)
or the resync interval. Reconciles (API calls, the dataset listing, hashing new shards)
run on a small thread pool, never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from modelops.k8s.incrementalupdate import names
from modelops.k8s.incrementalupdate.reconcile import RESOURCE, Outcome, Reconciler, StatusConflict
from modelops.k8s.metrics import OperatorMetrics
from modelops.k8s.wakeups import Stopped, Wakers, sleep_until_woken
from modelops.lifecycle.training import EventNote

EventPoster = Callable[[EventNote], None]

# Child updates come in bursts (a TrainingJob's status, its pods); one short pause
# after a wake folds a burst into one reconcile.
DEBOUNCE_SECONDS = 0.2
CONFLICT_RETRY_SECONDS = 0.2
ERROR_BACKOFF_LIMIT_SECONDS = 60.0


class UpdateController:
    def __init__(self, reconciler: Reconciler, metrics: OperatorMetrics) -> None:
        self.reconciler = reconciler
        self.metrics = metrics
        self.settings = reconciler.settings
        self.wakers = Wakers()
        self.executor = ThreadPoolExecutor(
            max_workers=self.settings.workers, thread_name_prefix="incrementalupdate"
        )

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    # -- wake-ups -------------------------------------------------------------------------

    def child_changed(self, namespace: str, update_label: str) -> None:
        """A child TrainingJob, evaluation Job or evaluation pod changed."""
        self.wakers.wake((namespace, update_label))

    def update_changed(self, namespace: str, name: str, generation: int | None) -> None:
        """Wake on spec changes only; status writes (ours) do not need another pass."""
        key = (namespace, names.label_value(name))
        self.wakers.wake_on_new_generation(key, generation)

    # -- the loop -------------------------------------------------------------------------

    async def run(
        self,
        *,
        namespace: str,
        name: str,
        uid: str,
        post: EventPoster,
        stopped: Stopped,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
    ) -> None:
        key = (namespace, names.label_value(name))
        wake = self.wakers.register(key)
        self.metrics.managed.labels(RESOURCE).inc()
        errors = 0
        try:
            while not stopped:
                wake.clear()
                delay: float | None
                try:
                    outcome = await self._reconcile(namespace, name)
                except StatusConflict:
                    delay = CONFLICT_RETRY_SECONDS
                except Exception as error:  # the loop never dies; the error is counted
                    errors += 1
                    delay = min(ERROR_BACKOFF_LIMIT_SECONDS, 0.5 * 2**errors)
                    logger.warning("reconcile failed (retry in %.1fs): %s", delay, error)
                else:
                    errors = 0
                    self.wakers.generations[key] = outcome.generation
                    for note in outcome.events:
                        post(note)
                    delay = outcome.requeue_after
                await self._sleep(wake, stopped, delay)
        finally:
            self.wakers.unregister(key, wake)
            self.metrics.managed.labels(RESOURCE).dec()
            self.reconciler.forget(uid)

    async def _reconcile(self, namespace: str, name: str) -> Outcome:
        loop = asyncio.get_running_loop()
        self.metrics.queued.labels(RESOURCE).inc()

        def work() -> Outcome:
            self.metrics.queued.labels(RESOURCE).dec()
            with self.metrics.reconcile(RESOURCE, "reconcile"):
                return self.reconciler.reconcile(namespace, name)

        return await loop.run_in_executor(self.executor, work)

    async def _sleep(self, wake: asyncio.Event, stopped: Stopped, delay: float | None) -> None:
        timeout = self.settings.resync_seconds if delay is None else max(0.0, delay)
        timeout = min(timeout, self.settings.resync_seconds)
        await sleep_until_woken(wake, stopped, timeout, DEBOUNCE_SECONDS)
