"""The fan-out benchmark's lean websocket client (bench/lean_ws.py): its frame parser, its
masking, its upgrade, and one exchange with a real server (the `websockets` library's)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
from collections.abc import Callable

import pytest
from websockets.asyncio.server import ServerConnection, serve

from bench import lean_ws
from bench.lean_ws import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameReader,
    LeanSocket,
    WebSocketError,
    encode_frame,
)

PROTOCOL = "graphql-transport-ws"


def server_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """A frame as a server sends it: unmasked. Written out here, not with the client's code."""
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", first, n) + payload
    if n < 65536:
        return struct.pack("!BBH", first, 126, n) + payload
    return struct.pack("!BBQ", first, 127, n) + payload


def client_frames(data: bytes) -> list[tuple[bool, int, bool, bytes]]:
    """What the client wrote, decoded as a server would: (fin, opcode, masked, payload)."""
    frames = []
    pos = 0
    while pos < len(data):
        first, second = data[pos], data[pos + 1]
        length, pos = second & 0x7F, pos + 2
        if length == 126:
            (length,), pos = struct.unpack("!H", data[pos : pos + 2]), pos + 2
        elif length == 127:
            (length,), pos = struct.unpack("!Q", data[pos : pos + 8]), pos + 8
        masked = bool(second & 0x80)
        key, pos = (data[pos : pos + 4], pos + 4) if masked else (b"\0\0\0\0", pos)
        raw = data[pos : pos + length]
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(raw))
        frames.append((bool(first & 0x80), first & 0x0F, masked, payload))
        pos += length
    return frames


class FakeTransport:
    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = self.aborted = False

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def take(self) -> bytes:
        data, self.written = bytes(self.written), bytearray()
        return data


def upgrade_response(request: bytes, *, extra: str = "") -> bytes:
    key = next(
        line.split(":", 1)[1].strip()
        for line in request.decode().split("\r\n")
        if line.lower().startswith("sec-websocket-key:")
    )
    accept = base64.b64encode(hashlib.sha1(key.encode() + lean_ws.GUID).digest()).decode()
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: {PROTOCOL}\r\n{extra}\r\n"
    ).encode()


async def upgraded(*, deflate: bool = False) -> tuple[LeanSocket, FakeTransport, bytes]:
    """A LeanSocket on a fake transport, past its upgrade; also the request it sent."""
    sock = LeanSocket("127.0.0.1:1", "/graphql", PROTOCOL, deflate=deflate)
    transport = FakeTransport()
    sock.connection_made(transport)
    request = transport.take()
    sock.data_received(upgrade_response(request))
    assert sock.opened.done() and sock.opened.exception() is None
    return sock, transport, request


def listening(sock: LeanSocket) -> tuple[list[tuple[float, bytes]], list[str]]:
    got: list[tuple[float, bytes]] = []
    ends: list[str] = []
    sock.listen(lambda _, now, raw: got.append((now, raw)), lambda _, why: ends.append(why))
    return got, ends


# --- the parser ---------------------------------------------------------------------------------


def test_a_frame_with_a_16_bit_length() -> None:
    payload = bytes(range(256)) * 2  # 512 bytes: 126 in the 7-bit field, then 2 bytes
    frame = server_frame(OP_TEXT, payload)
    assert frame[1] == 126 and frame[2:4] == (512).to_bytes(2, "big")
    assert FrameReader().feed(frame) == [(OP_TEXT, payload)]
    edge = b"x" * 126  # the smallest that needs the 16-bit length
    assert FrameReader().feed(server_frame(OP_BINARY, edge)) == [(OP_BINARY, edge)]


def test_a_frame_with_a_64_bit_length_arriving_in_pieces() -> None:
    payload = os.urandom(70_000)
    frame = server_frame(OP_BINARY, payload)
    assert frame[1] == 127 and frame[2:10] == (70_000).to_bytes(8, "big")
    reader = FrameReader()
    out = []
    for at in range(0, len(frame), 4096):  # the 8-byte length itself split at 4096 too
        out += reader.feed(frame[at : at + 4096])
    assert out == [(OP_BINARY, payload)]
    # exactly 65536, the first that needs the 64-bit length, then a small frame after it
    edge = b"y" * 65536
    got = FrameReader().feed(server_frame(OP_TEXT, edge) + server_frame(OP_TEXT, b"next"))
    assert got == [(OP_TEXT, edge), (OP_TEXT, b"next")]


def test_a_split_header_waits_for_the_rest() -> None:
    reader = FrameReader()
    frame = server_frame(OP_TEXT, b"z" * 300)
    assert reader.feed(frame[:1]) == []
    assert reader.feed(frame[1:3]) == []  # the 16-bit length half there
    assert reader.feed(frame[3:]) == [(OP_TEXT, b"z" * 300)]
    assert reader.feed(b"") == []


def test_a_fragmented_message_is_returned_once_whole_with_a_ping_between() -> None:
    reader = FrameReader()
    first = server_frame(OP_TEXT, b'{"type":"next",', fin=False)
    ping = server_frame(OP_PING, b"p")
    middle = server_frame(OP_CONTINUATION, b'"payload":', fin=False)
    last = server_frame(OP_CONTINUATION, b'"fanout-0007"}')
    assert reader.feed(first) == []
    assert reader.feed(ping + middle) == [(OP_PING, b"p")]
    assert reader.feed(last + server_frame(OP_BINARY, b"after")) == [
        (OP_TEXT, b'{"type":"next","payload":"fanout-0007"}'),
        (OP_BINARY, b"after"),
    ]


@pytest.mark.parametrize(
    ("frame", "complaint"),
    [
        (bytes([0xC1, 0x01]) + b"x", "reserved bits"),  # RSV1: a deflated frame
        (bytes([0x81, 0x81]) + b"\0\0\0\0x", "masked"),
        (server_frame(OP_CONTINUATION, b"x"), "continuation"),
        (server_frame(OP_PING, b"x", fin=False), "control"),
        (server_frame(OP_TEXT, b"a", fin=False) + server_frame(OP_TEXT, b"b"), "inside"),
        (server_frame(0x3, b"x"), "unknown opcode"),
    ],
)
def test_what_it_cannot_read_it_refuses(frame: bytes, complaint: str) -> None:
    with pytest.raises(WebSocketError, match=complaint):
        FrameReader().feed(frame)


# --- client frames ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536])
def test_client_frames_are_masked(size: int) -> None:
    payload = os.urandom(size)
    frame = encode_frame(OP_TEXT, payload)
    assert frame[1] & 0x80, "the MASK bit"
    [(fin, opcode, masked, got)] = client_frames(frame)
    assert (fin, opcode, masked, got) == (True, OP_TEXT, True, payload)
    key = b"\x01\x02\x03\x04"
    fixed = encode_frame(OP_BINARY, b"hello", key=key, fin=False)
    assert fixed == bytes([0x02, 0x85]) + key + bytes(
        b ^ key[i % 4] for i, b in enumerate(b"hello")
    )


# --- the socket ---------------------------------------------------------------------------------


async def test_the_upgrade_request_and_its_checks() -> None:
    _, _, request = await upgraded(deflate=True)
    head = request.decode()
    assert head.startswith("GET /graphql HTTP/1.1\r\n") and head.endswith("\r\n\r\n")
    for line in (
        "Host: 127.0.0.1:1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Version: 13",
        f"Sec-WebSocket-Protocol: {PROTOCOL}",
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
    ):
        assert f"\r\n{line}\r\n" in head
    key = next(x for x in head.split("\r\n") if x.startswith("Sec-WebSocket-Key: "))
    assert len(base64.b64decode(key.split(": ")[1], validate=True)) == 16
    _, _, plain = await upgraded()
    assert b"Sec-WebSocket-Extensions" not in plain


@pytest.mark.parametrize(
    ("tamper", "complaint"),
    [
        (lambda r: r.replace(b"101 Switching Protocols", b"403 Forbidden"), "refused"),
        (lambda r: r.replace(b"Sec-WebSocket-Accept: ", b"Sec-WebSocket-Accept: x"), "Accept"),
        (
            lambda r: r[:-2] + b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
            "permessage-deflate",
        ),
    ],
)
async def test_an_upgrade_it_cannot_use_fails_the_socket(
    tamper: Callable[[bytes], bytes], complaint: str
) -> None:
    sock = LeanSocket("127.0.0.1:1", "/graphql", PROTOCOL, deflate=True)
    transport = FakeTransport()
    sock.connection_made(transport)
    sock.data_received(tamper(upgrade_response(transport.take())))
    with pytest.raises(WebSocketError, match=complaint):
        await sock.opened
    assert transport.aborted


async def test_a_message_split_over_two_chunks_gets_the_second_chunks_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sock, _, _ = await upgraded()
    got, ends = listening(sock)
    frame = server_frame(OP_TEXT, b'{"mark":"fanout-0001"}')
    two = server_frame(OP_BINARY, b"second")
    clock = [100.0]
    monkeypatch.setattr(lean_ws.time, "time", lambda: clock[0])
    sock.data_received(frame[:7])
    assert got == []
    clock[0] = 200.0
    sock.data_received(frame[7:] + two)  # completes the first, and a whole second one
    assert got == [(200.0, b'{"mark":"fanout-0001"}'), (200.0, b"second")]
    assert ends == []


async def test_a_ping_is_answered_with_a_masked_pong() -> None:
    sock, transport, _ = await upgraded()
    got, _ = listening(sock)
    sock.data_received(server_frame(OP_PING, b"are you there"))
    assert client_frames(transport.take()) == [(True, OP_PONG, True, b"are you there")]
    assert got == []  # a control frame, not a message


async def test_messages_before_listen_are_queued_for_receive() -> None:
    sock, transport, _ = await upgraded()
    sock.send_text(b'{"type":"connection_init"}')
    assert client_frames(transport.take()) == [(True, OP_TEXT, True, b'{"type":"connection_init"}')]
    sock.data_received(server_frame(OP_TEXT, b"ack") + server_frame(OP_TEXT, b"early"))
    assert await sock.receive() == b"ack"
    got, _ = listening(sock)
    assert [raw for _, raw in got] == [b"early"]


async def test_a_close_frame_from_the_server_ends_the_socket_once() -> None:
    sock, transport, _ = await upgraded()
    _, ends = listening(sock)
    sock.data_received(server_frame(OP_CLOSE, (4403).to_bytes(2, "big") + b"Forbidden"))
    assert ends == ["closed by the server: 4403 Forbidden"]
    assert client_frames(transport.take()) == [(True, OP_CLOSE, True, (4403).to_bytes(2, "big"))]
    assert transport.closed
    sock.connection_lost(None)
    assert ends == ["closed by the server: 4403 Forbidden"]


async def test_closing_sends_a_masked_close_and_reports_no_end() -> None:
    sock, transport, _ = await upgraded()
    _, ends = listening(sock)
    sock.close()
    assert client_frames(transport.take()) == [(True, OP_CLOSE, True, (1000).to_bytes(2, "big"))]
    assert not transport.closed  # until the server answers
    sock.data_received(server_frame(OP_CLOSE, (1000).to_bytes(2, "big")))
    assert transport.closed and transport.take() == b""  # no second close frame
    sock.connection_lost(None)
    assert sock.lost.done() and ends == []


async def test_a_lost_connection_ends_the_socket() -> None:
    sock, _, _ = await upgraded()
    _, ends = listening(sock)
    sock.connection_lost(ConnectionResetError("reset"))
    assert ends == ["connection lost: reset"]


# --- against a real server ----------------------------------------------------------------------


async def test_an_exchange_with_the_websockets_library_server() -> None:
    async def handler(ws: ServerConnection) -> None:
        assert await ws.recv() == '{"type":"connection_init"}'
        await ws.send('{"type":"connection_ack"}')
        await ws.send(["fanout-", "0042"])  # a fragmented text message
        await ws.send(b"x" * 70_000)  # binary, 64-bit length
        pong = await ws.ping(b"hi")
        await asyncio.wait_for(pong, 5)  # the client answered the ping
        echoed = await ws.recv()
        await ws.send(f"echo {echoed}")
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, subprotocols=[PROTOCOL]) as server:
        port = server.sockets[0].getsockname()[1]
        sock = await lean_ws.connect(f"ws://127.0.0.1:{port}/graphql", PROTOCOL, timeout=10)
        sock.send_text(b'{"type":"connection_init"}')
        assert await asyncio.wait_for(sock.receive(), 5) == b'{"type":"connection_ack"}'
        assert await asyncio.wait_for(sock.receive(), 5) == b"fanout-0042"
        assert await asyncio.wait_for(sock.receive(), 5) == b"x" * 70_000
        sock.send_text(b"hello")
        assert await asyncio.wait_for(sock.receive(), 5) == b"echo hello"
        sock.close()
        await asyncio.wait_for(sock.lost, 5)
        assert sock.close_received


async def test_a_server_that_accepts_deflate_fails_the_connect_loudly() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()

    # the library's server accepts permessage-deflate when offered (its default)
    async with serve(handler, "127.0.0.1", 0, subprotocols=[PROTOCOL]) as server:
        port = server.sockets[0].getsockname()[1]
        url = f"ws://127.0.0.1:{port}/graphql"
        with pytest.raises(WebSocketError, match="permessage-deflate"):
            await lean_ws.connect(url, PROTOCOL, deflate=True, timeout=10)
        sock = await lean_ws.connect(url, PROTOCOL, deflate=False, timeout=10)  # not offered: fine
        sock.close()
        await asyncio.wait_for(sock.lost, 5)
