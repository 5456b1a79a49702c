"""One attempt of one TrainingJob as the builders see it, and the ports and paths its
children agree on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelops.api.training import TrainingJobSpec
from modelops.k8s.controller import pods
from modelops.k8s.trainingjob import names

Manifest = dict[str, Any]

SPEC_DIR = "/etc/modelops/spec"
SPEC_FILE = "trainingjob.yaml"
PROGRESS_FILE = "/tmp/modelops/progress.json"
AUTH_TOKEN_KEY = "auth_token"
GCS_PORT = 6379
DASHBOARD_PORT = 8265
CLIENT_PORT = 10001
METRICS_PORT = 8080


@dataclass(frozen=True)
class ClusterSettings(pods.PodSettings):
    """Operator-wide settings that shape the pods (from OperatorConfig)."""

    head_cpu: str = "1"
    head_memory: str = "2Gi"


@dataclass(frozen=True)
class JobContext:
    """One attempt of one TrainingJob, as the builders need it."""

    name: str
    namespace: str
    uid: str
    spec: TrainingJobSpec
    version: int
    attempt: int
    settings: ClusterSettings

    @property
    def image(self) -> str:
        return self.spec.resources.image or self.settings.image

    @property
    def model(self) -> str:
        return self.spec.output.model_name

    def labels(self, **extra: str) -> dict[str, str]:
        return {**names.job_labels(self.name, self.model), **extra}

    def metadata(self, name: str, labels: dict[str, str] | None = None) -> Manifest:
        owner = names.owner_reference(self.name, self.uid)
        return pods.metadata(name, self.namespace, labels or self.labels(), owner)

    @property
    def head_address(self) -> str:
        service = names.head_service(self.name)
        return f"{service}.{self.namespace}.svc:{GCS_PORT}"
