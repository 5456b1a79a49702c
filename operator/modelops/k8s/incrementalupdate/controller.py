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
import contextlib
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from modelops.k8s.incrementalupdate import names
from modelops.k8s.incrementalupdate.reconcile import RESOURCE, Outcome, Reconciler, StatusConflict
from modelops.k8s.metrics import OperatorMetrics
from modelops.lifecycle.training import EventNote

Key = tuple[str, str]  # (namespace, update label value)
EventPoster = Callable[[EventNote], None]

# Child updates come in bursts (a TrainingJob's status, its pods); one short pause
# after a wake folds a burst into one reconcile.
DEBOUNCE_SECONDS = 0.2
CONFLICT_RETRY_SECONDS = 0.2
ERROR_BACKOFF_LIMIT_SECONDS = 60.0


class Stopped(Protocol):
    """Kopf's DaemonStopped, as far as the loop uses it."""

    def __bool__(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> Awaitable[Any]: ...


class Wakers:
    """One asyncio.Event per running update loop."""

    def __init__(self) -> None:
        self._events: dict[Key, asyncio.Event] = {}
        self.generations: dict[Key, int | None] = {}

    def register(self, key: Key) -> asyncio.Event:
        return self._events.setdefault(key, asyncio.Event())

    def unregister(self, key: Key, event: asyncio.Event) -> None:
        if self._events.get(key) is event:
            del self._events[key]
            self.generations.pop(key, None)

    def wake(self, key: Key) -> None:
        event = self._events.get(key)
        if event is not None:
            event.set()


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
        if self.wakers.generations.get(key, generation) != generation:
            self.wakers.wake(key)

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
        if timeout <= 0:
            return
        waiters = {
            asyncio.ensure_future(wake.wait()),
            asyncio.ensure_future(stopped.wait()),
        }
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await waiter
        if wake.is_set() and not stopped:
            await asyncio.sleep(DEBOUNCE_SECONDS)
