"""Feedback that reaches the replica that answered, whichever replica it lands on.

A server keeps what it answered (the feedback log) in memory; behind a Service the
feedback for an answer lands on any replica. So a server that knows its peers issues
feedback ids that name it (`<tag>.<token>`, the tag being its own address, encoded),
and a server that gets feedback for a peer's id forwards it there, once (a forwarded
request is marked and never forwarded again).

Who counts as a peer is decided here, never by the id: the address in a tag is used
only when it is one of the peers (a static list, or the addresses a DNS name resolves
to, as a headless Service's name does), so a forged id cannot make a server call out
anywhere else.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

FORWARDED = "x-modelops-forwarded"
# How long a DNS answer is trusted: a replica that just started is a peer within this.
DNS_TTL_SECONDS = 5.0
FORWARD_TIMEOUT = aiohttp.ClientTimeout(total=5.0)


def tag(address: str) -> str:
    return base64.urlsafe_b64encode(address.encode()).decode().rstrip("=")


def address_of(feedback_id: str) -> str | None:
    """The address a feedback id names, or None for an id with no tag."""
    head, dot, _ = feedback_id.partition(".")
    if not dot or not head or len(head) > 96:
        return None
    try:
        raw = base64.b64decode(head + "=" * (-len(head) % 4), altchars=b"-_", validate=True)
        address = raw.decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return address or None


def split_host_port(address: str) -> tuple[str, int] | None:
    host, colon, port = address.rpartition(":")
    if not colon or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


@dataclass
class Peers:
    """This server's own address and who its peers are.

    `static`: exact addresses (`host:port`). `dns`: a name whose addresses are the peers,
    on this server's own port unless `any_port` (replicas on one host, as local mode runs
    them, differ by port only).
    """

    own: str
    static: frozenset[str] = frozenset()
    dns: str | None = None
    any_port: bool = False
    _resolved: frozenset[str] = field(default=frozenset(), init=False)
    _resolved_at: float = field(default=float("-inf"), init=False)
    _lock: asyncio.Lock | None = field(default=None, init=False)

    def new_id(self, token: str) -> str:
        return f"{tag(self.own)}.{token}"

    async def _hosts(self) -> frozenset[str]:
        if self.dns is None:
            return frozenset()
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if time.monotonic() - self._resolved_at < DNS_TTL_SECONDS:
                return self._resolved
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(
                    self.dns, None, type=socket.SOCK_STREAM
                )
                self._resolved = frozenset(str(info[4][0]) for info in infos)
            except OSError:
                self._resolved = frozenset()  # no peers known now: feedback stays local
            self._resolved_at = time.monotonic()
            return self._resolved

    async def peer(self, address: str) -> bool:
        """Whether `address` (from an id) is a peer this server may forward to."""
        if address == self.own:
            return False
        if address in self.static:
            return True
        parsed, own = split_host_port(address), split_host_port(self.own)
        if parsed is None or own is None:
            return False
        host, port = parsed
        if not self.any_port and port != own[1]:
            return False
        return host in await self._hosts()


def url(address: str) -> str:
    host, port = split_host_port(address) or (address, 80)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def forward(
    session: aiohttp.ClientSession, address: str, model: str, items: Iterable[Any]
) -> dict[str, Any]:
    """Post feedback items to the peer that issued their ids; unreachable: all unknown."""
    batch = list(items)
    ids = [str(item.get("id")) for item in batch]
    try:
        async with session.post(
            f"{url(address)}/v2/models/{model}/feedback",
            data=json.dumps(batch),
            headers={"content-type": "application/json", FORWARDED: "1"},
            timeout=FORWARD_TIMEOUT,
        ) as response:
            raw = await response.content.read(1 << 20)
            answer = json.loads(raw) if response.status == 200 else None
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
        answer = None
    if not isinstance(answer, dict):
        return {"accepted": 0, "unknown": ids}
    unknown = [str(i) for i in answer.get("unknown") or [] if str(i) in ids]
    return {"accepted": int(answer.get("accepted") or 0), "unknown": unknown}
