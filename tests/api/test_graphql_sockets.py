"""The /graphql websocket takes a shorter way through the app than HTTP (gpucloud/app.py,
`Platform`): past Starlette's middleware and router, straight from the request context to the
GraphQL view. What the request context gives every request must still hold for it (the request
id on the handshake's answer, the access metric once the socket closes), and its operations are
counted by name and outcome at their first result (schema/observability.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from domain.catalog.services import add_sku
from domain.ports import UnitOfWork
from schema.relay import to_global_id
from tests.support.catalog import make_spec
from tests.support.identity import sync_sign_up_with_token
from tests.support.stack import Stack, next_message, recv_json, served

PROTOCOL = [websockets.Subprotocol("graphql-transport-ws")]
WATCH = "subscription Watch { catalogChanged { sku { name } } }"
MISSING = "subscription Missing($id: ID!) { allocationUpdated(id: $id) { id state } }"
REQUEST_ID = "sockets-test-0001"


@pytest.fixture
def stack(service_env: dict[str, str], tmp_path: Path, engine: object) -> Iterator[Stack]:
    with served(service_env, tmp_path, "sockets", GPUCLOUD_OUTBOX_POLL_SECONDS="0.2") as running:
        yield running


def metrics(stack: Stack) -> str:
    return httpx.get(f"{stack.http[0]}/metrics").text


async def test_a_socket_keeps_its_request_id_and_its_operations_are_counted(
    stack: Stack, uow: Callable[[], UnitOfWork]
) -> None:
    token = await asyncio.to_thread(sync_sign_up_with_token, stack.http[0])
    async with websockets.connect(
        stack.ws[0], subprotocols=PROTOCOL, additional_headers={"x-request-id": REQUEST_ID}
    ) as ws:
        assert ws.response.headers["x-request-id"] == REQUEST_ID
        init = {"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}
        await ws.send(json.dumps(init))
        assert await recv_json(ws, 10) == {"type": "connection_ack"}
        missing = {"id": to_global_id("Allocation", 2**31 - 1)}
        payload = {"query": MISSING, "variables": missing}
        await ws.send(json.dumps({"id": "m", "type": "subscribe", "payload": payload}))
        refused = await next_message(ws)
        assert refused["id"] == "m" and refused["payload"]["errors"]
        assert (await next_message(ws))["type"] == "complete"
        await ws.send(json.dumps({"id": "c", "type": "subscribe", "payload": {"query": WATCH}}))
        # Subscribed once the server answers a ping sent after it: messages are handled in order.
        await ws.send(json.dumps({"type": "ping"}))
        assert (await next_message(ws))["type"] == "pong"
        await add_sku(uow(), make_spec("sockets"))
        changed = await next_message(ws)
        assert changed["payload"]["data"]["catalogChanged"]["sku"] == {"name": "sockets"}

        counted = await asyncio.to_thread(metrics, stack)
        assert 'gpucloud_graphql_operations_total{operation="Watch",outcome="ok"} 1.0' in counted
        assert (
            'gpucloud_graphql_operations_total{operation="Missing",outcome="error"} 1.0' in counted
        )
        assert 'gpucloud_graphql_operation_duration_seconds_count{operation="Watch"} 1.0' in counted

    # The access metric is written when the socket's request ends, just after the close.
    line = 'gpucloud_http_requests_total{method="WS",route="/graphql",status="101"} 1.0'
    async with asyncio.timeout(10):
        while line not in await asyncio.to_thread(metrics, stack):
            await asyncio.sleep(0.05)
