"""Reading an HTTP answer whose size someone else controls, with a ceiling.

The operator reads servers' `/metrics`, their admin routing answers and Prometheus
query results. Those endpoints run in tenants' pods (or at tenants' URLs): an answer
read whole could make one tenant run the operator, and so every tenant, out of memory.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

# A server's /metrics is a few KiB; a routing answer less; a Prometheus instant vector of
# one model's series, a few hundred KiB at most.
METRICS_LIMIT = 1 << 20
ANSWER_LIMIT = 256 << 10
QUERY_LIMIT = 4 << 20


class TooLarge(ValueError):
    """The answer was larger than the ceiling; nothing of it was used."""


async def read_bytes(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, refused past `limit` bytes (read no further than limit + 1)."""
    declared = response.content_length
    if declared is not None and declared > limit:
        raise TooLarge(f"answer of {declared} bytes; at most {limit} are read")
    data = bytearray()
    while True:  # a read returns what has arrived, not what was asked for
        chunk = await response.content.read(min(1 << 16, limit + 1 - len(data)))
        if not chunk:
            return bytes(data)
        data += chunk
        if len(data) > limit:
            raise TooLarge(f"answer larger than {limit} bytes; at most {limit} are read")


async def read_text(response: aiohttp.ClientResponse, limit: int) -> str:
    return (await read_bytes(response, limit)).decode("utf-8", errors="replace")


async def read_json(response: aiohttp.ClientResponse, limit: int) -> Any:
    return json.loads(await read_bytes(response, limit))
