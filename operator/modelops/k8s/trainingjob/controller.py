"""The control loop of each TrainingJob: reconcile, then sleep until woken or due.

Kopf runs one daemon per TrainingJob (and restarts them all when the operator starts,
which is what makes a restart safe: every job is reconciled from what is observed).
Pod events and spec changes wake the job's loop; a requeue time (retry back-off, TTL)
or the resync interval wakes it otherwise. Reconciles run on a bounded thread pool,
so 200 jobs created at once queue up instead of opening 200 connections.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from modelops.k8s.metrics import OperatorMetrics
from modelops.k8s.trainingjob import names
from modelops.k8s.trainingjob.observe import OwnedPod
from modelops.k8s.trainingjob.reconcile import RESOURCE, Outcome, Reconciler, StatusConflict
from modelops.k8s.wakeups import Key, Stopped, Wakers, sleep_until_woken
from modelops.lifecycle.training import EventNote

EventPoster = Callable[[EventNote], None]

# Pod updates come in bursts (a pod's phase, its conditions, its IPs); one short pause
# after a wake folds a burst into one reconcile.
DEBOUNCE_SECONDS = 0.05
# A status write refused because the job changed: reconcile again soon, on the new state.
CONFLICT_RETRY_SECONDS = 0.2
ERROR_BACKOFF_LIMIT_SECONDS = 60.0


class TrainingController:
    def __init__(self, reconciler: Reconciler, metrics: OperatorMetrics) -> None:
        self.reconciler = reconciler
        self.metrics = metrics
        self.settings = reconciler.settings
        self.wakers = Wakers()
        self.executor = ThreadPoolExecutor(
            max_workers=self.settings.workers, thread_name_prefix="trainingjob"
        )

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    # -- wake-ups -------------------------------------------------------------------------

    def pod_changed(self, namespace: str, job_label: str) -> None:
        self.wakers.wake((namespace, job_label))

    def job_changed(self, namespace: str, name: str, generation: int | None) -> None:
        """Wake on spec changes only; status writes (ours) do not need another pass."""
        key = (namespace, names.job_label(name))
        self.wakers.wake_on_new_generation(key, generation)

    # -- the loop -------------------------------------------------------------------------

    async def run(
        self,
        *,
        namespace: str,
        name: str,
        uid: str,
        pods: Callable[[Key], Iterable[OwnedPod]],
        body: Callable[[], dict[str, Any]],
        post: EventPoster,
        stopped: Stopped,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
    ) -> None:
        key = (namespace, names.job_label(name))
        wake = self.wakers.register(key)
        self.metrics.managed.labels(RESOURCE).inc()
        errors = 0
        try:
            while not stopped:
                wake.clear()
                views = tuple(p.view for p in pods(key) if p.owner_uid == uid)
                delay: float | None
                try:
                    outcome = await self._reconcile(namespace, name, views, body())
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

    async def _reconcile(
        self, namespace: str, name: str, views: tuple[Any, ...], seen: dict[str, Any]
    ) -> Outcome:
        loop = asyncio.get_running_loop()
        self.metrics.queued.labels(RESOURCE).inc()

        def work() -> Outcome:
            self.metrics.queued.labels(RESOURCE).dec()
            with self.metrics.reconcile(RESOURCE, "reconcile"):
                return self.reconciler.reconcile(namespace, name, views, seen)

        return await loop.run_in_executor(self.executor, work)

    async def _sleep(self, wake: asyncio.Event, stopped: Stopped, delay: float | None) -> None:
        timeout = self.settings.resync_seconds if delay is None else max(0.0, delay)
        timeout = min(timeout, self.settings.resync_seconds)
        await sleep_until_woken(wake, stopped, timeout, DEBOUNCE_SECONDS)

    # -- deletion -------------------------------------------------------------------------

    async def delete(self, namespace: str, name: str, uid: str, model: str | None) -> None:
        """The finalizer's work: remove the children, forget the job's version entry."""
        loop = asyncio.get_running_loop()

        def work() -> None:
            with self.metrics.reconcile(RESOURCE, "delete"):
                self.reconciler.delete_children(namespace, name)
                if model:
                    self.reconciler.versions.forget(namespace, model, uid)

        await loop.run_in_executor(self.executor, work)
        self.reconciler.forget(uid)
