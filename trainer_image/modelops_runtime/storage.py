"""How an s3:// URI reaches its server: settings from the environment, and clear errors.

A pod gets these from the tenant's Secret (env or a mounted file); local mode from the
shell. Read at each use, so a process sees what its environment says now.

- Credentials: botocore's own chain (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a
  mounted file named by AWS_SHARED_CREDENTIALS_FILE). They never pass through this
  module, so none of its options, log lines or errors can hold a secret.
- Endpoint: MODELOPS_S3_ENDPOINT_URL, else AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL
  (unset: AWS itself).
- Region: AWS_REGION, else AWS_DEFAULT_REGION.
- Addressing: MODELOPS_S3_ADDRESSING_STYLE (path, virtual or auto); path by default
  when an endpoint is set, since S3-compatible servers rarely have per-bucket DNS names.
- Retries: MODELOPS_S3_MAX_ATTEMPTS (default 10) attempts of each request, with
  botocore's exponential back-off and jitter, for connection errors, 5xx and throttling
  (503 SlowDown): a server restarting mid-run is waited for, not failed on.
  MODELOPS_S3_RETRY_MODE picks botocore's mode: `standard` (default) or `adaptive`
  (also slows this client's request rate while the server throttles).

Only stdlib here: the head pod's driver uses it without the runtime's heavy imports.
"""

from __future__ import annotations

import os
from typing import Any

ENDPOINT_VARIABLES = ("MODELOPS_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
REGION_VARIABLES = ("AWS_REGION", "AWS_DEFAULT_REGION")
DEFAULT_MAX_ATTEMPTS = 10
RETRY_MODES = ("standard", "adaptive")


def _first(names: tuple[str, ...]) -> str | None:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def protocol(uri: str) -> str:
    return uri.split("://", 1)[0].lower() if "://" in uri else "file"


def endpoint() -> str | None:
    return _first(ENDPOINT_VARIABLES)


def options(uri: str) -> dict[str, Any]:
    """fsspec storage options for a URI: none but for s3://."""
    if protocol(uri) not in ("s3", "s3a"):
        return {}
    url = endpoint()
    style = os.environ.get("MODELOPS_S3_ADDRESSING_STYLE", "").strip() or (
        "path" if url else "auto"
    )
    if style not in ("path", "virtual", "auto"):
        raise ValueError(
            f"MODELOPS_S3_ADDRESSING_STYLE must be path, virtual or auto, not {style!r}"
        )
    attempts_text = os.environ.get("MODELOPS_S3_MAX_ATTEMPTS", "").strip()
    if attempts_text and not (attempts_text.isdigit() and int(attempts_text) >= 1):
        raise ValueError(
            f"MODELOPS_S3_MAX_ATTEMPTS must be a whole number >= 1, not {attempts_text!r}"
        )
    attempts = int(attempts_text or DEFAULT_MAX_ATTEMPTS)
    mode = os.environ.get("MODELOPS_S3_RETRY_MODE", "").strip() or "standard"
    if mode not in RETRY_MODES:
        raise ValueError(f"MODELOPS_S3_RETRY_MODE must be standard or adaptive, not {mode!r}")
    client: dict[str, Any] = {}
    if url:
        client["endpoint_url"] = url
    region = _first(REGION_VARIABLES)
    if region:
        client["region_name"] = region
    return {
        "client_kwargs": client,
        "config_kwargs": {
            "s3": {"addressing_style": style},
            "retries": {"max_attempts": attempts, "mode": mode},
        },
        # Other writers add shards and versions: a cached listing would hide them.
        "use_listings_cache": False,
    }
