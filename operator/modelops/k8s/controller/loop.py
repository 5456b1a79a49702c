"""The per-object reconcile loop every resource runs: reconcile, then sleep until woken or due.

Kopf runs one daemon per object (and restarts them all when the operator starts: every
object is reconciled from what is stored and observed, which is what makes a restart
safe). Events of the object's children and changes of its spec wake its loop; a requeue
time or the resync interval wakes it otherwise. Reconciles run on a bounded thread pool,
so many objects created at once queue up instead of opening a connection each, and the
blocking client never stalls Kopf's event loop.

The loop never dies: a refused status write (`StatusConflict`) is retried soon on the
new state; any other error is logged and retried with exponential back-off.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import kopf

from modelops.k8s.controller.status import Outcome, StatusConflict
from modelops.k8s.metrics import OperatorMetrics
from modelops.k8s.wakeups import Key, Stopped, Wakers, sleep_until_woken
from modelops.lifecycle.events import EventNote

T = TypeVar("T")
EventPoster = Callable[[EventNote], None]
Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]
# One pass over the object, started on the event loop (where Kopf's indexes may be read).
Pass = Callable[[], Awaitable[Outcome]]

# A status write refused because the object changed: reconcile again soon, on the new state.
CONFLICT_RETRY_SECONDS = 0.2
ERROR_BACKOFF_LIMIT_SECONDS = 60.0


@dataclass(frozen=True)
class LoopSettings:
    resource: str  # the plural, as metrics label it
    workers: int
    resync_seconds: float
    # Child updates come in bursts (a pod's phase, its conditions); one short pause after
    # a wake folds a burst into one reconcile.
    debounce_seconds: float = 0.2


class ObjectLoops:
    """The loops of one resource's objects, their wake-ups and their worker pool."""

    def __init__(self, settings: LoopSettings, metrics: OperatorMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.wakers = Wakers()
        self.executor = ThreadPoolExecutor(
            max_workers=settings.workers, thread_name_prefix=settings.resource
        )

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    def wake(self, key: Key) -> None:
        """Something the object's reconcile reads changed (a child, a referenced object)."""
        self.wakers.wake(key)

    def spec_changed(self, key: Key, generation: object) -> None:
        """Wake on spec changes only; status writes (the loop's own) need no other pass."""
        self.wakers.wake_on_new_generation(key, generation)

    async def call(self, fn: Callable[[], T], stage: str) -> T:
        """Run `fn` on the worker pool, timed as `stage`."""
        loop = asyncio.get_running_loop()
        resource = self.settings.resource
        self.metrics.queued.labels(resource).inc()

        def work() -> T:
            self.metrics.queued.labels(resource).dec()
            with self.metrics.reconcile(resource, stage):
                return fn()

        return await loop.run_in_executor(self.executor, work)

    def on_pool(self, prepare: Callable[[], Callable[[], Outcome]]) -> Pass:
        """A pass that runs `prepare()`'s reconcile on the worker pool."""

        async def run_pass() -> Outcome:
            return await self.call(prepare(), "reconcile")

        return run_pass

    async def run(
        self,
        key: Key,
        one_pass: Pass,
        *,
        post: EventPoster,
        stopped: Stopped,
        logger: Logger,
        on_exit: Callable[[], None] = lambda: None,
    ) -> None:
        """Loop over one object until Kopf stops its daemon."""
        resource = self.settings.resource
        wake = self.wakers.register(key)
        self.metrics.managed.labels(resource).inc()
        errors = 0
        try:
            while not stopped:
                wake.clear()
                delay: float | None
                try:
                    outcome = await one_pass()
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
                await self.sleep(wake, stopped, delay)
        finally:
            self.wakers.unregister(key, wake)
            self.metrics.managed.labels(resource).dec()
            on_exit()

    async def sleep(self, wake: asyncio.Event, stopped: Stopped, delay: float | None) -> None:
        resync = self.settings.resync_seconds
        timeout = resync if delay is None else min(max(0.0, delay), resync)
        await sleep_until_woken(wake, stopped, timeout, self.settings.debounce_seconds)


def poster(body: kopf.Body) -> EventPoster:
    """Posts a decision's events on the object Kopf handed the daemon."""

    def post(note: EventNote) -> None:
        kopf.event(body, type=note.type, reason=note.reason, message=note.message[:1024])

    return post
