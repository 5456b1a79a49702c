"""Command-line options of `python -m modelops_runtime serve`.

Batching defaults come from the API's BatchingSpec, so the server and the
ModelDeployment resource agree on what an omitted field means.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from modelops.api.deployment import BatchingSpec
from modelops_runtime.serve.peers import Peers
from modelops_runtime.serve.registry import VersionSpec, parse_members

_DEFAULTS = BatchingSpec()


@dataclass(frozen=True)
class ServeConfig:
    store: str
    model: str
    version: str
    host: str
    port: int
    max_batch_size: int
    max_wait_ms: float
    max_queue: int
    timeout_ms: float
    candidate: str | None
    canary_weight: float
    shadow: str | None
    ensemble_method: str | None
    members: str | None
    max_body_bytes: int
    max_connections: int
    feedback_capacity: int
    accuracy_window: int
    torch_threads: int
    drain_seconds: float
    gil_switch_ms: float
    header_timeout_s: float = 10.0
    grpc_port: int | None = None
    advertise_address: str | None = None
    peers: str | None = None
    peers_dns: str | None = None
    peers_any_port: bool = False


def build_parser(prog: str = "python -m modelops_runtime serve") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Serve a model over the Open Inference Protocol.")
    parser.add_argument("--store", required=True, help="Artifact store URI (file:// or s3://).")
    parser.add_argument("--model", required=True, help="Model name.")
    parser.add_argument("--version", default="latest", help="Version number, or latest (default).")
    parser.add_argument("--host", default="0.0.0.0", help="Address to bind.")
    parser.add_argument("--port", type=int, default=8080, help="Port (0 picks a free one).")
    parser.add_argument("--grpc-port", type=int, default=None,
                        help="Port of the OIP gRPC service (0 picks a free one); off when omitted.")
    replicas = parser.add_argument_group("replicas (feedback reaches the replica that answered)")
    replicas.add_argument("--advertise-address", default=os.environ.get("MODELOPS_ADVERTISE_ADDRESS"),
                          help="host:port peers reach this server at; feedback ids then name it.")
    replicas.add_argument("--peers", help="Peers' host:port, comma-separated.")
    replicas.add_argument("--peers-dns", help="A name whose addresses are the peers (a headless Service).")
    replicas.add_argument("--peers-any-port", action="store_true",
                          help="Peers found by --peers-dns may listen on any port (replicas on one host).")
    batching = parser.add_argument_group("batching")
    batching.add_argument("--max-batch-size", type=int, default=_DEFAULTS.max_batch_size)
    batching.add_argument("--max-wait-ms", type=float, default=_DEFAULTS.max_wait_ms)
    batching.add_argument("--max-queue", type=int, default=_DEFAULTS.max_queue)
    batching.add_argument("--timeout-ms", type=float, default=float(_DEFAULTS.timeout_ms))
    rollout = parser.add_argument_group("rollout")
    exclusive = rollout.add_mutually_exclusive_group()
    exclusive.add_argument("--candidate", help="Canary version loaded beside the stable one.")
    exclusive.add_argument("--shadow", help="Version that gets a mirrored copy of all traffic.")
    rollout.add_argument("--canary-weight", type=float, default=0.0, help="Percent to the candidate.")
    ensemble = parser.add_argument_group("ensemble")
    ensemble.add_argument("--ensemble-method", choices=["mean", "vote", "weighted"])
    ensemble.add_argument("--members", help="Member versions: 1,2,3 or 1:30,2:70 (weights).")
    limits = parser.add_argument_group("limits")
    limits.add_argument("--max-body-bytes", type=int, default=8 * 1024 * 1024)
    limits.add_argument("--max-connections", type=int, default=4096)
    limits.add_argument("--header-timeout-s", type=float, default=10.0,
                        help="A request's headers must be complete this long after its first byte.")
    limits.add_argument("--feedback-capacity", type=int, default=100_000,
                        help="Recent request ids kept for feedback.")
    limits.add_argument("--accuracy-window", type=int, default=1000,
                        help="Feedback rows in the rolling accuracy.")
    limits.add_argument("--torch-threads", type=int, default=1,
                        help="Intra-op threads of the forward pass (replicas scale out instead).")
    limits.add_argument("--gil-switch-ms", type=float, default=0.5,
                        help="Python thread switch interval: how long the forward thread may "
                        "wait for the GIL while the event loop is busy (Python's default is 5).")
    limits.add_argument("--drain-seconds", type=float, default=20.0,
                        help="Grace for in-flight requests on SIGTERM.")
    return parser


def parse_config(argv: list[str]) -> ServeConfig:
    args = build_parser().parse_args(argv)
    if args.canary_weight and not args.candidate:
        raise SystemExit("--canary-weight needs --candidate")
    if not 0 <= args.canary_weight <= 100:
        raise SystemExit("--canary-weight is a percent from 0 to 100")
    if (args.members is None) != (args.ensemble_method is None):
        raise SystemExit("--members and --ensemble-method go together")
    for name, value in (("--max-batch-size", args.max_batch_size), ("--max-queue", args.max_queue)):
        if value < 1:
            raise SystemExit(f"{name} must be at least 1")
    if (args.peers or args.peers_dns) and not args.advertise_address:
        raise SystemExit("--peers and --peers-dns need --advertise-address")
    return ServeConfig(**{k: v for k, v in vars(args).items()})


def peers(config: ServeConfig) -> Peers | None:
    """Who this server forwards feedback to; None when it runs alone."""
    if config.advertise_address is None or not (config.peers or config.peers_dns):
        return None
    static = frozenset(a.strip() for a in (config.peers or "").split(",") if a.strip())
    return Peers(config.advertise_address, static, config.peers_dns, config.peers_any_port)


def stable_spec(config: ServeConfig, resolved: int | None) -> VersionSpec:
    """The first stable version: an ensemble of --members, or one stored version."""
    if config.members is not None and config.ensemble_method is not None:
        # --version names the ensemble; a number or "latest" cannot (it would clash with a
        # stored version's label), so the label is then the members joined: "1+2".
        label = config.version
        named = label not in ("latest", "") and not label.isdigit()
        return parse_members(config.members, config.ensemble_method, label if named else None)
    assert resolved is not None
    return VersionSpec.single(resolved)
