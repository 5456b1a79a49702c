"""Helpers of the TrainingJob cluster tests: manifests, reads, and driving pods like a kubelet.

KWOK pods run no containers: KWOK marks a scheduled pod Running and Ready, and the tests
play the rest of the kubelet's part by patching pod status (phase, termination message)
and the driver's part by patching the head pod's progress annotation.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from kubernetes import client

from modelops.lifecycle.training_report import TrainingResult
from tests.cluster.operator_fixture import wait_for
from tests.unit.manifests import training_job

GROUP, VERSION, PLURAL = "modelops.dev", "v1alpha1", "trainingjobs"
MERGE = "application/merge-patch+json"
JOB_LABEL = "modelops.dev/trainingjob"
GPU_TOLERATION = {
    "key": "nvidia.com/gpu",
    "operator": "Equal",
    "value": "present",
    "effect": "NoSchedule",
}


def manifest(name: str, model: str = "digits", **spec: Any) -> dict[str, Any]:
    """The digits example, renamed, with spec fields replaced (resources merged)."""
    document = training_job()
    document["metadata"] = {"name": name}
    document["spec"]["output"]["modelName"] = model
    resources = spec.pop("resources", {})
    document["spec"]["resources"].update(resources)
    document["spec"].update(spec)
    return document


class Cluster:
    """The API calls the tests make, with the official client."""

    def __init__(self, k8s: Any, namespace: str) -> None:
        self.core = client.CoreV1Api(k8s)
        self.custom = client.CustomObjectsApi(k8s)
        self.ns = namespace
        self._lock = threading.Lock()

    # -- jobs -----------------------------------------------------------------------------

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.ns, PLURAL, body
        )
        return created

    def job(self, name: str) -> dict[str, Any]:
        job: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.ns, PLURAL, name
        )
        return job

    def status(self, name: str) -> dict[str, Any]:
        return self.job(name).get("status") or {}

    def patch_job(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        patched: dict[str, Any] = self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.ns, PLURAL, name, patch, _content_type=MERGE
        )
        return patched

    def delete_job(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)

    def jobs(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.ns, PLURAL
        )["items"]
        return items

    def wait_phase(self, name: str, phase: str, timeout: float = 60.0) -> dict[str, Any]:
        status: dict[str, Any] = wait_for(
            f"{name} {phase}",
            lambda: (s := self.status(name)).get("phase") == phase and s,
            timeout=timeout,
        )
        return status

    # -- pods -----------------------------------------------------------------------------

    def pods(self, job: str | None = None) -> list[Any]:
        selector = f"{JOB_LABEL}={job}" if job else JOB_LABEL
        items: list[Any] = self.core.list_namespaced_pod(self.ns, label_selector=selector).items
        return items

    def pod_names(self, job: str | None = None) -> set[str]:
        return {p.metadata.name for p in self.pods(job) if p.metadata.deletion_timestamp is None}

    def wait_pods(self, job: str, names: set[str], timeout: float = 60.0) -> list[Any]:
        def ready() -> list[Any] | None:
            pods = [p for p in self.pods(job) if p.metadata.deletion_timestamp is None]
            return pods if {p.metadata.name for p in pods} == names else None

        found: list[Any] = wait_for(f"pods of {job}: {sorted(names)}", ready, timeout=timeout)
        return found

    def pod(self, name: str) -> Any:
        return self.core.read_namespaced_pod(name, self.ns)

    def report_progress(self, pod: str, epoch: int, total: int, **metrics: float) -> None:
        """What the driver does each epoch: the progress annotation on its own pod."""
        document = {
            "epoch": epoch,
            "totalEpochs": total,
            "percent": 100 * epoch // total,
            "metrics": metrics,
            "samplesPerSecond": 1000.0,
            "phase": "training",
        }
        patch = {"metadata": {"annotations": {"modelops.dev/progress": json.dumps(document)}}}
        self.core.patch_namespaced_pod(pod, self.ns, patch, _content_type=MERGE)

    def terminate(
        self,
        pod: str,
        phase: str,
        exit_code: int,
        message: str = "",
        reason: str | None = None,
    ) -> None:
        """What the kubelet does when the main container exits."""
        current = self.pod(pod)
        statuses = []
        for status in current.status.container_statuses or []:
            statuses.append(
                {
                    "name": status.name,
                    "image": status.image,
                    "imageID": status.image_id or "",
                    "ready": False,
                    "restartCount": status.restart_count or 0,
                    "state": {
                        "terminated": {
                            "exitCode": exit_code,
                            "reason": reason or ("Completed" if exit_code == 0 else "Error"),
                            "message": message,
                            "startedAt": "2026-01-01T00:00:00Z",
                            "finishedAt": "2026-01-01T00:10:00Z",
                        }
                    },
                }
            )
        serialize = self.core.api_client.sanitize_for_serialization
        conditions = [
            {**condition, "status": "False"}
            if condition["type"] in ("Ready", "ContainersReady")
            else condition
            for condition in serialize(current.status.conditions or [])
        ]
        body = {"status": {"phase": phase, "containerStatuses": statuses, "conditions": conditions}}
        self.core.patch_namespaced_pod_status(pod, self.ns, body, _content_type=MERGE)

    def succeed(self, pod: str, result: TrainingResult) -> None:
        self.terminate(pod, "Succeeded", 0, message=result.encode())

    def fail(self, pod: str, message: str = "worker lost", reason: str = "Error") -> None:
        self.terminate(pod, "Failed", 1, message=message, reason=reason)

    # -- everything else ------------------------------------------------------------------

    def events(self, name: str) -> list[str]:
        items = self.core.list_namespaced_event(
            self.ns, field_selector=f"involvedObject.name={name}"
        ).items
        # eventTime keeps microseconds; creation timestamps tie within a second.
        ordered = sorted(items, key=lambda e: e.event_time or e.metadata.creation_timestamp)
        return [e.reason for e in ordered]

    def children(self, job: str) -> dict[str, set[str]]:
        """Every kind of child the job may have, by name (those being deleted left out)."""
        selector = f"{JOB_LABEL}={job}"
        rbac = client.RbacAuthorizationV1Api(self.core.api_client)
        networking = client.NetworkingV1Api(self.core.api_client)

        def live(items: list[Any]) -> set[str]:
            return {i.metadata.name for i in items if i.metadata.deletion_timestamp is None}

        return {
            "pods": live(self.core.list_namespaced_pod(self.ns, label_selector=selector).items),
            "services": live(
                self.core.list_namespaced_service(self.ns, label_selector=selector).items
            ),
            "configmaps": live(
                self.core.list_namespaced_config_map(self.ns, label_selector=selector).items
            ),
            "serviceaccounts": live(
                self.core.list_namespaced_service_account(self.ns, label_selector=selector).items
            ),
            "roles": live(rbac.list_namespaced_role(self.ns, label_selector=selector).items),
            "rolebindings": live(
                rbac.list_namespaced_role_binding(self.ns, label_selector=selector).items
            ),
            "secrets": live(
                self.core.list_namespaced_secret(self.ns, label_selector=selector).items
            ),
            "networkpolicies": live(
                networking.list_namespaced_network_policy(self.ns, label_selector=selector).items
            ),
        }

    def version_book(self, model: str) -> dict[str, str]:
        data: dict[str, str] = self.core.read_namespaced_config_map(
            f"modelops-versions-{model}", self.ns
        ).data
        return data


def condition(status: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), None)
