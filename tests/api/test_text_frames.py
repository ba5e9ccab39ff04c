"""Every message the server sends on /graphql is a text websocket frame.

graphql-transport-ws is JSON text: graphql-ws closes with 4004 on a binary frame, gql raises
"Binary data received", a browser hands the page a Blob. This test reads raw frames (the
`websockets` library returns str for a text frame, bytes for a binary one) from a real API
process and worker through every kind of server message: connection_ack, pong, ping, next,
error and complete."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from domain.notifications.notices import NoticeType
from domain.notifications.services import notify
from domain.ports import UnitOfWork
from schema.relay import from_global_id, to_global_id
from tests.support.identity import sync_sign_up_with_token
from tests.support.stack import Stack, bearer_gql, served

PROTOCOL = [websockets.Subprotocol("graphql-transport-ws")]
NOTIFICATIONS = "subscription { notifications { cursor type } }"
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
    """Every frame the server sent, as received; pings are answered."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.received: list[str | bytes] = []

    async def until(self, kind: str, op: str | None = None) -> dict[str, Any]:
        while True:
            frame = await asyncio.wait_for(self.ws.recv(), 30)
            self.received.append(frame)
            message: dict[str, Any] = json.loads(frame)  # bytes too: judged after, all together
            if message["type"] == "ping":
                await self.ws.send(json.dumps({"type": "pong"}))
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

    async with websockets.connect(stack.ws[0], subprotocols=PROTOCOL) as ws:
        frames = Frames(ws)
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
        )
        await frames.until("connection_ack")
        await ws.send(json.dumps({"type": "ping"}))
        await frames.until("pong")
        await frames.until("ping")  # the server's heartbeat

        await ws.send(
            json.dumps({"id": "n", "type": "subscribe", "payload": {"query": NOTIFICATIONS}})
        )
        await asyncio.sleep(0.5)  # subscribed before the notification is made
        async with uow() as u:
            await notify(u, [user_id], NoticeType.PAYMENT_SUCCEEDED, {"n": 1})
            await u.commit()
        assert (await frames.until("next", "n"))["payload"]["data"]["notifications"]["type"] == (
            "PAYMENT_SUCCEEDED"
        )

        await ws.send(
            json.dumps(
                {"id": "e", "type": "subscribe", "payload": {"query": "subscription { nope }"}}
            )
        )
        assert "nope" in json.dumps((await frames.until("error", "e"))["payload"])

        missing = to_global_id("Allocation", 2**31 - 1)
        await ws.send(
            json.dumps(
                {
                    "id": "m",
                    "type": "subscribe",
                    "payload": {"query": MISSING, "variables": {"id": missing}},
                }
            )
        )
        await frames.until("complete", "m")

    assert frames.kinds() >= {"connection_ack", "pong", "ping", "next", "error", "complete"}
    binary = [frame for frame in frames.received if not isinstance(frame, str)]
    assert binary == [], f"{len(binary)} of {len(frames.received)} frames were binary: {binary}"
