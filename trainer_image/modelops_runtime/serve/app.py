"""Wiring: build the data plane and HTTP server from a ServeConfig, run until SIGTERM.

On SIGTERM/SIGINT the server reports not-ready, stops accepting connections,
answers what it already queued (up to --drain-seconds), then exits, so a rolling
update or scale-down loses no request.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from concurrent.futures import ThreadPoolExecutor

import torch
from prometheus_client import disable_created_metrics

from modelops_runtime.serve.config import ServeConfig, peers, stable_spec
from modelops_runtime.serve.dataplane import DataPlane
from modelops_runtime.serve.http import HttpServer
from modelops_runtime.serve.metrics import ServeMetrics
from modelops_runtime.serve.registry import ModelRegistry, VersionSpec, resolve_version
from modelops_runtime.serve.rest import (
    EXTENSIONS,
    SERVER_NAME,
    SERVER_VERSION,
    RestAdapter,
    error_body,
)

log = logging.getLogger("modelops_runtime.serve")


def build(config: ServeConfig) -> tuple[DataPlane, HttpServer]:
    disable_created_metrics()  # the *_created series double the exposition for no use here
    metrics = ServeMetrics(config.model)
    registry = ModelRegistry(
        config.store,
        config.model,
        metrics,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="forward"),
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="loader"),
        max_batch_size=config.max_batch_size,
        max_wait_s=config.max_wait_ms / 1000.0,
        max_queue=config.max_queue,
        timeout_s=config.timeout_ms / 1000.0,
    )
    dataplane = DataPlane(
        registry,
        metrics,
        feedback_capacity=config.feedback_capacity,
        accuracy_window=config.accuracy_window,
        peers=peers(config),
    )
    server = HttpServer(
        RestAdapter(dataplane),
        error_body,
        max_body=config.max_body_bytes,
        max_connections=config.max_connections,
        header_timeout_s=config.header_timeout_s,
    )
    return dataplane, server


async def serve(config: ServeConfig) -> None:
    torch.set_num_threads(config.torch_threads)
    sys.setswitchinterval(config.gil_switch_ms / 1000.0)
    dataplane, server = build(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Listen first: liveness answers while the model loads, readiness once it is in.
    port = await server.start(config.host, config.port)
    log.info("listening on http://%s:%d", config.host, port)
    grpc_server = None
    if config.grpc_port is not None:
        # Imported here: processes without a gRPC port never compile the protocol.
        from modelops_runtime.serve.grpc_adapter import GrpcServer

        grpc_server = GrpcServer(
            dataplane, max_message=config.max_body_bytes, server_name=SERVER_NAME,
            server_version=SERVER_VERSION, extensions=EXTENSIONS,
        )
        grpc_port = await grpc_server.start(config.host, config.grpc_port)
        log.info("listening on grpc://%s:%d", config.host, grpc_port)
    resolved = None if config.members else resolve_version(config.store, config.model, config.version)
    stable = stable_spec(config, resolved)
    other = config.candidate or config.shadow
    candidate = VersionSpec.single(resolve_version(config.store, config.model, other)) if other else None
    await dataplane.start(stable, candidate, config.canary_weight, config.shadow is not None)
    log.info("ready: model %s, routing %s", config.model, dataplane.routing)
    await stop.wait()
    log.info("draining")
    dataplane.draining = True
    if grpc_server is not None:
        await asyncio.gather(server.close(grace_s=config.drain_seconds), grpc_server.close(config.drain_seconds))
    else:
        await server.close(grace_s=config.drain_seconds)
    await dataplane.close()
