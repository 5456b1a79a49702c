"""A real HTTP proxy in front of the test's S3 server, for what the server cannot be made to do
on demand or count by itself: answer throttling (503 SlowDown, with S3's own XML body) and
count the object bytes each key sent back.

Requests are forwarded unchanged (the Host header included, so SigV4 signatures still
verify at the server); the proxy holds no credentials and reads none.
"""

from __future__ import annotations

import http.client
import threading
import uuid
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

# Not forwarded: the proxy's own connection's business (Expect: 100-continue it answered).
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "proxy-connection",
    "te",
    "upgrade",
    "expect",
}


def slow_down_body(resource: str) -> bytes:
    """The error document S3 sends with a 503 when a client must reduce its request rate."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
        "<Message>Please reduce your request rate.</Message>"
        f"<Resource>{resource}</Resource><RequestId>{uuid.uuid4().hex}</RequestId></Error>"
    ).encode()


@dataclass(frozen=True)
class Seen:
    method: str
    path: str  # without the query
    query: str
    status: int


class S3Proxy:
    """Forwards to `upstream`; the next `throttle_next(n)` requests get 503 SlowDown instead."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._lock = threading.Lock()
        self._throttle = 0
        self.seen: list[Seen] = []
        self.object_bytes: Counter[str] = Counter()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self) -> None:
                body = self._body()
                path, _, query = self.path.partition("?")
                if proxy._take_throttle():
                    reply = slow_down_body(unquote(path))
                    proxy._record(Seen(self.command, unquote(path), query, 503))
                    self.send_response_only(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(reply)
                    return
                upstream = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    upstream.putrequest(
                        self.command, self.path, skip_host=True, skip_accept_encoding=True
                    )
                    for name, value in self.headers.items():
                        if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                            upstream.putheader(name, value)
                    if body or self.command in ("PUT", "POST"):
                        upstream.putheader("Content-Length", str(len(body)))
                    upstream.endheaders(body or None)
                    response = upstream.getresponse()
                    data = response.read()
                    headers = response.getheaders()
                    status = response.status
                finally:
                    upstream.close()
                proxy._record(Seen(self.command, unquote(path), query, status))
                if self.command == "GET" and not query and status in (200, 206):
                    proxy._count(unquote(path), len(data))
                self.send_response_only(status)
                for name, value in headers:
                    if name.lower() in HOP_BY_HOP:
                        continue
                    if name.lower() == "content-length" and self.command != "HEAD":
                        continue
                    self.send_header(name, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> S3Proxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def throttle_next(self, count: int) -> None:
        with self._lock:
            self._throttle = count

    def reset(self) -> None:
        with self._lock:
            self.seen.clear()
            self.object_bytes.clear()

    def _take_throttle(self) -> bool:
        with self._lock:
            if self._throttle <= 0:
                return False
            self._throttle -= 1
            return True

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)

    def _count(self, path: str, size: int) -> None:
        with self._lock:
            self.object_bytes[path] += size

    def bytes_under(self, prefix: str) -> dict[str, int]:
        """Object bytes sent back per key under `/<bucket>/<prefix>/` (path-style), by name."""
        start = prefix.rstrip("/") + "/"
        with self._lock:
            return {p[len(start) :]: n for p, n in self.object_bytes.items() if p.startswith(start)}
