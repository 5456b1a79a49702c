"""Pure builders of an IncrementalUpdate's children: plain dicts, asserted as dicts in unit tests.

An update run has two children, both owned by the update:

- the child TrainingJob (`<update>-run-<n>`): the recipe's spec as
  `modelops.lifecycle.update.child_training_spec` derives it (a warm start from the
  serving version on the delta plus a replay sample, or a full retrain), labelled
  `modelops.dev/update` so that ModelDeployments do not take its version as promoted
  until the update's gate says so;
- the evaluation Job (`<update>-run-<n>-eval`): one pod running
  `python -m modelops_runtime compare`, which evaluates the candidate and the serving
  version on the same data and writes both metrics as its termination message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelops.api.base import API_VERSION
from modelops.api.training import TrainingJobSpec
from modelops.api.update import IncrementalUpdateSpec
from modelops.k8s.controller import pods
from modelops.k8s.controller.pods import STORE_MOUNT as STORE_MOUNT
from modelops.k8s.controller.pods import STORE_SECRET as STORE_SECRET
from modelops.k8s.controller.pods import TERMINATION_LOG as TERMINATION_LOG
from modelops.k8s.incrementalupdate import names
from modelops.k8s.security import container_security
from modelops.lifecycle.update import child_training_spec

Manifest = dict[str, Any]

EVALUATION_CONTAINER = "compare"


@dataclass(frozen=True)
class EvaluationSettings(pods.PodSettings):
    """Operator-wide settings of the evaluation pods (from OperatorConfig)."""

    # One retry for a lost node; an evaluation that fails twice fails the run.
    backoff_limit: int = 1
    deadline_seconds: int = 3600


@dataclass(frozen=True)
class UpdateContext:
    """One IncrementalUpdate and its recipe, as the builders need them."""

    name: str
    namespace: str
    uid: str
    spec: IncrementalUpdateSpec
    recipe: TrainingJobSpec
    settings: EvaluationSettings

    @property
    def model(self) -> str:
        return self.recipe.output.model_name

    @property
    def store(self) -> str:
        """The namespace's folder of the recipe's store (its child jobs resolve the same)."""
        return self.settings.store_root(self.recipe.output.store_uri, self.namespace)

    @property
    def image(self) -> str:
        return self.recipe.resources.image or self.settings.image

    def metadata(self, name: str, labels: dict[str, str]) -> Manifest:
        owner = names.owner_reference(self.name, self.uid)
        return pods.metadata(name, self.namespace, labels, owner)


# --------------------------------------------------------------------------------------
# The child TrainingJob
# --------------------------------------------------------------------------------------


def training_job(ctx: UpdateContext, sequence: int, base_version: int | None) -> Manifest:
    """Run `sequence`'s TrainingJob, warm-started from `base_version` (the serving one)."""
    spec = child_training_spec(ctx.recipe, ctx.spec, base_version)
    metadata = ctx.metadata(
        names.training_job(ctx.name, sequence), names.run_labels(ctx.name, ctx.model)
    )
    if base_version is not None:
        metadata["annotations"] = {names.ANNOTATION_CURRENT: str(base_version)}
    return {
        "apiVersion": API_VERSION,
        "kind": "TrainingJob",
        "metadata": metadata,
        "spec": spec.to_dict(),
    }


# --------------------------------------------------------------------------------------
# The evaluation Job
# --------------------------------------------------------------------------------------


def evaluation_data_args(ctx: UpdateContext) -> list[str]:
    """The data both versions are evaluated on, as local mode chooses it: the promotion's
    evaluation data, else the recipe's holdout, else the recipe's seeded validation split."""
    data = ctx.recipe.data
    evaluation_uri = ctx.spec.promotion.evaluation_uri
    args = ["--format", data.format.value]
    if evaluation_uri:
        return [*args, "--data", evaluation_uri]
    if data.holdout_uri:
        return [*args, "--data", data.holdout_uri]
    return [
        *args,
        "--data",
        data.uri,
        "--part",
        "validation",
        "--seed",
        str(ctx.recipe.training.seed),
        "--validation-split",
        str(data.validation_split),
    ]


def compare_args(ctx: UpdateContext, candidate: int, current: int | None) -> list[str]:
    args = [
        "python",
        "-m",
        "modelops_runtime",
        "compare",
        "--store",
        ctx.store,
        "--model",
        ctx.model,
        "--candidate",
        str(candidate),
    ]
    if current is not None:
        args += ["--current", str(current)]
    return [*args, *evaluation_data_args(ctx), "--termination-log", TERMINATION_LOG]


def _volumes(ctx: UpdateContext) -> tuple[list[Manifest], list[Manifest]]:
    """A writable /tmp under the read-only root, and the store (read-only: it only reads)."""
    return pods.tmp_and_store(ctx.settings.store_volume_claim, writable=False)


def _env(ctx: UpdateContext) -> list[Manifest]:
    return [
        {"name": "MODELOPS_STORE_URI", "value": ctx.store},
        # The root file system is read-only: everything that wants a home gets /tmp.
        {"name": "HOME", "value": "/tmp"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]


def _scheduling(recipe: TrainingJobSpec) -> Manifest:
    """Where the recipe's pods may run (its data is reachable there); no GPUs asked for."""
    return pods.scheduling(recipe.resources)


def _resources(recipe: TrainingJobSpec) -> Manifest:
    # A worker's CPU and memory hold the model and a streamed batch; memory is limited.
    resources = recipe.resources
    return {
        "requests": {"cpu": resources.cpus_per_worker, "memory": resources.memory_per_worker},
        "limits": {"memory": resources.memory_per_worker},
    }


def evaluation_job(
    ctx: UpdateContext, sequence: int, candidate: int, current: int | None
) -> Manifest:
    """One pod comparing `candidate` with `current` on the same data."""
    volumes, mounts = _volumes(ctx)
    run = names.training_job(ctx.name, sequence)
    labels = names.evaluation_labels(ctx.name, ctx.model, run)
    container = {
        "name": EVALUATION_CONTAINER,
        "image": ctx.image,
        "imagePullPolicy": "IfNotPresent",
        "command": compare_args(ctx, candidate, current),
        "env": _env(ctx),
        "envFrom": pods.env_from(),
        "resources": _resources(ctx.recipe),
        "securityContext": container_security(),
        "volumeMounts": mounts,
        # compare writes both versions' metrics here; on a crash the log tail stands in.
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    annotations = {names.ANNOTATION_CANDIDATE: str(candidate)}
    if current is not None:
        annotations[names.ANNOTATION_CURRENT] = str(current)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            **ctx.metadata(names.evaluation_job(ctx.name, sequence), labels),
            "annotations": annotations,
        },
        "spec": {
            "backoffLimit": ctx.settings.backoff_limit,
            "activeDeadlineSeconds": ctx.settings.deadline_seconds,
            "template": {
                "metadata": {"labels": labels, "annotations": dict(annotations)},
                "spec": pods.job_pod([container], volumes, _scheduling(ctx.recipe)),
            },
        },
    }
