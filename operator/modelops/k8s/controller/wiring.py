"""The Kopf handlers every resource registers the same way: spec changes wake the object's
loop, one daemon per object runs it, cleanup closes the loops.

A resource's handlers module adds only what is its own: the indexes and child events
it reads, and what one daemon does (`run`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from modelops.api.base import GROUP, VERSION
from modelops.k8s.controller.loop import EventPoster, ObjectLoops, Pass, poster
from modelops.k8s.controller.naming import label_value
from modelops.k8s.wakeups import Key, Stopped


@dataclass(frozen=True)
class Daemon:
    """What Kopf hands the daemon of one object."""

    memo: Any
    namespace: str
    name: str
    uid: str
    body: kopf.Body
    stopped: Stopped
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger]
    indexes: Mapping[str, Any] = field(default_factory=dict)  # Kopf's, by function name

    @property
    def key(self) -> Key:
        """The object's loop key: (namespace, its name as a label value)."""
        return (self.namespace, label_value(self.name))

    @property
    def post(self) -> EventPoster:
        return poster(self.body)


async def serve(
    daemon: Daemon, loops: ObjectLoops, one_pass: Pass, on_exit: Callable[[], None]
) -> None:
    """Run the daemon's object on `loops` until Kopf stops the daemon."""
    await loops.run(
        daemon.key,
        one_pass,
        post=daemon.post,
        stopped=daemon.stopped,
        logger=daemon.logger,
        on_exit=on_exit,
    )


def generation(meta: Mapping[str, Any]) -> object:
    return meta.get("generation")


def register(
    plural: str,
    handler: str,
    loops: Callable[[Any], ObjectLoops | None],
    run: Callable[[Daemon], Awaitable[None]],
    asked: Callable[[Mapping[str, Any]], object] = generation,
) -> None:
    """Register `plural`'s spec-change event, its per-object daemon and its cleanup.

    `loops(memo)` finds the resource's loops (None before start-up); `asked(meta)` is
    what of an object the user changes (a new value wakes its loop; the loop's own
    status writes do not); `handler` names the handlers as Kopf reports them.
    """

    @kopf.on.event(GROUP, VERSION, plural, id=f"{handler}_event")
    def spec_event(name: str, namespace: str | None, meta: kopf.Meta, memo: Any, **_: Any) -> None:
        found = loops(memo)
        if found is not None and namespace is not None:
            found.spec_changed((namespace, label_value(name)), asked(meta))

    @kopf.daemon(GROUP, VERSION, plural, id=f"{handler}_loop", cancellation_timeout=10.0)
    async def daemon(
        name: str,
        namespace: str | None,
        uid: str,
        body: kopf.Body,
        memo: Any,
        stopped: kopf.DaemonStopped,
        logger: kopf.Logger,
        **kwargs: Any,
    ) -> None:
        assert namespace is not None, f"{plural} are namespaced"
        await run(Daemon(memo, namespace, name, uid, body, stopped, logger, kwargs))

    @kopf.on.cleanup(id=f"close_{handler}_loops")
    def cleanup(memo: Any, **_: Any) -> None:
        found = loops(memo)
        if found is not None:
            found.close()
