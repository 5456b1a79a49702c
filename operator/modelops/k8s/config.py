"""Operator settings, read once at start-up from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from modelops.api.base import DEFAULT_STORE_URI
from modelops.api.tenancy import StoreLayout, TenancyPolicy


def _env_list(name: str) -> tuple[str, ...]:
    raw = os.environ.get(name, "")
    return tuple(part.strip() for part in raw.split(",") if part.strip())


DATA_ACCESS = ("operator", "job")


def _data_access(value: str) -> str:
    if value not in DATA_ACCESS:
        raise ValueError(f"MODELOPS_DATA_ACCESS={value!r}: expected one of {', '.join(DATA_ACCESS)}")
    return value


def _store_layout(value: str) -> StoreLayout:
    try:
        return StoreLayout(value)
    except ValueError:
        expected = ", ".join(layout.value for layout in StoreLayout)
        raise ValueError(f"MODELOPS_STORE_LAYOUT={value!r}: expected one of {expected}") from None


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")


# RFC 2104: a key shorter than the hash's output (32 bytes for SHA-256) weakens the HMAC.
MIN_ADMIN_KEY_BYTES = 32


def _admin_key() -> bytes | None:
    """The key of the inference servers' admin tokens: a file (the chart mounts a Secret)
    or the value itself; None when neither is set. Errors never include the key."""
    path = os.environ.get("MODELOPS_ADMIN_KEY_FILE")
    if path:
        source = f"MODELOPS_ADMIN_KEY_FILE={path}"
        try:
            raw = Path(path).read_bytes()
        except OSError as error:
            raise ValueError(f"{source}: cannot read it: {error.strerror}") from None
    else:
        source = "MODELOPS_ADMIN_KEY"
        raw = os.environ.get(source, "").encode()
        if not raw:
            return None
    key = raw.strip()  # a file written by hand usually ends with a newline
    if len(key) < MIN_ADMIN_KEY_BYTES:
        raise ValueError(
            f"{source}: the admin key has {len(key)} bytes, at least {MIN_ADMIN_KEY_BYTES} needed"
        )
    return key


@dataclass(frozen=True)
class OperatorConfig:
    """What the operator needs to know about its environment."""

    namespaces: tuple[str, ...] = ()  # empty: the whole cluster
    workload_image: str = "ghcr.io/modelops/modelops-runtime:0.1.0"
    store_uri: str = DEFAULT_STORE_URI
    store_volume_claim: str | None = None
    # Where each namespace's versions go under a store root (modelops.api.tenancy).
    store_layout: StoreLayout = StoreLayout.NAMESPACED
    # Requests of each training job's Ray head pod (the driver and Ray's own services).
    ray_head_cpu: str = "1"
    ray_head_memory: str = "2Gi"
    # Where IncrementalUpdates list their data: "operator" (this process) or "job" (a scan
    # pod in the update's namespace, with the tenant's store access).
    data_access: str = "operator"
    # Honour `modelops.dev/metrics-endpoints` on ModelDeployments. Off unless the operator
    # is started so (the test control plane, whose KWOK pods run no server): from a
    # tenant's object it would point the operator's scrapes and admin calls anywhere.
    endpoint_overrides: bool = False
    metrics_port: int = 8080
    health_port: int = 8081
    webhook_port: int = 9443
    webhook_host: str | None = None
    webhook_cert_dir: str | None = None
    peering_name: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    # The tenancy model's allow-lists (see modelops.api.tenancy): empty means the defaults.
    allowed_images: tuple[str, ...] = ()
    allowed_priority_classes: tuple[str, ...] = ()
    allowed_toleration_keys: tuple[str, ...] = ()
    allowed_prometheus_urls: tuple[str, ...] = ()
    allowed_store_uris: tuple[str, ...] = ()
    # What each ModelDeployment's admin token is derived from; None: a random key at start.
    admin_key: bytes | None = field(default=None, repr=False)

    def policy(self) -> TenancyPolicy:
        return TenancyPolicy(
            operator_images=(self.workload_image,),
            images=self.allowed_images,
            priority_classes=self.allowed_priority_classes,
            toleration_keys=self.allowed_toleration_keys,
            prometheus_urls=self.allowed_prometheus_urls,
            operator_store=self.store_uri,
            store_uris=self.allowed_store_uris,
        )

    @classmethod
    def from_env(cls) -> OperatorConfig:
        env = os.environ.get
        return cls(
            namespaces=_env_list("MODELOPS_NAMESPACES"),
            workload_image=env("MODELOPS_WORKLOAD_IMAGE", cls.workload_image),
            store_uri=env("MODELOPS_STORE_URI", cls.store_uri),
            store_volume_claim=env("MODELOPS_STORE_PVC") or None,
            store_layout=_store_layout(env("MODELOPS_STORE_LAYOUT") or cls.store_layout),
            ray_head_cpu=env("MODELOPS_RAY_HEAD_CPU") or cls.ray_head_cpu,
            ray_head_memory=env("MODELOPS_RAY_HEAD_MEMORY") or cls.ray_head_memory,
            data_access=_data_access(env("MODELOPS_DATA_ACCESS") or cls.data_access),
            endpoint_overrides=_flag(env("MODELOPS_ENDPOINT_OVERRIDES")),
            metrics_port=int(env("MODELOPS_METRICS_PORT", str(cls.metrics_port))),
            health_port=int(env("MODELOPS_HEALTH_PORT", str(cls.health_port))),
            webhook_port=int(env("MODELOPS_WEBHOOK_PORT", str(cls.webhook_port))),
            webhook_host=env("MODELOPS_WEBHOOK_HOST") or None,
            webhook_cert_dir=env("MODELOPS_WEBHOOK_CERT_DIR") or None,
            peering_name=env("MODELOPS_PEERING") or None,
            allowed_images=_env_list("MODELOPS_ALLOWED_IMAGES"),
            allowed_priority_classes=_env_list("MODELOPS_ALLOWED_PRIORITY_CLASSES"),
            allowed_toleration_keys=_env_list("MODELOPS_ALLOWED_TOLERATION_KEYS"),
            allowed_prometheus_urls=_env_list("MODELOPS_ALLOWED_PROMETHEUS_URLS"),
            allowed_store_uris=_env_list("MODELOPS_ALLOWED_STORE_URIS"),
            admin_key=_admin_key(),
        )
