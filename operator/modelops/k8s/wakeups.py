"""How a per-object control loop sleeps: until woken by an event, stopped, or due."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any, Protocol

Key = tuple[str, str]  # (namespace, the object's label value)


class Stopped(Protocol):
    """Kopf's DaemonStopped, as far as the loops use it."""

    def __bool__(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> Awaitable[Any]: ...


class Wakers:
    """One asyncio.Event per running loop, and the spec generation each loop last saw.

    A "generation" is whatever identifies what the user asked for: the object's
    `metadata.generation`, or that with the annotations a resource also acts on.
    """

    def __init__(self) -> None:
        self._events: dict[Key, asyncio.Event] = {}
        self.generations: dict[Key, object] = {}

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

    def wake_on_new_generation(self, key: Key, generation: object) -> None:
        """Wake on spec changes only: status writes (the loop's own) need no other pass."""
        if self.generations.get(key, generation) != generation:
            self.wake(key)


async def sleep_until_woken(
    wake: asyncio.Event, stopped: Stopped, timeout: float, debounce: float
) -> None:
    """Sleep up to `timeout`; after a wake, pause `debounce` to fold a burst of events."""
    if timeout <= 0:
        return
    waiters = {asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stopped.wait())}
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await waiter
    if wake.is_set() and not stopped:
        await asyncio.sleep(debounce)
