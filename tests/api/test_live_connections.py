"""graphql-transport-ws in production: the server's heartbeat closes a silent connection
(4408), a user holds at most GPUCLOUD_WS_MAX_CONNECTIONS_PER_USER sockets across every API
process (4429 beyond), and a token that expires mid-stream is closed with 4401 at the next
check. Real `serve` and `worker` processes on loopback; revocation: test_live_revocation.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from schema.relay import from_global_id
from tests.support.identity import expire_token, sync_sign_up_with_token
from tests.support.stack import (
    Stack,
    bearer_gql,
    closed_with,
    connect_as,
    recv_json,
    served,
    text_json,
)

TOKENS = "{ viewer { id } apiTokens { edges { node { id } } } }"


@pytest.fixture(scope="module")
def quick(service_env, tmp_path_factory) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    """Two API processes that ping every 0.3 s, give 0.6 s for the pong, allow 2 sockets."""
    with served(service_env, tmp_path_factory.mktemp("live-quick"), "live_quick", apis=2,
                GPUCLOUD_WS_PING_INTERVAL_SECONDS="0.3", GPUCLOUD_WS_PONG_TIMEOUT_SECONDS="0.6",
                GPUCLOUD_WS_MAX_CONNECTIONS_PER_USER="2") as stack:  # fmt: skip
        yield stack


class Answering:
    """A client that answers every ping (as graphql-ws does) and keeps everything else."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.pings = 0
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for raw in self.ws:
            message = text_json(raw)
            if message["type"] == "ping":
                self.pings += 1
                await self.ws.send(json.dumps({"type": "pong"}))
            else:
                await self.inbox.put(message)

    async def close(self) -> None:
        await self.ws.close()
        await self._task


async def test_a_connection_that_answers_pings_stays_and_a_silent_one_is_closed(
    quick: Stack,
) -> None:
    token = await asyncio.to_thread(sync_sign_up_with_token, quick.http[0])
    ws, got = await connect_as(quick.ws[0], token)
    silent, got_too = await connect_as(quick.ws[1], token)
    assert (got, got_too) == ("connection_ack", "connection_ack")
    alive = Answering(ws)
    try:
        # The silent one sees a ping, does not answer, and is closed once the timeout passes.
        assert await recv_json(silent, 5) == {"type": "ping"}
        assert await closed_with(silent, answer_pings=False) == (4408, "Heartbeat timeout")
        metrics = (await asyncio.to_thread(httpx.get, f"{quick.http[1]}/metrics")).text
        assert 'gpucloud_ws_closed_total{reason="heartbeat_timeout"}' in metrics

        # The other answered every ping meanwhile and still serves operations.
        assert alive.pings >= 2
        await ws.send(json.dumps({"id": "q", "type": "subscribe",
                                  "payload": {"query": "{ viewer { email } }"}}))  # fmt: skip
        reply = await asyncio.wait_for(alive.inbox.get(), 5)
        assert reply["type"] == "next" and reply["payload"]["data"]["viewer"]["email"], reply
        assert (await asyncio.wait_for(alive.inbox.get(), 5))["type"] == "complete"
        assert ws.close_code is None
    finally:
        await alive.close()
        await silent.close()


async def test_the_per_user_limit_counts_every_process_and_frees_on_close(quick: Stack) -> None:
    token = await asyncio.to_thread(sync_sign_up_with_token, quick.http[0])
    other = await asyncio.to_thread(sync_sign_up_with_token, quick.http[0])
    first, a = await connect_as(quick.ws[0], token)
    second, b = await connect_as(quick.ws[1], token)
    third, c = await connect_as(quick.ws[0], token)
    someone_else, d = await connect_as(quick.ws[0], other)
    try:
        assert (a, b, c, d) == ("connection_ack", "connection_ack", 4429, "connection_ack")
        # A closed socket gives its slot back: the user may connect again.
        await second.close()
        for _ in range(50):
            again, e = await connect_as(quick.ws[0], token)
            await again.close()
            if e == "connection_ack":
                break
            await asyncio.sleep(0.1)
        assert e == "connection_ack"
        # A dead one gives it back too, once the heartbeat has closed it.
        reborn, f = await connect_as(quick.ws[1], token)
        assert f == "connection_ack"
        assert (await closed_with(reborn, answer_pings=False))[0] == 4408
        assert (await closed_with(first, answer_pings=False))[0] == 4408
        sockets = [await connect_as(quick.ws[i], token) for i in (0, 1)]
        assert [got for _, got in sockets] == ["connection_ack", "connection_ack"]
        for ws, _ in sockets:
            await ws.close()
    finally:
        for ws in (first, second, third, someone_else):
            await ws.close()


async def test_a_token_that_expires_mid_stream_is_closed_at_the_next_check(quick: Stack) -> None:
    token = await asyncio.to_thread(sync_sign_up_with_token, quick.http[0])
    ws, got = await connect_as(quick.ws[0], token)
    assert got == "connection_ack"
    listed = await asyncio.to_thread(bearer_gql, quick.http[0], token, TOKENS)
    _, key = from_global_id(listed["data"]["apiTokens"]["edges"][0]["node"]["id"])
    # Expiry has no event: only the periodic check (each ping interval) can notice it.
    await expire_token(quick.env["DATABASE_URL"], key)
    assert (await closed_with(ws, answer_pings=True, timeout=20))[0] == 4401
