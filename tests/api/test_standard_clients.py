"""The clients SPAs and third parties use, unmodified, against real `gpucloud serve` and
`gpucloud worker` processes: npm graphql-ws (the README's example, through a dropped socket and
its automatic retry), Apollo's GraphQLWsLink, and Python gql over HTTP and both of its
graphql-transport-ws transports."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gql import Client, GraphQLRequest
from gql.transport.aiohttp import AIOHTTPTransport
from gql.transport.aiohttp_websockets import AIOHTTPWebsocketsTransport
from gql.transport.websockets import WebsocketsTransport

from domain.notifications.notices import NoticeType
from domain.notifications.services import notify
from domain.ports import UnitOfWork
from schema.relay import from_global_id
from tests.support.identity import sync_sign_up_with_token
from tests.support.node_clients import CLIENTS, NodeClient, run_node
from tests.support.processes import REPO, Process, free_port, wait_ready
from tests.support.stack import Stack, bearer_gql, served

Uow = Callable[[], UnitOfWork]
NOTIFICATIONS = "subscription($after: String) { notifications(after: $after) { cursor type } }"
LIST = "query($first: Int) { notifications(first: $first) { edges { node { cursor } } } }"


@pytest.fixture
def stack(service_env: dict[str, str], tmp_path: Path, engine: object) -> Iterator[Stack]:
    with served(service_env, tmp_path, "clients", GPUCLOUD_OUTBOX_POLL_SECONDS="0.2") as running:
        yield running


async def _signed_up(stack: Stack) -> tuple[str, int]:
    token = await asyncio.to_thread(sync_sign_up_with_token, stack.http[0])
    viewer = await asyncio.to_thread(bearer_gql, stack.http[0], token, "{ viewer { id } }")
    return token, from_global_id(viewer["data"]["viewer"]["id"])[1]


async def _tell(uow: Uow, user_id: int, count: int = 1) -> None:
    for n in range(count):  # each in its own transaction, as causes happen
        async with uow() as u:
            await notify(u, [user_id], NoticeType.PAYMENT_SUCCEEDED, {"n": n})
            await u.commit()


async def _cursors(stack: Stack, token: str) -> list[str]:
    """Every notification's cursor, oldest first, as the list query reads them."""
    found = await asyncio.to_thread(bearer_gql, stack.http[0], token, LIST, {"first": 100})
    return [edge["node"]["cursor"] for edge in reversed(found["data"]["notifications"]["edges"])]


async def _notifications(client: NodeClient, count: int) -> None:
    for _ in range(count):
        await client.expect("notification")


async def test_graphql_ws_resumes_after_a_dropped_socket_from_the_latest_cursor(
    stack: Stack, uow: Uow, tmp_path: Path
) -> None:
    token, user_id = await _signed_up(stack)
    await _tell(uow, user_id)  # a client that saved this cursor earlier starts after it
    [saved] = await _cursors(stack, token)
    client = await NodeClient.start(
        "graphql_ws_resume.mjs", stack.ws[0], token, saved, stderr=tmp_path / "node.err"
    )
    try:
        assert (await client.expect("connected"))["wasRetry"] is False
        await _tell(uow, user_id, 2)
        await _notifications(client, 2)
        await client.send("drop")  # the TCP connection is cut under graphql-ws
        await client.expect("retrying")
        await _tell(uow, user_id, 3)  # while no socket is open
        await client.send("resume")
        assert (await client.expect("connected"))["wasRetry"] is True
        await _notifications(client, 3)
        await _tell(uow, user_id)  # then live again
        await _notifications(client, 1)
        await client.send("exit")
        assert await client.finish() == 0, (tmp_path / "node.err").read_text()
    finally:
        if client.proc.returncode is None:
            client.proc.kill()
            await client.proc.wait()

    received = [e["cursor"] for e in client.events if e["event"] == "notification"]
    # Each notification after the saved cursor exactly once, in order: had the retry re-sent
    # the cursor it started with, the first two would have come again; had it sent none, the
    # three made while the socket was down would be missing.
    assert received == (await _cursors(stack, token))[1:]
    assert [e["event"] for e in client.events].count("connected") == 2


async def test_graphql_ws_resumes_through_a_server_restart(
    stack: Stack, uow: Uow, tmp_path: Path
) -> None:
    """SIGTERM closes the socket with 1001 (documented as "reconnect"), which graphql-ws retries
    by itself: against the replacement process on the same port it resumes from its cursor."""
    token, user_id = await _signed_up(stack)
    await _tell(uow, user_id)
    [saved] = await _cursors(stack, token)
    port = free_port()
    env = {**stack.env, "GPUCLOUD_PORT": str(port), "GPUCLOUD_SHUTDOWN_GRACE_SECONDS": "5"}
    api = Process(["serve"], env, tmp_path / "api-1.log")
    replacement: Process | None = None
    client: NodeClient | None = None
    try:
        await asyncio.to_thread(wait_ready, f"http://127.0.0.1:{port}", api.proc, api.output)
        url = f"ws://127.0.0.1:{port}/graphql"
        client = await NodeClient.start(
            "graphql_ws_resume.mjs", url, token, saved, stderr=tmp_path / "node.err"
        )
        assert (await client.expect("connected"))["wasRetry"] is False
        await _tell(uow, user_id, 2)
        await _notifications(client, 2)
        await asyncio.to_thread(api.stop)  # SIGTERM: sockets are told to close, then it exits
        assert (await client.expect("closed"))["code"] == 1001
        await client.expect("retrying")
        await _tell(uow, user_id, 3)  # while no server listens
        replacement = Process(["serve"], env, tmp_path / "api-2.log")
        await asyncio.to_thread(
            wait_ready, f"http://127.0.0.1:{port}", replacement.proc, replacement.output
        )
        await client.send("resume")
        assert (await client.expect("connected"))["wasRetry"] is True
        await _notifications(client, 3)
        await client.send("exit")
        assert await client.finish() == 0, (tmp_path / "node.err").read_text()
    finally:
        if client is not None and client.proc.returncode is None:
            client.proc.kill()
            await client.proc.wait()
        api.stop()
        if replacement is not None:
            replacement.stop()
    received = [e["cursor"] for e in client.events if e["event"] == "notification"]
    assert received == (await _cursors(stack, token))[1:]  # each once, in order, none missed


async def test_apollo_graphql_ws_link_receives_a_notification(stack: Stack, uow: Uow) -> None:
    token, user_id = await _signed_up(stack)
    await _tell(uow, user_id, 2)
    first, second = await _cursors(stack, token)
    code, out, err = await run_node("apollo_subscription.mjs", stack.ws[0], token, first)
    assert code == 0, err
    assert json.loads(out) == {
        "__typename": "Notification",
        "cursor": second,
        "type": "PAYMENT_SUCCEEDED",
    }


async def test_gql_queries_over_http_and_subscribes_over_both_websocket_transports(
    stack: Stack, uow: Uow
) -> None:
    token, user_id = await _signed_up(stack)
    await _tell(uow, user_id, 2)
    auth = {"authorization": f"Bearer {token}"}

    http = AIOHTTPTransport(url=f"{stack.http[0]}/graphql", headers=auth)
    async with Client(transport=http) as session:
        listed = await session.execute(GraphQLRequest(LIST, variable_values={"first": 10}))
    first, second = [e["node"]["cursor"] for e in reversed(listed["notifications"]["edges"])]

    transports: list[Any] = [
        WebsocketsTransport(url=stack.ws[0], init_payload=auth),
        AIOHTTPWebsocketsTransport(url=stack.ws[0], init_payload=auth),
    ]
    for transport in transports:
        async with Client(transport=transport) as session:
            request = GraphQLRequest(NOTIFICATIONS, variable_values={"after": first})
            async for result in session.subscribe(request):
                assert result["notifications"] == {"cursor": second, "type": "PAYMENT_SUCCEEDED"}
                break
        assert transport.subprotocol == "graphql-transport-ws"


def test_the_readme_shows_the_graphql_ws_example_the_suite_runs() -> None:
    """The README's notifications snippet is tests/clients/notifications.mjs, less its header."""
    script = (CLIENTS / "notifications.mjs").read_text()
    code = script[script.index('import { createClient } from "graphql-ws";') :]
    assert f"```js\n{code}```\n" in (REPO / "README.md").read_text()
