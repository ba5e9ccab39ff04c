"""A loopback HTTP proxy in front of a target (localstripe) that can misbehave on request.

    async with FaultProxy(localstripe.url) as proxy:
        gateway = StripeGateway(key, proxy.url, timeout_seconds=0.5)
        proxy.delay_after_forward(3, matching=r"^/v1/refunds$")

Faults apply to requests whose path matches the regex; the rest pass through. It runs in the
test's own event loop, and counts requests per path in `requests`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import aiohttp
from aiohttp import web

# Not forwarded either way: they describe one hop, or a body aiohttp has already decoded.
HOP_HEADERS = frozenset(
    {"host", "connection", "keep-alive", "transfer-encoding", "content-length",
     "content-encoding", "upgrade", "proxy-connection"}
)  # fmt: skip


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)


class FaultProxy:
    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.url = ""
        self.requests: Counter[str] = Counter()
        self.seen: list[Seen] = []
        self._fault: tuple[str, re.Pattern[str], float] | None = None
        self._closing = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    # -- modes ------------------------------------------------------------------------

    def pass_through(self) -> None:
        self._fault = None

    def delay_after_forward(self, seconds: float, matching: str = ".*") -> None:
        """Forward (the target does the work), then hold the answer for `seconds`."""
        self._fault = ("delay", re.compile(matching), seconds)

    def drop_before_forward(self, matching: str = ".*") -> None:
        """Close the connection without forwarding and without an answer."""
        self._fault = ("drop", re.compile(matching), 0)

    def fail_with(self, status: int = 500, matching: str = ".*") -> None:
        """Answer `status` with a Stripe-shaped error body, without forwarding."""
        self._fault = ("fail", re.compile(matching), status)

    # -- server -----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(auto_decompress=True)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        self._closing.set()  # releases held answers, so shutdown does not wait them out
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests[request.path] += 1
        self.seen.append(Seen(request.method, request.path, dict(request.headers)))
        # Patterns see "METHOD /path", so a test can hold a POST and let the GET that checks pass.
        line = f"{request.method} {request.path}"
        fault = self._fault if self._fault and self._fault[1].search(line) else None
        kind = fault[0] if fault else "pass"
        if kind == "drop":
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError  # nothing more to do for a connection we cut
        if fault and kind == "fail":
            body = {"error": {"type": "api_error", "message": "injected by FaultProxy"}}
            return web.json_response(body, status=int(fault[2]))
        response = await self._forward(request)
        if fault and kind == "delay":
            with contextlib.suppress(TimeoutError):  # the hold ran out: answer now
                await asyncio.wait_for(self._closing.wait(), timeout=fault[2])
        return response

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        async with self._session.request(
            request.method, self.target + request.path_qs, headers=headers,
            data=await request.read(), allow_redirects=False,
        ) as upstream:  # fmt: skip
            body = await upstream.read()
            kept: dict[str, Any] = {
                k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS
            }
            return web.Response(status=upstream.status, body=body, headers=kept)
