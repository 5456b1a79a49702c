"""Dynamic batching: concurrent requests grouped into one forward pass.

The pattern is Ray Serve's batching queue: a bounded deque of futures, an event
set when a full batch is waiting, and a timer so no request waits longer than
`max_wait_s` for its batch to fill. The wait is measured from the oldest queued
request's arrival (not from when the loop looked), so requests that queued while
the previous batch was computing do not wait twice.

The forward pass runs in an executor (one dedicated thread shared by all versions)
so the event loop keeps accepting and parsing while the model computes; what
queues up meanwhile becomes the next batch. Memory is bounded: at most
`max_queue` requests wait, the next one gets QueueFull (429) at once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from modelops_runtime.serve.errors import ForwardFailed, NotReady, QueueFull, RequestTimeout
from modelops_runtime.serve.protocol import Outputs

Forward = Callable[[np.ndarray], Outputs]


@dataclass(slots=True)
class _Pending:
    rows: np.ndarray
    future: asyncio.Future[Outputs]
    arrival: float
    timer: asyncio.TimerHandle


def _expire(future: asyncio.Future[Outputs], timeout_ms: float) -> None:
    if not future.done():
        future.set_exception(RequestTimeout(timeout_ms))


def _resolve(pending: _Pending, outputs: Outputs) -> None:
    pending.timer.cancel()
    if not pending.future.done():
        pending.future.set_result(outputs)


class Batcher:
    """Queue and batch the requests of one model version."""

    def __init__(
        self,
        label: str,
        forward: Forward,
        executor: Executor,
        *,
        max_batch_size: int,
        max_wait_s: float,
        max_queue: int,
        timeout_s: float,
    ) -> None:
        self.label = label
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self._forward = forward
        self._executor = executor
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._computing = 0
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._closed = False
        self._task: asyncio.Task[None] | None = None

    @property
    def depth(self) -> int:
        """Requests waiting for a batch (not counting the one computing)."""
        return len(self._queue)

    @property
    def computing(self) -> int:
        """Requests in the batch being computed now."""
        return self._computing

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{self.label}")

    def submit(self, rows: np.ndarray) -> asyncio.Future[Outputs]:
        """Queue rows for the next batch; raises QueueFull at the bound, at once."""
        if self._closed:
            raise NotReady(f"version '{self.label}' is being unloaded")
        if len(self._queue) >= self.max_queue:
            raise QueueFull(self.label, self.max_queue)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outputs] = loop.create_future()
        timer = loop.call_later(self.timeout_s, _expire, future, self.timeout_s * 1000)
        self._queue.append(_Pending(rows, future, loop.time(), timer))
        self._queued_rows += len(rows)
        if not self._wake.is_set():
            self._wake.set()
        if self._queued_rows >= self.max_batch_size:
            self._full.set()
        return future

    async def close(self) -> None:
        """Refuse new requests, finish the queued ones, then stop."""
        self._closed = True
        self._wake.set()
        self._full.set()  # cut a batch now rather than wait out max_wait_s
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closed:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._wait_to_fill(loop)
            batch = self._take()
            if batch:
                await self._compute(loop, batch)

    async def _wait_to_fill(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._queued_rows >= self.max_batch_size or self._closed:
            return
        remaining = self._queue[0].arrival + self.max_wait_s - loop.time()
        if remaining <= 0:
            return
        self._full.clear()
        try:
            async with asyncio.timeout(remaining):
                await self._full.wait()
        except TimeoutError:
            pass

    def _take(self) -> list[_Pending]:
        """Pop up to max_batch_size rows; a single oversize request goes alone."""
        batch: list[_Pending] = []
        rows = 0
        while self._queue:
            head = self._queue[0]
            n = len(head.rows)
            if batch and rows + n > self.max_batch_size:
                break
            self._queue.popleft()
            self._queued_rows -= n
            if head.future.done():  # timed out or cancelled while queued
                head.timer.cancel()
                continue
            batch.append(head)
            rows += n
        if self._queued_rows < self.max_batch_size:
            self._full.clear()
        return batch

    async def _compute(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        rows = batch[0].rows if len(batch) == 1 else np.concatenate([p.rows for p in batch])
        self._computing = len(batch)
        try:
            out = await loop.run_in_executor(self._executor, self._forward, rows)
        except Exception as error:  # the loop must survive a failing model
            for pending in batch:
                pending.timer.cancel()
                if not pending.future.done():
                    pending.future.set_exception(ForwardFailed(f"forward pass failed: {error!r}"))
            return
        finally:
            self._computing = 0
        start = 0
        for pending in batch:
            end = start + len(pending.rows)
            _resolve(pending, Outputs(out.scores[start:end], out.predictions[start:end]))
            start = end
