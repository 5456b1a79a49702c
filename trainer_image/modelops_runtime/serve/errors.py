"""Serving errors and the one table that maps them to HTTP statuses.

Every failure a handler can raise is a ServeError subclass carrying its status, so
the REST adapter never guesses: client mistakes are 4xx with a message naming what
is wrong, overload is 429/503 with Retry-After, and only our own bugs are 500.
"""

from __future__ import annotations


class ServeError(Exception):
    """Base of all errors answered to a client; `status` is the HTTP status."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def headers(self) -> list[tuple[str, str]]:
        return []


class InvalidInput(ServeError):
    """The request body is not a valid inference (or admin/feedback) request."""

    status = 400


class Unauthorized(ServeError):
    """An admin call without the right bearer token."""

    status = 401

    def headers(self) -> list[tuple[str, str]]:
        return [("www-authenticate", 'Bearer realm="modelops-admin"')]


class NotFound(ServeError):
    """Unknown path, model, version or request id."""

    status = 404


class ModelNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"model '{name}' is not served here")


class VersionNotFound(NotFound):
    def __init__(self, name: str, version: str) -> None:
        super().__init__(f"version '{version}' of model '{name}' is not loaded")


class MethodNotAllowed(ServeError):
    status = 405

    def __init__(self, method: str, allowed: str) -> None:
        super().__init__(f"method {method} not allowed here; use {allowed}")
        self.allowed = allowed

    def headers(self) -> list[tuple[str, str]]:
        return [("allow", self.allowed)]


class Conflict(ServeError):
    """An admin change that contradicts the current state (e.g. a load in progress)."""

    status = 409


class VersionUnloadable(Conflict):
    """A stored version whose model file cannot be loaded; what is served stays as it is."""


class PayloadTooLarge(ServeError):
    status = 413

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds the limit of {limit} bytes")


class TooManyRows(ServeError):
    """One request with more rows than a batch holds: it would run as one oversize batch."""

    status = 413

    def __init__(self, rows: int, limit: int) -> None:
        super().__init__(f"the request has {rows} rows; at most {limit} (maxBatchSize) per request")


class HeadersTooLarge(ServeError):
    status = 431

    def __init__(self, limit: int) -> None:
        super().__init__(f"request headers exceed the limit of {limit} bytes")


class QueueFull(ServeError):
    """The batching queue is at its bound: the client should back off and retry."""

    status = 429

    def __init__(self, version: str, limit: int, retry_after_s: int = 1) -> None:
        super().__init__(f"queue of version '{version}' is full ({limit} requests); retry later")
        self.retry_after_s = retry_after_s

    def headers(self) -> list[tuple[str, str]]:
        return [("retry-after", str(self.retry_after_s))]


class NotReady(ServeError):
    status = 503

    def headers(self) -> list[tuple[str, str]]:
        return [("retry-after", "1")]


class RequestTimeout(ServeError):
    """The request's deadline passed before its batch was computed."""

    status = 504

    def __init__(self, timeout_ms: float) -> None:
        super().__init__(f"no result within the request timeout of {timeout_ms:g} ms")


class HeaderTimeout(ServeError):
    """The request's headers did not arrive in time (a client sending them byte by byte)."""

    status = 408

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"request headers not complete within {timeout_s:g} s")


class ForwardFailed(ServeError):
    """The model raised during a forward pass: a server-side fault."""

    status = 500


REASONS: dict[int, str] = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Payload Too Large",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

# The same table for gRPC: each HTTP status's google.rpc code (by name, so this module
# needs no grpc import). Client mistakes stay INVALID_ARGUMENT, bounds RESOURCE_EXHAUSTED.
GRPC_CODES: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    408: "DEADLINE_EXCEEDED",
    409: "FAILED_PRECONDITION",
    413: "RESOURCE_EXHAUSTED",
    429: "RESOURCE_EXHAUSTED",
    431: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
