"""The model server: Open Inference Protocol (KServe v2) over REST and gRPC, with dynamic
batching, canary / shadow routing, hot swap, feedback and Prometheus metrics.

Modules, one job each:
    protocol    JSON bodies <-> numpy, validated against the ModelCard
    errors      the exception -> HTTP status table
    batching    the bounded batching queue; forward passes on one dedicated thread
    registry    loading versions (stored or composed ensembles) in the background
    routing     the immutable traffic split (stable / canary weight / shadow)
    feedback    recent predictions by request id; rolling accuracy
    metrics     prometheus-client metrics labelled by model and version
    dataplane   the protocol-independent server logic
    repository  the model repository extension (index, load, unload) on hot swap
    auth        the admin token both transports check
    rest, http  the REST adapter and the HTTP/1.1 server under it
    binary      REST binary tensors (Inference-Header-Content-Length)
    grpc_adapter, grpc_codec, grpc_stream, grpc_repository, oip
                OIP over gRPC (compiled from oip/*.proto), with server reflection
    app, cli    wiring and the `serve` subcommand

Routing and hot swap (how the operator drives a replica):
    PUT  /v2/admin/routing {"stable": "3", "candidate": "4", "weight": 20, "shadow": false}
         weight is the candidate's percent of live traffic; "shadow": true (weight 0)
         mirrors every request to the candidate, compares the answers and records
         agreement (and, with feedback, both versions' accuracy). Numeric versions
         not yet loaded are loaded first, in the background.
    POST /v2/admin/load {"version": 5, "role": "stable"}  hot swap: load 5 beside the
         running version, then switch in one step; the old version answers what
         it already queued and is unloaded. "role": "candidate" (with "weight" or
         "shadow") makes it the candidate instead; {"members": "1:30,2:70",
         "method": "weighted", "version": "blend"} loads a composed ensemble.
    GET  /v2/admin/routing  the split, loaded versions, accuracy and agreement.
    When MODELOPS_ADMIN_TOKEN (or a file named by MODELOPS_ADMIN_TOKEN_FILE) is
    set, admin calls need `Authorization: Bearer <token>`; otherwise they are
    open, so keep the port inside the cluster network.
    Requests with header x-routing-key (or x-request-id) are routed by a hash of
    it, so a client stays on one side of a canary; every infer response carries
    the answering version in `x-model-version` and `model_version`.
"""

from modelops_runtime.serve.cli import main

__all__ = ["main"]
