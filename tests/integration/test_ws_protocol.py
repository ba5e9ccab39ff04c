"""`LeanWebSocketProtocol` (gpucloud/ws_protocol.py) on a real uvicorn server on loopback, read
frame by frame: a graphql-transport-ws socket gets no protocol-level pings (its heartbeat is in
the protocol, gpucloud/live.py) while other sockets keep uvicorn's; the handshake-only headers
are gone from the scope once accepted, the others stay; and messages flow both ways after the
handshake's parser is replaced."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import struct
from collections.abc import AsyncIterator
from typing import Any

import uvicorn

from gpucloud.ws_protocol import LeanWebSocketProtocol
from tests.support.processes import free_port

PING, PONG, TEXT = 0x9, 0xA, 0x1


class App:
    """Accepts with the first subprotocol asked for, records the scope's header names after the
    accept, and echoes text."""

    def __init__(self) -> None:
        self.headers_after_accept: dict[str, list[str]] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "websocket"
        assert (await receive())["type"] == "websocket.connect"
        subprotocols = scope["subprotocols"]
        await send({"type": "websocket.accept", "subprotocol": next(iter(subprotocols), None)})
        names = [name.decode().lower() for name, _ in scope["headers"]]
        self.headers_after_accept[subprotocols[0] if subprotocols else "none"] = names
        while (message := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message["text"]})


@contextlib.asynccontextmanager
async def serving(app: App) -> AsyncIterator[int]:
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        ws=LeanWebSocketProtocol,
        lifespan="off",
        ws_ping_interval=0.1,
        ws_ping_timeout=60,
        ws_per_message_deflate=False,
        log_config=None,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.01)
        yield port
    finally:
        server.should_exit = True
        await task


class RawSocket:
    """A websocket client that shows every frame the server sends, pings included."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, subprotocol: str | None) -> RawSocket:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            "GET /graphql HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            "Origin: http://127.0.0.1",
            "User-Agent: raw-test",
        ]
        if subprotocol is not None:
            lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def frame(self) -> tuple[int, bytes]:
        first, second = await self.reader.readexactly(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return first & 0x0F, await self.reader.readexactly(length)

    def send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert len(payload) < 126
        self.writer.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def close(self) -> None:
        self.writer.close()


async def test_graphql_transport_ws_sockets_get_no_protocol_pings_and_lose_handshake_headers():
    app = App()
    async with serving(app) as port:
        graphql = await RawSocket.open(port, "graphql-transport-ws")
        other = await RawSocket.open(port, None)
        try:
            async with asyncio.timeout(10):  # uvicorn pings every 0.1 s: two pings are due soon
                pings = 0
                while pings < 2:
                    opcode, payload = await other.frame()
                    if opcode == PING:  # the next ping comes once this one is answered
                        pings += 1
                        other.send(PONG, payload)
            # By now uvicorn has pinged the other socket twice; frames arrive in order, so the
            # echo is the first frame on the graphql socket only if nothing was sent before it.
            graphql.send(TEXT, b'{"type":"ping"}')
            async with asyncio.timeout(10):
                assert await graphql.frame() == (TEXT, b'{"type":"ping"}')
        finally:
            graphql.close()
            other.close()

    for names in app.headers_after_accept.values():
        assert {"host", "origin", "user-agent"} <= set(names)
        assert not {"upgrade", "connection", "sec-websocket-key", "sec-websocket-version"} & set(
            names
        )
    assert set(app.headers_after_accept) == {"graphql-transport-ws", "none"}
    assert "sec-websocket-protocol" in app.headers_after_accept["graphql-transport-ws"]
