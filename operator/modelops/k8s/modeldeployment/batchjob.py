"""Batch prediction's Job: the stable version over a dataset, one Job per version and dataset.

Its pod is the server's image and store (writable: the outputs go there), without the
admin token: it answers no admin calls.
"""

from __future__ import annotations

from modelops.k8s.controller import pods
from modelops.k8s.controller.pods import TERMINATION_LOG
from modelops.k8s.modeldeployment import builders, names
from modelops.k8s.security import container_security


def batch_args(ctx: builders.ServingContext, version_label: str) -> list[str]:
    batch = ctx.spec.batch_prediction
    assert batch is not None
    return [
        "python",
        "-m",
        "modelops_runtime",
        "predict-batch",
        "--store",
        ctx.spec.model.store_uri,
        "--model",
        ctx.model,
        "--version",
        version_label,
        "--input",
        batch.input_uri,
        "--output",
        batch.output_uri,
        "--format",
        batch.format.value,
        "--batch-size",
        str(batch.batch_size),
        "--termination-log",
        TERMINATION_LOG,
    ]


def batch_job(ctx: builders.ServingContext) -> builders.Manifest:
    """Batch prediction with the stable version; one Job per version and dataset."""
    batch = ctx.spec.batch_prediction
    if batch is None or ctx.version is None:
        raise ValueError(f"{ctx.name}: batch prediction needs spec.batchPrediction and a version")
    volumes, mounts = builders.store_volumes(ctx, writable=True)
    name = names.batch_job(ctx.name, ctx.version, batch.input_uri, batch.output_uri)
    container = {
        "name": "predict",
        "image": ctx.image,
        "imagePullPolicy": "IfNotPresent",
        # The Job's retries share its name: each clears what a killed attempt left.
        "command": [*batch_args(ctx, str(ctx.version)), "--run-id", name],
        "env": builders.pod_env(),
        "envFrom": pods.env_from(),
        "resources": builders.resources(ctx.spec),
        "securityContext": container_security(),
        "volumeMounts": mounts,
        # The final counts, which the operator copies into status.batchPrediction.
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    labels = ctx.labels(names.ROLE_BATCH)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": ctx.metadata(name, names.ROLE_BATCH)
        | {"annotations": {names.ANNOTATION_VERSION: str(ctx.version)}},
        "spec": {
            "backoffLimit": 2,
            "template": {
                "metadata": {"labels": labels},
                "spec": pods.job_pod([container], volumes, pods.scheduling(ctx.spec.resources)),
            },
        },
    }
