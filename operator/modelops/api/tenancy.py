"""What a tenant may name in a spec: images, priority classes, tolerations, Prometheus URLs,
store roots; and where in a store a namespace's versions live.

A tenant is whoever may create ModelOps resources in a namespace. The pods the operator
starts for them carry the store credentials (and, for servers, their own token), so the
scheduling fields and the image are part of the tenancy model, not free choices. The
platform team sets the allow-lists in the operator's configuration; the admission
webhook and the reconcilers both ask `TenancyPolicy.problems`, so an object that slipped
past admission (webhook off, or created before the policy) still never gets its pods.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from modelops.api.base import SchedulingSpec, TolerationOperator
from modelops.api.network import SOURCES_FOLDER
from modelops.api.validation import Problem

# Kubernetes reserves this prefix for the classes that keep nodes and the control plane up.
SYSTEM_PRIORITY_PREFIX = "system-"
# Entries ending in one of these are prefixes (a registry path, a repository's tags).
_PREFIX_ENDS = ("/", ":", "@")


class StoreLayout(StrEnum):
    """Where a namespace's models go under a store root.

    namespaced: `<store>/<namespace>/<model>/v<N>`, so the same model name in two
        namespaces never shares a folder (version books are per namespace too);
    shared: `<store>/<model>/v<N>`, the layout before namespaces (one tenant, or stores
        written by an earlier release until they are moved).
    """

    NAMESPACED = "namespaced"
    SHARED = "shared"


def store_root(uri: str, namespace: str, layout: StoreLayout) -> str:
    """The root a namespace's objects use under the store a spec names."""
    if layout == StoreLayout.SHARED:
        return uri
    return f"{uri.rstrip('/')}/{namespace}"


def _matches(value: str, allowed: tuple[str, ...]) -> bool:
    return any(
        value == entry or (entry.endswith(_PREFIX_ENDS) and value.startswith(entry))
        for entry in allowed
    )


@dataclass(frozen=True)
class TenancyPolicy:
    """The operator's allow-lists; the defaults admit only what the operator configured.

    images: exact references, or prefixes ending in "/", ":" or "@" (empty: the
        operator's own images only, given as `operator_images`);
    priority_classes: the classes a tenant may name (empty: any but `system-*`);
    toleration_keys: the taint keys a tenant may tolerate (empty: any key); a toleration
        without a key and with `operator: Exists` (it tolerates every taint) never passes;
    prometheus_urls: URL prefixes `prometheusUrl` may start with (empty: none);
    operator_store: the operator's own store root, always allowed;
    store_uris: the other store roots a spec may name (empty: any root that is not
        inside the operator's, where it would reach into another namespace's folder).
    """

    operator_images: tuple[str, ...] = ()
    images: tuple[str, ...] = ()
    priority_classes: tuple[str, ...] = ()
    toleration_keys: tuple[str, ...] = ()
    prometheus_urls: tuple[str, ...] = ()
    operator_store: str = ""
    store_uris: tuple[str, ...] = ()

    def image_problems(self, path: str, image: str | None) -> list[Problem]:
        if image is None or image in self.operator_images:
            return []
        if _matches(image, self.images):
            return []
        allowed = ", ".join(self.images + self.operator_images) or "the operator's image"
        return [Problem(path, f"image {image!r} is not allowed here; allowed: {allowed}")]

    def scheduling_problems(self, path: str, spec: SchedulingSpec) -> list[Problem]:
        problems = self.image_problems(f"{path}.image", spec.image)
        name = spec.priority_class_name
        if name is not None:
            if self.priority_classes and name not in self.priority_classes:
                allowed = ", ".join(self.priority_classes)
                problems.append(
                    Problem(
                        f"{path}.priorityClassName",
                        f"priority class {name!r} is not allowed; allowed: {allowed}",
                    )
                )
            elif not self.priority_classes and name.startswith(SYSTEM_PRIORITY_PREFIX):
                problems.append(
                    Problem(
                        f"{path}.priorityClassName",
                        f"priority class {name!r} is reserved for cluster components",
                    )
                )
        for index, toleration in enumerate(spec.tolerations):
            where = f"{path}.tolerations[{index}]"
            if not toleration.key:
                if toleration.operator == TolerationOperator.EXISTS:
                    problems.append(
                        Problem(where, "a toleration without a key tolerates every taint")
                    )
                continue
            if self.toleration_keys and toleration.key not in self.toleration_keys:
                allowed = ", ".join(self.toleration_keys)
                problems.append(
                    Problem(
                        f"{where}.key",
                        f"taint key {toleration.key!r} is not allowed; allowed: {allowed}",
                    )
                )
        return problems

    def prometheus_problems(self, path: str, url: str | None) -> list[Problem]:
        if url is None:
            return []
        parts = urlsplit(url)
        if parts.username or parts.password or parts.scheme not in ("http", "https"):
            return [Problem(path, "must be an http(s) URL without credentials")]
        if _matches(url, tuple(u if u.endswith("/") else f"{u}/" for u in self.prometheus_urls)):
            return []
        if url.rstrip("/") in {u.rstrip("/") for u in self.prometheus_urls}:
            return []
        allowed = ", ".join(self.prometheus_urls) or "none (the pods are scraped instead)"
        return [Problem(path, f"Prometheus {url!r} is not allowed; allowed: {allowed}")]

    def store_problems(self, path: str, uri: str) -> list[Problem]:
        root = uri.rstrip("/")
        own = self.operator_store.rstrip("/")
        allowed = {u.rstrip("/") for u in self.store_uris} | ({own} if own else set())
        if root in allowed:
            return []
        if self.store_uris:
            listed = ", ".join(sorted(allowed))
            return [Problem(path, f"store {uri!r} is not allowed; allowed: {listed}")]
        if own and root.startswith(f"{own}/"):
            return [
                Problem(
                    path,
                    f"store {uri!r} is inside the operator's store {own!r}, where each "
                    f"namespace has its own folder: name {own!r} itself",
                )
            ]
        return []

    def serving_pod_problems(self, spec: Any) -> list[Problem]:
        """What keeps a ModelDeployment from getting pods (its Prometheus URL is checked
        where it would be called)."""
        problems = self.scheduling_problems("spec.resources", spec.resources)
        return problems + self.store_problems("spec.model.storeUri", spec.model.store_uri)

    def problems(self, kind: str, spec: Any) -> list[Problem]:
        """Everything in a valid spec the policy refuses, by field path."""
        from modelops.api.deployment import ModelDeploymentSpec
        from modelops.api.training import TrainingJobSpec

        if isinstance(spec, TrainingJobSpec):
            problems = self.scheduling_problems("spec.resources", spec.resources)
            problems += self.store_problems("spec.output.storeUri", spec.output.store_uri)
            if spec.model.source:
                # A custom network's code comes from a store this namespace may use, too.
                root = spec.model.source.split(f"/{SOURCES_FOLDER}/")[0]
                problems += self.store_problems("spec.model.source", root)
            return problems
        if isinstance(spec, ModelDeploymentSpec):
            return self.serving_pod_problems(spec) + self.prometheus_problems(
                "spec.autoscaling.metricsSource.prometheusUrl",
                spec.autoscaling.metrics_source.prometheus_url,
            )
        return []
