"""Stopping with notice: long-lived sockets close themselves, with a code that says why, when
the server begins to stop.

uvicorn's own shutdown closes every open websocket with 1012 and no reason, at once, and the
application only hears a disconnect, as if the client had left. So `gpucloud serve` first asks
the sockets to end (`GracefulServer`, gpucloud/serving.py): each one held here is told, closes
with its documented code (terminals 1001 SERVER_SHUTDOWN, subscriptions 1001 "Server shutting
down"), does what it does at its end (the terminal's audit row), and leaves. The server waits
until all have left or the grace period is over; uvicorn then closes what is left the hard way.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from starlette.websockets import WebSocket

Close = Callable[[], Awaitable[None]]


class Draining:
    """The open long-lived sockets of this process, and whether it has begun to stop. Made in
    the lifespan, so its events belong to the serving loop."""

    def __init__(self) -> None:
        self.begun = asyncio.Event()  # awaited by the few sockets that watch it (terminals)
        # Subscription sockets are many and mostly idle: a callback each, not a waiting task.
        self._closers: dict[int, Close] = {}
        self._tokens = itertools.count()
        self._open = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def open(self) -> int:
        return self._open

    @contextlib.contextmanager
    def holding(self, close: Close | None = None) -> Iterator[None]:
        """Counts a socket as open for the lifetime of the block, its closing work included;
        `close()` is called once the server begins to stop (at once if it has)."""
        self._open += 1
        self._idle.clear()
        token = next(self._tokens)
        if close is not None:
            self._closers[token] = close
            if self.begun.is_set():
                self._spawn(close)
        try:
            yield
        finally:
            self._closers.pop(token, None)
            self._open -= 1
            if not self._open:
                self._idle.set()

    async def drain(self, grace: float) -> bool:
        """Tell every socket to close, and wait up to `grace` seconds for them to have ended;
        False when some were still open then."""
        self.begun.set()
        for close in list(self._closers.values()):
            self._spawn(close)
        try:
            async with asyncio.timeout(grace):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    def _spawn(self, close: Close) -> None:
        task = asyncio.ensure_future(close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


def held(endpoint: Callable[[WebSocket], Awaitable[None]]) -> Callable[[WebSocket], Any]:
    """A websocket endpoint counted in the app's `Draining` for as long as it runs; it watches
    `draining.begun` itself."""

    @functools.wraps(endpoint)
    async def counted(websocket: WebSocket) -> None:
        with websocket.app.state.resources.draining.holding():
            await endpoint(websocket)

    return counted
