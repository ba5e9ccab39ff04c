"""Every message the server sends on /graphql is a text websocket frame.

graphql-transport-ws is JSON text: graphql-ws closes with 4004 on a binary frame, gql raises
"Binary data received", a browser hands the page a Blob. This test reads raw frames (the
`websockets` library returns str for a text frame, bytes for a binary one) from a real API
process and worker through every kind of server message: connection_ack, pong, ping, next,
error and complete. Two sockets subscribe to the same events, so the payloads executed once and
shared between subscribers (resolvers/broadcast.py) are covered too."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from domain.catalog.services import add_sku
from domain.notifications.notices import NoticeType
from domain.notifications.services import notify
from domain.pagination import encode_cursor
from domain.ports import UnitOfWork
from schema.relay import from_global_id, to_global_id
from tests.support.catalog import make_spec
from tests.support.identity import sync_sign_up_with_token
from tests.support.stack import Stack, bearer_gql, served

PROTOCOL = [websockets.Subprotocol("graphql-transport-ws")]
# From the first notification on, not "from now": the test cannot see when the server subscribed.
NOTIFICATIONS = f'subscription {{ notifications(after: "{encode_cursor(0)}") {{ cursor type }} }}'
CATALOG = "subscription { catalogChanged { kind sku { name } } }"
# An allocation that does not exist: refused before anything is streamed, then complete.
MISSING = "subscription($id: ID!) { allocationUpdated(id: $id) { id state } }"


@pytest.fixture
def stack(service_env: dict[str, str], tmp_path: Path, engine: object) -> Iterator[Stack]:
    """API and worker; the server pings every 0.3 s so a ping is seen soon."""
    with served(
        service_env,
        tmp_path,
        "frames",
        GPUCLOUD_OUTBOX_POLL_SECONDS="0.2",
        GPUCLOUD_WS_PING_INTERVAL_SECONDS="0.3",
        GPUCLOUD_WS_PONG_TIMEOUT_SECONDS="10",
    ) as running:
        yield running


class Frames:
    """One signed-in socket and every frame the server sent on it; pings are answered."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.received: list[str | bytes] = []

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def until(self, kind: str, op: str | None = None) -> dict[str, Any]:
        async with asyncio.timeout(30):  # in all: heartbeat pings must not restart the wait
            while True:
                frame = await self.ws.recv()
                self.received.append(frame)
                message: dict[str, Any] = json.loads(frame)  # bytes too: judged after, together
                if message["type"] == "ping":
                    await self.send({"type": "pong"})
                if message["type"] == kind and (op is None or message.get("id") == op):
                    return message

    def kinds(self) -> set[str]:
        return {json.loads(frame)["type"] for frame in self.received}


async def test_every_message_on_graphql_is_a_text_frame(
    stack: Stack, uow: Callable[[], UnitOfWork]
) -> None:
    token = await asyncio.to_thread(sync_sign_up_with_token, stack.http[0])
    viewer = await asyncio.to_thread(bearer_gql, stack.http[0], token, "{ viewer { id } }")
    user_id = from_global_id(viewer["data"]["viewer"]["id"])[1]

    async with (
        websockets.connect(stack.ws[0], subprotocols=PROTOCOL) as first,
        websockets.connect(stack.ws[0], subprotocols=PROTOCOL) as second,
    ):
        sockets = [Frames(first), Frames(second)]
        for frames in sockets:
            await frames.send(
                {"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}
            )
            await frames.until("connection_ack")
            await frames.send({"type": "ping"})
            await frames.until("pong")
            await frames.until("ping")  # the server's heartbeat
            for op, query in (("n", NOTIFICATIONS), ("c", CATALOG)):
                await frames.send({"id": op, "type": "subscribe", "payload": {"query": query}})

        async with uow() as u:
            await notify(u, [user_id], NoticeType.PAYMENT_SUCCEEDED, {"n": 1})
            await u.commit()
        for frames in sockets:  # by then each socket has long handled its second subscribe
            notified = await frames.until("next", "n")
            assert notified["payload"]["data"]["notifications"]["type"] == "PAYMENT_SUCCEEDED"
        await add_sku(uow(), make_spec("frames"))
        for frames in sockets:  # the same event, executed once for both (broadcast.py)
            changed = await frames.until("next", "c")
            assert changed["payload"]["data"]["catalogChanged"]["sku"] == {"name": "frames"}

        one = sockets[0]
        await one.send(
            {"id": "e", "type": "subscribe", "payload": {"query": "subscription { nope }"}}
        )
        assert "nope" in json.dumps((await one.until("error", "e"))["payload"])
        missing = {"id": to_global_id("Allocation", 2**31 - 1)}
        await one.send(
            {"id": "m", "type": "subscribe", "payload": {"query": MISSING, "variables": missing}}
        )
        await one.until("complete", "m")

    assert one.kinds() >= {"connection_ack", "pong", "ping", "next", "error", "complete"}
    received = [frame for frames in sockets for frame in frames.received]
    binary = [frame for frame in received if not isinstance(frame, str)]
    assert binary == [], f"{len(binary)} of {len(received)} frames were binary: {binary}"
