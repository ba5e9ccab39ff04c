"""A live socket whose credential is revoked or suspended is closed with 4401 at once, through
Redis when another process made the change: the heartbeat here is 60 s, so only the identity
event can explain a prompt close. (Its own module: two stacks on one database at once would
let the other stack's worker relay this one's events into its own Redis namespace.)"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest

from tests.support.identity import (
    LOG_IN,
    PASSWORD,
    body,
    sync_sign_up_with_token,
    unique_email,
)
from tests.support.processes import gpucloud
from tests.support.stack import Stack, bearer_gql, closed_with, connect_as, recv_json, served

NOTIFICATIONS = "subscription { notifications { seq type } }"
TOKENS = "{ viewer { id } apiTokens { edges { node { id } } } }"
REVOKE = 'mutation { revokeApiToken(id: "%s") { __typename } }'
SUSPEND = """mutation S($id: ID!) { suspendUser(input: {userId: $id, reason: "abuse"}) {
  __typename } }"""


@pytest.fixture(scope="module")
def slow(service_env, tmp_path_factory) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    """Two API processes with a 60 s heartbeat: a prompt close can only come from an event."""
    with served(service_env, tmp_path_factory.mktemp("live-slow"), "live_slow", apis=2,
                GPUCLOUD_WS_PING_INTERVAL_SECONDS="60") as stack:  # fmt: skip
        yield stack


async def test_a_token_revoked_through_one_process_closes_its_socket_on_the_other(
    slow: Stack,
) -> None:
    token = await asyncio.to_thread(sync_sign_up_with_token, slow.http[0])
    ws, got = await connect_as(slow.ws[1], token)
    assert got == "connection_ack"
    await ws.send(json.dumps({"id": "1", "type": "subscribe",
                              "payload": {"query": NOTIFICATIONS}}))  # fmt: skip
    listed = await asyncio.to_thread(bearer_gql, slow.http[0], token, TOKENS)
    token_id = listed["data"]["apiTokens"]["edges"][0]["node"]["id"]
    revoked = await asyncio.to_thread(bearer_gql, slow.http[0], token, REVOKE % token_id)
    assert revoked["data"]["revokeApiToken"]["__typename"] == "ApiTokenPayload", revoked
    # Well before the 60 s heartbeat: the identity event, relayed through Redis, did it.
    code, reason = await closed_with(ws, answer_pings=True, timeout=20)
    assert code == 4401
    assert "Unauthorized" in reason


async def test_suspending_a_user_closes_every_socket_of_theirs(slow: Stack) -> None:
    admin_email = unique_email("live-admin")
    made = await asyncio.to_thread(gpucloud, "admin", "create", "--email", admin_email,
                                   "--password-stdin", env=slow.env, stdin=PASSWORD + "\n")  # fmt: skip
    assert made.returncode == 0, made.stderr
    async with httpx.AsyncClient(base_url=slow.http[0]) as admin:
        signed = (await admin.post("/graphql", json=body(
            LOG_IN, {"email": admin_email, "password": PASSWORD}))).json()  # fmt: skip
        csrf = signed["data"]["logIn"]["csrfToken"]
        token = await asyncio.to_thread(sync_sign_up_with_token, slow.http[0])
        sockets = [await connect_as(slow.ws[i], token) for i in (0, 1)]
        assert [got for _, got in sockets] == ["connection_ack", "connection_ack"]
        other = await asyncio.to_thread(sync_sign_up_with_token, slow.http[0])
        bystander, got = await connect_as(slow.ws[1], other)
        assert got == "connection_ack"
        viewer = await asyncio.to_thread(bearer_gql, slow.http[0], token, TOKENS)
        user_id = viewer["data"]["viewer"]["id"]
        suspended = (await admin.post("/graphql", headers={"x-csrf-token": csrf},
                                      json=body(SUSPEND, {"id": user_id}))).json()  # fmt: skip
        assert suspended["data"]["suspendUser"]["__typename"] == "UserPayload", suspended
        for ws, _ in sockets:
            assert (await closed_with(ws, answer_pings=True, timeout=20))[0] == 4401
        # Someone else's socket on the same process is untouched.
        await bystander.send(json.dumps({"id": "q", "type": "subscribe",
                                         "payload": {"query": "{ viewer { email } }"}}))  # fmt: skip
        reply = await recv_json(bystander, 10)
        assert reply["type"] == "next" and reply["payload"]["data"]["viewer"]["email"], reply
        await bystander.close()
