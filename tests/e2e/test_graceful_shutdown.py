"""A real `gpucloud serve` gets SIGTERM while a browser terminal (to a RUNNING allocation on a
real sshd node) and a subscription are open: the terminal closes with 1001 SERVER_SHUTDOWN and
its audit row names the server as the closer, the subscription closes with 1001 "Server
shutting down" (which graphql-ws clients retry), both within GPUCLOUD_SHUTDOWN_GRACE_SECONDS,
before uvicorn would close them with 1012 and no reason."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from domain.ports import UnitOfWork
from infra.settings import Settings
from schema.relay import from_global_id, to_global_id
from tests.support.fleet import node_env
from tests.support.identity import PASSWORD, SIGN_UP, body, unique_email
from tests.support.processes import Process, free_port, wait_ready
from tests.support.ssh_node import SshNode
from tests.support.terminal_node import h200_node, running_allocation

APP = "https://app.test"  # the SPA's origin, in GPUCLOUD_ALLOWED_ORIGINS
GRACE = "5"
Uow = Callable[[], UnitOfWork]
TICKET = """mutation T($id: ID!) { createTerminalTicket(allocationId: $id) {
  __typename ... on TerminalTicketPayload { ticket } ... on TerminalError { code } } }"""


@dataclass
class Served:
    api: Process
    http: str
    ws: str
    allocation_id: int
    user_id: int
    browser: httpx.AsyncClient
    csrf: str


def _serve_env(
    service_env: dict[str, str], node: SshNode, groups: str, prefix: str, port: int
) -> dict[str, str]:
    return {
        **service_env,
        "GPUCLOUD_PORT": str(port),
        "GPUCLOUD_ALLOWED_ORIGINS": APP,
        "GPUCLOUD_SHUTDOWN_GRACE_SECONDS": GRACE,
        **node_env(node.root, groups, prefix),
    }


@pytest.fixture
async def served(
    uow: Uow, settings: Settings, service_env: dict[str, str], tmp_path: Path
) -> AsyncIterator[Served]:
    """A RUNNING allocation on a real node, and a `gpucloud serve` process that can open
    terminals to it (the allocation is made in this process, as the worker would)."""
    async with contextlib.AsyncExitStack() as stack:
        world = await h200_node(stack, uow, settings)

        port = free_port()
        api = Process(
            ["serve"],
            _serve_env(service_env, world.node, world.groups, world.prefix, port),
            tmp_path / "api.log",
        )
        stack.callback(api.stop)
        http = f"http://127.0.0.1:{port}"
        await asyncio.to_thread(wait_ready, http, api.proc, api.output)

        browser = await stack.enter_async_context(httpx.AsyncClient(base_url=http))
        signed = await browser.post(
            "/graphql", json=body(SIGN_UP, {"email": unique_email("drain"), "password": PASSWORD})
        )
        payload = signed.json()["data"]["signUp"]
        user_id = from_global_id(payload["user"]["id"], "id")[1]
        running = await running_allocation(uow, world, user_id, "drain")
        yield Served(
            api, http, f"ws://127.0.0.1:{port}", running.id, user_id, browser, payload["csrfToken"]
        )


async def _close_of(ws: ClientConnection) -> tuple[int, str]:
    """Reads (answering graphql-transport-ws pings) until the server closes."""
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(30):
            while True:
                frame = await ws.recv()
                if isinstance(frame, str) and json.loads(frame).get("type") == "ping":
                    await ws.send(json.dumps({"type": "pong"}))
    assert closed.value.rcvd is not None, closed.value
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def _read_until(ws: ClientConnection, needle: bytes) -> None:
    seen = bytearray()
    async with asyncio.timeout(20):
        while needle not in seen:
            frame = await ws.recv()
            if isinstance(frame, bytes):
                seen += frame


async def _subscribed(url: str) -> Any:
    ws = await websockets.connect(
        url, subprotocols=[websockets.Subprotocol("graphql-transport-ws")]
    )
    await ws.send(json.dumps({"type": "connection_init"}))  # anonymous: catalogChanged is public
    assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "connection_ack"}
    query = "subscription { catalogChanged { kind } }"
    await ws.send(json.dumps({"id": "c", "type": "subscribe", "payload": {"query": query}}))
    return ws


async def test_sigterm_closes_terminals_and_subscriptions_with_notice(
    served: Served, engine: AsyncEngine
) -> None:
    issued = await served.browser.post(
        "/graphql",
        json=body(TICKET, {"id": to_global_id("Allocation", served.allocation_id)}),
        headers={"x-csrf-token": served.csrf, "origin": APP},
    )
    ticket = issued.json()["data"]["createTerminalTicket"]
    assert ticket["__typename"] == "TerminalTicketPayload", ticket
    terminal = await connect(f"{served.ws}/terminal?ticket={ticket['ticket']}", origin=APP)  # type: ignore[arg-type]
    subscription = await _subscribed(f"{served.ws}/graphql")
    try:
        await terminal.send(b"echo before-$((20+22))\n")
        await _read_until(terminal, b"before-42")  # the shell is live

        terminal_closed = asyncio.create_task(_close_of(terminal))
        subscription_closed = asyncio.create_task(_close_of(subscription))
        exit_code = await asyncio.to_thread(served.api.stop, 30)

        assert await terminal_closed == (1001, "SERVER_SHUTDOWN")
        assert await subscription_closed == (1001, "Server shutting down")
    finally:
        await terminal.close()
        await subscription.close()
    log = served.api.output()
    assert '"server.draining"' in log and '"grace_seconds": 5.0' in log, log
    assert "server.drain_incomplete" not in log, log
    assert "Traceback" not in log, log
    assert exit_code in (0, -15), (exit_code, log)  # uvicorn re-raises the SIGTERM it handled

    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT action, actor_user_id, after FROM audit_events "
                    "WHERE action LIKE 'terminal.%' ORDER BY id"
                )
            )
        ).all()
    assert [(r.action, r.actor_user_id) for r in rows] == [
        ("terminal.opened", served.user_id),
        ("terminal.closed", served.user_id),
    ]
    closed = rows[1].after
    assert (closed["code"], closed["reason"], closed["closedBy"]) == (
        1001,
        "SERVER_SHUTDOWN",
        "server",
    )
