"""Each ModelDeployment's admin token, derived from one key the operator holds.

The inference servers' admin endpoints (routing, hot swap) accept only the token of
their own ModelDeployment. A tenant who reads the Secrets of its namespace learns the
tokens of its own deployments and nothing that opens another tenant's servers.

The token is an HMAC of the object's identity, so the operator recomputes it on every
pass instead of storing it or reading its Secret back, and a ModelDeployment deleted
and created again under the same name (a new uid) gets a new one. The servers read it
from a file (MODELOPS_ADMIN_TOKEN_FILE) that the runtime re-reads on every admin call,
so a token the kubelet refreshes in the mounted Secret applies without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

KEY_BYTES = 32
SECRET_KEY = "token"
MOUNT_DIR = "/etc/modelops/admin"
FILE_ENV = "MODELOPS_ADMIN_TOKEN_FILE"
# Read-only for the owner and the group: the pods' fsGroup (10001, the runtime's user).
FILE_MODE = 0o440
VOLUME = "admin-token"


def admin_token(key: bytes, namespace: str, name: str, uid: str) -> str:
    """Hex HMAC-SHA256 of `<namespace>/<name>/<uid>` (none of them may contain `/`)."""
    return hmac.new(key, f"{namespace}/{name}/{uid}".encode(), hashlib.sha256).hexdigest()


def random_key() -> bytes:
    """A key for an operator started without one: its tokens last as long as the process."""
    return secrets.token_bytes(KEY_BYTES)


def token_volume(secret_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Secret's volume and its read-only mount. Not optional: a server never starts
    without its token, which would leave its admin endpoints open."""
    volume = {"name": VOLUME, "secret": {"secretName": secret_name, "defaultMode": FILE_MODE}}
    return volume, {"name": VOLUME, "mountPath": MOUNT_DIR, "readOnly": True}


def token_file_env() -> dict[str, str]:
    return {"name": FILE_ENV, "value": f"{MOUNT_DIR}/{SECRET_KEY}"}
