"""A lean websocket client for load generators: one asyncio.Protocol per socket, no tasks.

On the benchmark machine the clients share two cores with the server they measure, so every
microsecond a client spends reading a message is measurement overhead. This client does only
what the benchmarks need of RFC 6455:

- the HTTP/1.1 upgrade, written by hand: it checks the 101 status, Sec-WebSocket-Accept and the
  subprotocol; it may offer permessage-deflate but does not implement it, so a server that
  accepts the offer (or sets a reserved bit on a frame) fails the socket loudly instead of
  having its frames mis-read;
- masked client frames (clients must mask);
- server frames parsed incrementally as bytes arrive: 7-, 16- and 64-bit lengths, fragmented
  messages (FIN=0, then continuations, control frames allowed between them), text and binary
  alike (payloads are handed on as bytes: UTF-8 is not validated); a ping is answered with a
  pong, a close frame with a close frame.

`data_received` reads the clock before anything else and hands that time with every complete
message the chunk held, so a message's receive time does not include parsing its neighbours.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import time
from collections.abc import Callable
from typing import cast
from urllib.parse import urlsplit

OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"
MAX_MESSAGE = 64 * 1024 * 1024  # more than any benchmark sends: a larger length is a mis-read
MAX_HEAD = 64 * 1024  # the upgrade response's headers


class WebSocketError(Exception):
    """The server broke the protocol, or spoke a part of it this client does not implement."""


def accept_for(key: bytes) -> str:
    """The Sec-WebSocket-Accept a server must answer the base64 `key` with."""
    return base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()  # RFC 6455 asks for SHA-1


def mask(data: bytes, key: bytes) -> bytes:
    """XOR `data` with the 4-byte `key` repeated (masking and unmasking are the same)."""
    n = len(data)
    if not n:
        return b""
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(repeated, "little")).to_bytes(
        n, "little"
    )


def encode_frame(
    opcode: int, payload: bytes = b"", *, fin: bool = True, key: bytes | None = None
) -> bytes:
    """One client frame: always masked, with a fresh random key unless `key` is given."""
    key = os.urandom(4) if key is None else key
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = bytes((first, 0x80 | n))
    elif n < 1 << 16:
        head = bytes((first, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((first, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + key + mask(payload, key)


class FrameReader:
    """Server frames in, complete messages out: `feed` returns (opcode, payload) for every
    message the bytes so far complete, control frames (close, ping, pong) included as they
    come; a fragmented message is returned once, whole, with its first frame's opcode."""

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self.max_message = max_message
        self._buffer = bytearray()  # an incomplete frame
        self._opcode = 0  # of the fragmented message in progress
        self._fragments: list[bytes] | None = None
        self._fragmented_size = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf: bytes | bytearray
        if self._buffer:
            self._buffer += data
            buf = self._buffer
        else:
            buf = data  # the usual case: the chunk starts at a frame boundary
        out: list[tuple[int, bytes]] = []
        pos, end = 0, len(buf)
        while end - pos >= 2:
            first, second = buf[pos], buf[pos + 1]
            if second & 0x80:
                raise WebSocketError("a masked frame from the server")
            if first & 0x70:
                raise WebSocketError(
                    f"reserved bits {first & 0x70:#x} set in a frame: an extension (such as "
                    "permessage-deflate) this client does not implement"
                )
            length, head = second & 0x7F, 2
            if length == 126:
                if end - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if end - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if length > self.max_message:
                raise WebSocketError(f"a frame of {length} bytes")
            if end - pos < head + length:
                break
            payload = bytes(buf[pos + head : pos + head + length])
            pos += head + length
            fin, opcode = first & 0x80, first & 0x0F
            if opcode >= OP_CLOSE:
                if opcode not in (OP_CLOSE, OP_PING, OP_PONG):
                    raise WebSocketError(f"unknown control opcode {opcode:#x}")
                if not fin or length > 125:
                    raise WebSocketError("a fragmented or oversized control frame")
                out.append((opcode, payload))
            elif opcode == OP_CONTINUATION:
                if self._fragments is None:
                    raise WebSocketError("a continuation frame outside a fragmented message")
                self._fragments.append(payload)
                self._fragmented_size += length
                if self._fragmented_size > self.max_message:
                    raise WebSocketError(f"a message of over {self.max_message} bytes")
                if fin:
                    out.append((self._opcode, b"".join(self._fragments)))
                    self._fragments = None
            elif opcode in (OP_TEXT, OP_BINARY):
                if self._fragments is not None:
                    raise WebSocketError("a new message inside a fragmented one")
                if fin:
                    out.append((opcode, payload))
                else:
                    self._opcode, self._fragments, self._fragmented_size = (
                        opcode,
                        [payload],
                        length,
                    )
            else:
                raise WebSocketError(f"unknown opcode {opcode:#x}")
        if buf is self._buffer:
            del self._buffer[:pos]
        elif pos < end:
            self._buffer = bytearray(buf[pos:])
        return out


OnMessage = Callable[["LeanSocket", float, bytes], None]  # (socket, receive time, payload)
OnEnd = Callable[["LeanSocket", str], None]  # (socket, why): closed or broken, not by us


class LeanSocket(asyncio.Protocol):
    """One client websocket. Until `listen` is called, messages queue for `receive`; after,
    each goes to `on_message` with the time its chunk arrived, and the socket's end (a close
    frame, the connection lost, a protocol error) goes once to `on_end`, unless `done` is set
    first (the caller is no longer interested: it stopped, or saw the subscription end)."""

    def __init__(self, host: str, path: str, subprotocol: str, *, deflate: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self.key = base64.b64encode(os.urandom(16))
        self.subprotocol = subprotocol
        offer = f"Sec-WebSocket-Extensions: {DEFLATE_OFFER}\r\n" if deflate else ""
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {self.key.decode()}\r\n"
            f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {subprotocol}\r\n{offer}\r\n"
        ).encode()
        self.opened: asyncio.Future[None] = loop.create_future()  # the upgrade is done
        self.lost: asyncio.Future[None] = loop.create_future()  # the connection is gone
        self.transport: asyncio.Transport | None = None
        self.frames = FrameReader()
        self.done = False
        self.close_sent = self.close_received = False
        self._head: bytearray | None = bytearray()  # None once upgraded
        self._on_message: OnMessage | None = None
        self._on_end: OnEnd | None = None
        self._inbox: list[tuple[float, bytes]] = []
        self._ended: str | None = None  # why, once ended before `listen`
        self._waiter: asyncio.Future[None] | None = None

    # --- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time()  # first, before any parsing: every message in this chunk came now
        if self._head is not None:
            data = self._upgrade(data)
            if not data:
                return
        try:
            messages = self.frames.feed(data)
        except WebSocketError as error:
            self._end(f"protocol error: {error}")
            self._abort()
            return
        for opcode, payload in messages:
            if opcode <= OP_BINARY:
                if self.done:
                    continue
                if self._on_message is not None:
                    self._on_message(self, now, payload)
                else:
                    self._inbox.append((now, payload))
                    self._wake()
            elif opcode == OP_PING:
                self._write(encode_frame(OP_PONG, payload))
            elif opcode == OP_CLOSE:
                self._closed_by_server(payload)
                return
            # OP_PONG: nothing asked for one

    def eof_received(self) -> bool:
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(
                ConnectionError(f"connection lost during the upgrade: {exc or 'closed'}")
            )
        if not self.lost.done():
            self.lost.set_result(None)
        if not self.close_sent:
            self._end(f"connection lost: {exc or 'closed by the server without a close frame'}")

    # --- the caller's side

    async def receive(self) -> bytes:
        """The next message, before `listen` is called."""
        while not self._inbox:
            if self._ended is not None:
                raise ConnectionError(self._ended)
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return self._inbox.pop(0)[1]

    def listen(self, on_message: OnMessage, on_end: OnEnd) -> None:
        """From now on, hand messages and the end to these (first what already came)."""
        self._on_message, self._on_end = on_message, on_end
        inbox, self._inbox = self._inbox, []
        for now, payload in inbox:
            if not self.done:
                on_message(self, now, payload)
        if self._ended is not None and not self.done:
            self.done = True
            on_end(self, self._ended)

    def send_text(self, text: bytes) -> None:
        self._write(encode_frame(OP_TEXT, text))

    def close(self, code: int = 1000) -> None:
        """Start the closing handshake; the transport closes when the server's close frame
        arrives (or call `abort`). `lost` completes when the connection is gone."""
        self.done = True
        if not self.close_sent:
            self.close_sent = True
            self._write(encode_frame(OP_CLOSE, code.to_bytes(2, "big")))
        if self.close_received and self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.done = True
        self._abort()

    # --- inside

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _end(self, why: str) -> None:
        if self._ended is not None:
            return
        self._ended = why
        if not self.opened.done():
            self.opened.set_exception(WebSocketError(why))
        self._wake()
        if self._on_end is not None and not self.done:
            self.done = True
            self._on_end(self, why)

    def _closed_by_server(self, payload: bytes) -> None:
        self.close_received = True
        if not self.close_sent:  # the server started it: answer, then it is over
            self.close_sent = True
            self._write(encode_frame(OP_CLOSE, payload[:2]))
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            reason = payload[2:].decode(errors="replace")
            self._end(f"closed by the server: {code} {reason}".rstrip())
        if self.transport is not None:
            self.transport.close()  # after both close frames, the client may close (7.1.1)

    def _upgrade(self, data: bytes) -> bytes:
        """Collect the upgrade response; return the bytes after it (the first frames)."""
        assert self._head is not None
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_HEAD:
                self._end("an upgrade response without an end of headers")
                self._abort()
            return b""
        head, rest = bytes(self._head[:end]), bytes(self._head[end + 4 :])
        self._head = None
        try:
            self._check_upgrade(head.decode("latin-1"))
        except WebSocketError as error:
            self._end(str(error))
            self._abort()
            return b""
        self.opened.set_result(None)
        return rest

    def _check_upgrade(self, head: str) -> None:
        status, *lines = head.split("\r\n")
        parts = status.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or parts[1] != "101":
            raise WebSocketError(f"the server refused the upgrade: {status!r}")
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        if headers.get("upgrade", "").lower() != "websocket":
            raise WebSocketError(f"Upgrade: {headers.get('upgrade')!r} in the 101 response")
        if "upgrade" not in headers.get("connection", "").lower():
            raise WebSocketError(f"Connection: {headers.get('connection')!r} in the 101 response")
        if headers.get("sec-websocket-accept") != accept_for(self.key):
            raise WebSocketError("a wrong Sec-WebSocket-Accept")
        if headers.get("sec-websocket-extensions"):
            raise WebSocketError(
                f"the server accepted {headers['sec-websocket-extensions']!r}; this client "
                "does not implement extensions (permessage-deflate): run without offering it"
            )
        if headers.get("sec-websocket-protocol") != self.subprotocol:
            raise WebSocketError(
                f"subprotocol {headers.get('sec-websocket-protocol')!r}, not {self.subprotocol!r}"
            )


async def connect(
    url: str, subprotocol: str, *, deflate: bool = False, timeout: float = 120
) -> LeanSocket:
    """A LeanSocket on `url` (ws:// only), upgraded within `timeout` seconds."""
    parts = urlsplit(url)
    if parts.scheme != "ws" or parts.hostname is None:
        raise ValueError(f"a ws:// URL, not {url!r}")
    port = parts.port or 80
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    sock = LeanSocket(f"{parts.hostname}:{port}", path, subprotocol, deflate=deflate)
    try:
        async with asyncio.timeout(timeout):
            await asyncio.get_running_loop().create_connection(lambda: sock, parts.hostname, port)
            await sock.opened
    except BaseException:
        sock.opened.cancel()  # no one will read how the upgrade ended
        sock.abort()
        raise
    return sock
