"""The admin token: what calls that change what is served must present, on both transports.

The token comes from env MODELOPS_ADMIN_TOKEN, or a file named by
MODELOPS_ADMIN_TOKEN_FILE, re-read on every call so a rotated Secret applies
without a restart. Without either, admin calls are open (the port must then stay
inside the cluster network). REST sends it as the `Authorization` header, gRPC as
the `authorization` call metadata; both are `Bearer <token>`.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable

from modelops_runtime.serve.errors import Unauthorized

TOKEN_ENV = "MODELOPS_ADMIN_TOKEN"
TOKEN_FILE_ENV = "MODELOPS_ADMIN_TOKEN_FILE"

TokenSource = Callable[[], str | None]


def admin_token() -> str | None:
    """The configured admin token, or None when admin calls are open."""
    path = os.environ.get(TOKEN_FILE_ENV)
    if path:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip() or None
    return os.environ.get(TOKEN_ENV) or None


def authorize(authorization: str, token: str | None) -> None:
    """Raise Unauthorized unless `authorization` is `Bearer <token>` (constant-time compare)."""
    if token is None:
        return
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        raise Unauthorized("admin calls need 'Authorization: Bearer <token>'")
