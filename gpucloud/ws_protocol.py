"""uvicorn's websocket protocol (websockets, sans-I/O) with less held per open socket.

An API process holds thousands of idle subscriber sockets (bench/fanout.py), and uvicorn keeps
per socket:
- an asyncio.Queue for received messages (three deques, 2.3 KiB) and an asyncio.Event for write
  flow control (one more deque): swapped for slotted equivalents that allocate only while
  someone waits;
- the handshake's parsed request and response, which the ASGI scope has already copied, and in
  the scope the headers that only the handshake reads: let go once the handshake is over;
- a keepalive timer and a ping frame every interval, even where the subprotocol has a heartbeat
  of its own: graphql-transport-ws sockets have theirs (gpucloud/live.py), so uvicorn's is
  stopped for them; the terminal keeps it.
The wire behaviour is otherwise uvicorn's own: every other line is inherited.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn._types import ASGIReceiveEvent, ASGISendEvent
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import Protocol, State

# Subprotocols whose messages carry their own ping and pong, which the application sends.
OWN_HEARTBEAT = frozenset({"graphql-transport-ws"})


# Request headers that only the opening handshake reads (RFC 6455 4.2.1, 9.1): dropped from the
# scope once it is done, rather than held for the socket's life.
HANDSHAKE_ONLY = frozenset(
    {
        b"upgrade",
        b"connection",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
    }
)


class _Inbox:
    """The subset of asyncio.Queue uvicorn uses (put_nowait, get, empty), unbounded."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[ASGIReceiveEvent] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: ASGIReceiveEvent) -> None:
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self) -> ASGIReceiveEvent:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)  # short: the protocol pauses reading while one is queued

    def empty(self) -> bool:
        return not self._items


class _Flag:
    """The subset of asyncio.Event uvicorn uses (set, clear, wait), with no deque until waited."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        if self._set:
            return
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = _Inbox()  # type: ignore[assignment]
        self.writable = _Flag()  # type: ignore[assignment]

    async def send(self, message: ASGISendEvent) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept" and message.get("subprotocol") in OWN_HEARTBEAT:
            # The protocol has a heartbeat of its own (gpucloud/live.py): no second timer and
            # ping frame per socket from uvicorn.
            self.stop_keepalive()
        if self.handshake_complete and getattr(self, "response", None) is not None:
            # The handshake's request and response: the scope holds what the app needs, less
            # the headers that only served the handshake.
            self.request = self.response = None  # type: ignore[assignment]
            headers = self.scope["headers"]
            headers[:] = [h for h in headers if h[0].lower() not in HANDSHAKE_ONLY]  # type: ignore[index]
            conn = self.conn
            if conn.state is State.OPEN and not conn.reader.buffer:
                # websockets' server parser keeps the parsed request (and all its headers) in
                # its suspended frame for the connection's life. Nothing after it has been
                # read (a client sends no frame before our 101), so a fresh frame parser
                # takes over at a frame boundary, as websockets itself swaps parsers.
                conn.parser = Protocol.parse(conn)
                next(conn.parser)
