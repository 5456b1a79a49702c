"""`modelops run`: the whole lifecycle on one machine, from the operator's manifests.

One asyncio loop ticks every controller once a second; child processes (training,
evaluation, inference replicas) run in their own process groups and are stopped on
Ctrl-C or SIGTERM, so nothing outlives the command.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel
from rich.console import Console
from rich.live import Live

from modelops.api.deployment import ModelDeployment
from modelops.api.training import TrainingJob, TrainingPhase
from modelops.api.update import IncrementalUpdate
from modelops.api.validation import iter_documents, manifest_files, parse_resource
from modelops.local import search_view, view
from modelops.local.context import LocalContext, now, rewrite_root
from modelops.local.processes import Supervisor, is_ours, stop_leftovers
from modelops.local.rayhead import RayHead
from modelops.local.state import Heartbeat, StateStore
from modelops.local.training import LocalTraining
from modelops.local.updating import LocalUpdate


class ManifestError(ValueError):
    """A manifest that local mode cannot run, with every problem listed."""


class Controller(Protocol):
    async def tick(self) -> None: ...


def load_resources(paths: Sequence[str], root: Path) -> list[BaseModel]:
    """Every resource in the files, validated like admission does, paths mapped to `root`."""
    resources: list[BaseModel] = []
    problems: list[str] = []
    for path in manifest_files(paths):
        for document in iter_documents(path.read_text()):
            resource, found = parse_resource(rewrite_root(document, root))
            problems += [f"{path}: {problem}" for problem in found]
            if resource is not None:
                resources.append(resource)
    if problems:
        raise ManifestError("\n".join(problems))
    if not resources:
        raise ManifestError("no TrainingJob, ModelDeployment or IncrementalUpdate found")
    return resources


class TrainingController:
    """Adapts LocalTraining to the async loop."""

    def __init__(self, training: LocalTraining, promote: bool) -> None:
        self.training = training
        self.promote = promote

    async def tick(self) -> None:
        before = self.training.status.phase
        self.training.tick()
        version = self.training.status.model_version
        succeeded = self.training.status.phase == TrainingPhase.SUCCEEDED
        if self.promote and succeeded and before != TrainingPhase.SUCCEEDED and version:
            # A TrainingJob a user applied is its own gate: its version may be served.
            self.training.ctx.state.promote(version.name, version.version)


class LocalRunner:
    """Builds the controllers for the manifests and runs them until stopped."""

    def __init__(self, resources: list[BaseModel], ctx: LocalContext, base_port: int) -> None:
        self.ctx = ctx
        self.controllers: list[Controller] = []
        self.urls: dict[str, str] = {}
        jobs = {r.metadata.name: r for r in resources if isinstance(r, TrainingJob)}
        updates = [r for r in resources if isinstance(r, IncrementalUpdate)]
        deployments = [r for r in resources if isinstance(r, ModelDeployment)]
        for job in jobs.values():
            self.controllers.append(TrainingController(LocalTraining(job, ctx), promote=True))
        for update in updates:
            recipe = jobs.get(update.spec.training_job_ref.name)
            if recipe is None:
                raise ManifestError(
                    f"iu/{update.metadata.name}: spec.trainingJobRef.name: no TrainingJob "
                    f"{update.spec.training_job_ref.name!r} among the manifests"
                )
            self.controllers.append(LocalUpdate(update, recipe, ctx))
        from modelops.local.serving import LocalServing  # needs aiohttp; imported when used

        for offset, deployment in enumerate(deployments):
            serving = LocalServing(deployment, ctx, base_port + offset)
            self.controllers.append(serving)
            self.urls[f"md/{deployment.metadata.name}"] = serving.url

    async def run(self, stop: asyncio.Event, live: bool, console: Console) -> None:
        for controller in self.controllers:
            start = getattr(controller, "start", None)
            if start is not None:
                await start()
        printed = 0
        display = Live(console=console, refresh_per_second=2, transient=False) if live else None
        with display if display is not None else contextlib.nullcontext():
            while not stop.is_set():
                for controller in self.controllers:
                    try:
                        await controller.tick()
                    except Exception as error:  # one controller's failure never stops the loop
                        self.ctx.event(
                            "runner", "ControllerError", f"{type(error).__name__}: {error}"
                        )
                self.ctx.state.record_processes(self.ctx.supervisor.pids())
                self.ctx.state.beat(Heartbeat(os.getpid(), now()))
                records = self.ctx.state.all_records()
                if display is not None:
                    display.update(view.render(records, self.ctx.events, self.urls))
                else:
                    events = list(self.ctx.events)
                    for event in events[printed:] if len(events) >= printed else events:
                        console.print(event.line(), highlight=False)
                    printed = len(events)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)

    async def shutdown(self) -> None:
        for controller in reversed(self.controllers):
            closer = getattr(controller, "close", None)
            if closer is not None:
                await closer()
        await asyncio.to_thread(self.ctx.supervisor.stop_all)
        self.ctx.state.record_processes({})
        self.ctx.state.beat(Heartbeat(os.getpid(), now(), stopped=True))


async def run_async(runner: LocalRunner, live: bool, console: Console) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await runner.run(stop, live, console)
    finally:
        await runner.shutdown()


def run(
    paths: Sequence[str], state_dir: Path, root: Path, base_port: int, live: bool | None
) -> int:
    """The `modelops run` command."""
    console = Console()
    try:
        resources = load_resources(paths, root)
    except (ManifestError, OSError) as error:
        print(error, file=sys.stderr)
        return 2
    state = StateStore(state_dir)
    left = stop_leftovers(state.recorded_processes())
    if left:
        console.print(f"stopped {len(left)} process(es) left by an earlier run")
    marker = f"{os.getpid()}-{int(time.time())}"
    ctx = LocalContext(root=root, state=state, supervisor=Supervisor(state_dir / "logs", marker))
    ctx.event_log = state_dir / "events.log"
    # Short: Ray's socket paths under it must fit the 107-byte limit of a Unix socket.
    ray_dir = Path(tempfile.gettempdir()) / f"modelops-ray-{os.getpid()}"
    ctx.ray = RayHead(ctx.supervisor, ctx.python, ctx.cpus, ray_dir)
    try:
        runner = LocalRunner(resources, ctx, base_port)
    except ManifestError as error:
        print(error, file=sys.stderr)
        return 2
    for name, url in runner.urls.items():
        console.print(f"{name} will serve at {url}")
    try:
        asyncio.run(run_async(runner, live if live is not None else console.is_terminal, console))
    finally:
        shutil.rmtree(ray_dir, ignore_errors=True)
    console.print("stopped; state kept in", str(state_dir))
    return 0


def status(state_dir: Path) -> int:
    """The `modelops status` command: the table from another terminal."""
    store = StateStore(state_dir)
    records: list[dict[str, Any]] = store.all_records()
    console = Console()
    if not records:
        console.print(f"no local state in {state_dir}")
        return 1
    beat = store.last_beat()
    live = view.is_live(beat, now(), is_ours)
    if console.is_terminal:
        if not live:
            console.print(view.not_live_line(beat, now()), highlight=False)
        console.print(view.table(records, live))
        for grid in filter(None, map(search_view.table, records)):
            console.print(grid)
    else:
        if not live:
            print(view.not_live_line(beat, now()))
        for record in records:
            print(view.plain_line(record, live))
        for record in records:
            for line in search_view.plain_lines(record):
                print(line)
    return 0
