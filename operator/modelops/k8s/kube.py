"""A small synchronous Kubernetes REST client that speaks plain dicts.

It borrows authentication and TLS from the official client's configuration (kubeconfig
or in-cluster) but skips its model classes: the builders already produce dicts, and
deserialising every response into typed models costs the operator CPU for nothing.
Created once at operator start-up and handed to whoever needs the API; never at import.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from kubernetes import client, config

Body = dict[str, Any]
# Told of every request: (verb, resource such as "pods" or "trainingjobs/status", seconds, status).
Observer = Callable[[str, str, float, int], None]

MERGE_PATCH = "application/merge-patch+json"
JSON = "application/json"

# Where each kind of child lives: (API prefix, plural).
_KINDS: dict[str, tuple[str, str]] = {
    "Pod": ("/api/v1", "pods"),
    "Service": ("/api/v1", "services"),
    "ServiceAccount": ("/api/v1", "serviceaccounts"),
    "ConfigMap": ("/api/v1", "configmaps"),
    "Secret": ("/api/v1", "secrets"),
    "Event": ("/api/v1", "events"),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    "Deployment": ("/apis/apps/v1", "deployments"),
    "Job": ("/apis/batch/v1", "jobs"),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets"),
    "TrainingJob": ("/apis/modelops.dev/v1alpha1", "trainingjobs"),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies"),
}


class ApiError(Exception):
    """A non-2xx answer from the API server."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        """409: the object exists (create) or changed under us (update)."""
        return self.status == 409


def load_configuration(kubeconfig: str | None) -> client.Configuration:
    """The given kubeconfig file; without one, in-cluster, then the default kubeconfig.

    An explicit file wins over the pod's service account, as it does for kubectl. The
    default is KUBECONFIG as it was when `kubernetes` was first imported (the client
    reads it then), so a file chosen at run time must be passed here, not via the env.
    """
    configuration = client.Configuration()
    if kubeconfig is None:
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            return configuration
        except config.ConfigException:
            pass
    config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=kubeconfig, client_configuration=configuration
    )
    return configuration


def namespaced_path(kind: str, namespace: str, name: str | None = None) -> str:
    prefix, plural = _KINDS[kind]
    path = f"{prefix}/namespaces/{quote(namespace)}/{plural}"
    return f"{path}/{quote(name)}" if name else path


def custom_path(
    group: str, version: str, plural: str, namespace: str, name: str | None = None
) -> str:
    path = f"/apis/{group}/{version}/namespaces/{quote(namespace)}/{plural}"
    return f"{path}/{quote(name)}" if name else path


def resource_of(path: str) -> str:
    """The resource (and subresource) a path addresses: `pods`, `trainingjobs/status`."""
    parts = path.strip("/").split("/")
    if "namespaces" in parts:
        parts = parts[parts.index("namespaces") + 2 :]
    else:
        parts = parts[2:] if parts[0] == "api" else parts[3:]
    if len(parts) >= 3:
        return f"{parts[0]}/{parts[2]}"
    return parts[0] if parts else ""


def manifest_path(manifest: Body, with_name: bool = False) -> str:
    meta = manifest["metadata"]
    return namespaced_path(manifest["kind"], meta["namespace"], meta["name"] if with_name else None)


@dataclass
class Kube:
    """Plain-dict access to the API; thread-safe (urllib3 pools are)."""

    api: client.ApiClient
    field_manager: str = "modelops-operator"
    timeout: float = 30.0
    observe: Observer | None = None

    @classmethod
    def connect(cls, kubeconfig: str | None = None, pool_size: int = 32) -> Kube:
        """See `load_configuration`; ConfigException when there is nothing to load."""
        return cls.from_configuration(load_configuration(kubeconfig), pool_size)

    @classmethod
    def from_configuration(cls, configuration: client.Configuration, pool_size: int = 32) -> Kube:
        # Reconciles run on several threads; a pool smaller than that serialises them.
        configuration.connection_pool_maxsize = pool_size
        return cls(client.ApiClient(configuration))

    def close(self) -> None:
        self.api.close()  # type: ignore[no-untyped-call]

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Iterable[tuple[str, str]] = (),
        content_type: str = JSON,
    ) -> Body:
        headers = {"Accept": JSON, "Content-Type": content_type}
        params = list(query)
        if method in ("POST", "PUT", "PATCH"):
            params.append(("fieldManager", self.field_manager))
        serialized = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=params,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        started = time.perf_counter()
        response = self.api.call_api(*serialized, _request_timeout=self.timeout)
        data = response.read() or b""  # type: ignore[no-untyped-call]
        if self.observe is not None:
            self.observe(method, resource_of(path), time.perf_counter() - started, response.status)
        if not 200 <= response.status < 300:
            raise _error(response.status, data)
        if not data:
            return {}
        decoded: Body = json.loads(data)
        return decoded

    def get(self, path: str) -> Body:
        return self.request("GET", path)

    def list(self, path: str, label_selector: str | None = None) -> list[Body]:
        query = [("labelSelector", label_selector)] if label_selector else []
        items: list[Body] = self.request("GET", path, query=query).get("items", [])
        return items

    def create(self, manifest: Body) -> Body:
        return self.request("POST", manifest_path(manifest), manifest)

    def create_if_absent(self, manifest: Body) -> bool:
        """Create; False when it already exists (the deterministic name says it is ours)."""
        try:
            self.create(manifest)
        except ApiError as error:
            if error.conflict:
                return False
            raise
        return True

    def replace(self, path: str, body: Body) -> Body:
        return self.request("PUT", path, body)

    def merge_patch(self, path: str, body: Body) -> Body:
        return self.request("PATCH", path, body, content_type=MERGE_PATCH)

    def delete(self, path: str, propagation: str = "Background") -> bool:
        """Delete; False when it was already gone."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": propagation}
        try:
            self.request("DELETE", path, body)
        except ApiError as error:
            if error.not_found:
                return False
            raise
        return True

    def delete_collection(self, path: str, label_selector: str) -> None:
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        self.request("DELETE", path, body, query=[("labelSelector", label_selector)])


def _error(status: int, data: bytes) -> ApiError:
    try:
        payload = json.loads(data)
    except ValueError:
        return ApiError(status, "", data.decode(errors="replace")[:500])
    if not isinstance(payload, dict):
        return ApiError(status, "", str(payload)[:500])
    return ApiError(status, str(payload.get("reason", "")), str(payload.get("message", "")))
