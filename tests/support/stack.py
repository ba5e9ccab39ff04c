"""Real `gpucloud serve` and `gpucloud worker` processes for subscription tests, and a
graphql-transport-ws client for them.

Each stack gets a Redis namespace of its own, removed afterwards: the relay marks each outbox
id it delivered there, and outbox ids start again at 1 after the tables are emptied, so sharing
the run's namespace would make a later test's worker skip events with the same ids."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis
import websockets

from tests.support.processes import Process, free_port, wait_ready


@dataclass(frozen=True)
class Stack:
    http: list[str]  # one base URL per API process
    ws: list[str]
    env: dict[str, str]


@contextmanager
def served(service_env: dict[str, str], logs: Path, name: str, *, apis: int = 1,
           **settings: str) -> Iterator[Stack]:  # fmt: skip
    namespace = f"{service_env['GPUCLOUD_REDIS_NAMESPACE']}_{name}"
    env = {**service_env, "GPUCLOUD_REDIS_NAMESPACE": namespace, **settings}
    ports = [free_port() for _ in range(apis)]
    servers = [Process(["serve"], {**env, "GPUCLOUD_PORT": str(port)}, logs / f"api-{i}.log")
               for i, port in enumerate(ports)]  # fmt: skip
    worker = Process(["worker"], env, logs / "worker.log")
    try:
        for server, port in zip(servers, ports, strict=True):
            wait_ready(f"http://127.0.0.1:{port}", server.proc, server.output)
        yield Stack([f"http://127.0.0.1:{p}" for p in ports],
                    [f"ws://127.0.0.1:{p}/graphql" for p in ports], env)  # fmt: skip
    finally:
        for server in servers:
            server.stop()
        worker.stop()
        client = redis.Redis.from_url(env["REDIS_URL"])
        try:
            keys = list(client.scan_iter(match=f"{namespace}:*", count=500))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


def text_json(frame: str | bytes) -> Any:
    """A graphql-transport-ws message. The protocol is JSON in text frames, and standard clients
    refuse binary ones (graphql-ws closes with 4004, gql raises, browsers get Blobs): a binary
    frame fails the test instead of being decoded."""
    assert isinstance(frame, str), f"binary frame on /graphql: {frame!r}"
    return json.loads(frame)


async def recv_json(ws: Any, timeout: float | None = None) -> Any:
    """The next message on the socket (text_json)."""
    return text_json(await asyncio.wait_for(ws.recv(), timeout))


async def subscribe(ws_url: str, token: str, query: str,
                    variables: dict[str, Any] | None = None) -> Any:  # fmt: skip
    """A websocket signed in with the token (connection_init), with one subscription open."""
    ws = await websockets.connect(ws_url,
                                  subprotocols=[websockets.Subprotocol("graphql-transport-ws")])  # fmt: skip
    await ws.send(json.dumps({"type": "connection_init",
                              "payload": {"authorization": f"Bearer {token}"}}))  # fmt: skip
    assert await recv_json(ws, 10) == {"type": "connection_ack"}
    await ws.send(json.dumps({"id": "1", "type": "subscribe",
                              "payload": {"query": query, "variables": variables or {}}}))  # fmt: skip
    return ws


async def next_message(ws: Any, timeout: float = 30) -> dict[str, Any]:
    """The next message that is not a ping (pings are answered), within `timeout` in all: the
    server's heartbeat pings must not restart the wait, or a message that never comes would
    hang the test instead of failing it."""
    async with asyncio.timeout(timeout):
        while True:
            message = await recv_json(ws)
            if message["type"] == "ping":
                await ws.send(json.dumps({"type": "pong"}))
                continue
            return message  # type: ignore[no-any-return]


async def connect_as(url: str, token: str) -> tuple[Any, str | int]:
    """A socket and what connection_init got: "connection_ack" or the close code."""
    ws = await websockets.connect(
        url, subprotocols=[websockets.Subprotocol("graphql-transport-ws")]
    )
    await ws.send(json.dumps({"type": "connection_init",
                              "payload": {"authorization": f"Bearer {token}"}}))  # fmt: skip
    try:
        return ws, (await recv_json(ws, 10))["type"]
    except websockets.exceptions.ConnectionClosed as closed:
        assert closed.rcvd is not None
        return ws, closed.rcvd.code


async def closed_with(ws: Any, *, answer_pings: bool, timeout: float = 15) -> tuple[int, str]:
    """Read until the server closes; returns its close code and reason."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                message = await recv_json(ws)
                if message["type"] == "ping" and answer_pings:
                    await ws.send(json.dumps({"type": "pong"}))
    except websockets.exceptions.ConnectionClosed as closed:
        assert closed.rcvd is not None, closed
        return closed.rcvd.code, closed.rcvd.reason
    raise AssertionError("unreachable")


def bearer_gql(http: str, token: str, query: str, variables: dict[str, Any] | None = None) -> Any:
    response = httpx.post(f"{http}/graphql", json={"query": query, "variables": variables or {}},
                          headers={"authorization": f"Bearer {token}"})  # fmt: skip
    return response.json()
