"""The first touch of an s3:// bucket in a process: one HEAD of the bucket, so that the
usual misconfigurations fail at once with an error naming the URI and what to fix,
instead of as a bare 403/404 deep inside a read.

Messages name the URI, the bucket and the endpoint, never a credential: the secret is
only ever held by botocore (see `modelops_runtime.storage`).
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from modelops_runtime import storage
from modelops_runtime.errors import InputError

_checked: set[tuple[Any, str]] = set()
_lock = threading.Lock()


class StorageError(OSError):
    """An object store refused or could not be reached for a URI."""

    def __init__(self, uri: str, message: str) -> None:
        super().__init__(message)
        self.uri = uri

    def __str__(self) -> str:
        return str(self.args[0])


class BucketNotFound(StorageError, InputError, FileNotFoundError):
    """The URI's bucket does not exist at that endpoint: every retry would fail alike."""


class AccessDenied(StorageError, InputError, PermissionError):
    """The credentials were refused (unknown key, wrong secret, or no permission)."""


class EndpointUnreachable(StorageError, ConnectionError):
    """No S3 server answered at the endpoint (after the configured retries)."""


def _where() -> str:
    url = storage.endpoint()
    if not url:
        return "AWS S3 (no endpoint set)"
    # An endpoint URL may carry user:password; it is cut off before it is shown.
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))


def check(fs: Any, uri: str) -> None:
    """HEAD the URI's bucket once per filesystem instance; raise a StorageError on failure."""
    if storage.protocol(uri) not in ("s3", "s3a"):
        return
    bucket = uri.split("://", 1)[1].split("/", 1)[0]
    key = (getattr(fs, "_fs_token", id(fs)), bucket)
    with _lock:
        if key in _checked:
            return
    _head_bucket(fs, uri, bucket)
    with _lock:
        _checked.add(key)


def _head_bucket(fs: Any, uri: str, bucket: str) -> None:
    from botocore.exceptions import ClientError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    where = _where()
    try:
        fs.call_s3("head_bucket", Bucket=bucket)
    except BotoConnectionError as error:
        raise EndpointUnreachable(
            uri, f"{uri}: no S3 server answered at {where} ({type(error).__name__}); "
            f"check {' / '.join(storage.ENDPOINT_VARIABLES)}"
        ) from None
    except OSError as error:
        cause = error.__cause__
        status = cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode") if isinstance(cause, ClientError) else None
        if status == 404 or isinstance(error, FileNotFoundError):
            raise BucketNotFound(uri, f"{uri}: bucket {bucket!r} does not exist at {where}") from None
        if status == 403 or isinstance(error, PermissionError):
            raise AccessDenied(
                uri, f"{uri}: access to bucket {bucket!r} at {where} was denied; check the credentials "
                "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_SHARED_CREDENTIALS_FILE) and their permissions"
            ) from None
        raise
