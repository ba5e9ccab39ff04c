"""Public data is public over websockets too: a `connection_init` with no credential is
acknowledged as anonymous, `catalogChanged` delivers to it, and every subscription over private
data refuses it with UNAUTHENTICATED (the permission declared on the field decides, as over
HTTP). Anonymous sockets hold a slot per client IP across every API process
(GPUCLOUD_WS_MAX_ANONYMOUS_PER_IP, 4429 beyond) and get the same heartbeat as signed-in ones.
Real `serve` (two) and `worker` processes on loopback."""

from __future__ import annotations

import asyncio
import json
import shlex
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
import websockets

from tests.support.identity import sync_sign_up_with_token
from tests.support.processes import gpucloud
from tests.support.stack import Stack, closed_with, connect_as, next_message, served

PROTOCOL = [websockets.Subprotocol("graphql-transport-ws")]
CATALOG = "subscription { catalogChanged { kind sku { name } } }"
PRIVATE = {
    "notifications": "subscription { notifications { cursor } }",
    "allocationUpdated": 'subscription { allocationUpdated(id: "QWxsb2NhdGlvbjox") { id } }',
    "fleetEvents": "subscription { fleetEvents { __typename } }",
}
PER_IP = 2
SKU = shlex.split(
    "--gpu-model H100 --gpu-count 1 --vcpus 8 --ram-gib 64 --disk-gib 500 --region us-east "
    "--price-minor 249 --currency USD"
)


@pytest.fixture(scope="module")
def stack(service_env, tmp_path_factory) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    with served(
        service_env,
        tmp_path_factory.mktemp("anonymous"),
        "anonymous",
        apis=2,
        GPUCLOUD_WS_PING_INTERVAL_SECONDS="0.5",
        GPUCLOUD_WS_PONG_TIMEOUT_SECONDS="1",
        GPUCLOUD_WS_MAX_ANONYMOUS_PER_IP=str(PER_IP),
    ) as stack:
        yield stack


async def anonymous(url: str, payload: dict[str, Any] | None = None) -> tuple[Any, str | int]:
    """A socket with no credential, and what connection_init got: the ack or a close code."""
    ws = await websockets.connect(url, subprotocols=PROTOCOL)
    init: dict[str, Any] = {"type": "connection_init"}
    if payload is not None:
        init["payload"] = payload
    await ws.send(json.dumps(init))
    try:
        return ws, json.loads(await asyncio.wait_for(ws.recv(), 10))["type"]
    except websockets.exceptions.ConnectionClosed as closed:
        assert closed.rcvd is not None
        return ws, closed.rcvd.code


async def no_anonymous_slots_held(stack: Stack) -> None:
    """Waits until the sockets of earlier tests have given their per-IP slots back (the server
    releases a slot once it has seen the close)."""
    client = aioredis.Redis.from_url(stack.env["REDIS_URL"])
    key = f"{stack.env['GPUCLOUD_REDIS_NAMESPACE']}:ws:ip:127.0.0.1"
    try:
        async with asyncio.timeout(15):
            while await client.zcard(key):
                await asyncio.sleep(0.05)
    finally:
        await client.aclose()


async def test_an_anonymous_socket_receives_catalog_changes(stack: Stack) -> None:
    for payload in (None, {}, {"authorization": ""}):  # nothing sent, in each shape
        ws, got = await anonymous(stack.ws[1], payload)
        assert got == "connection_ack"
        await ws.close()
    ws, got = await anonymous(stack.ws[0])
    assert got == "connection_ack"
    try:
        await ws.send(json.dumps({"id": "c", "type": "subscribe", "payload": {"query": CATALOG}}))
        name = f"anon-{uuid.uuid4().hex[:8]}"
        # The subscription registers asynchronously: add SKUs until one change arrives. The
        # reader answers pings meanwhile (each `sku add` is a process start).
        reader = asyncio.create_task(next_message(ws, timeout=90))
        for attempt in range(15):
            sku = f"{name}-{attempt}"
            added = await asyncio.to_thread(
                gpucloud, "sku", "add", "--name", sku, *SKU, env=stack.env
            )
            assert added.returncode == 0, added.stderr
            done, _ = await asyncio.wait({reader}, timeout=3)
            if done:
                break
        message = await reader
        assert message["type"] == "next" and message["id"] == "c", message
        assert "errors" not in message["payload"], message
        change = message["payload"]["data"]["catalogChanged"]
        assert change["kind"] == "ADDED" and change["sku"]["name"].startswith(name)
    finally:
        await ws.close()


@pytest.mark.parametrize("field", sorted(PRIVATE))
async def test_private_subscriptions_refuse_an_anonymous_subscriber(stack, field) -> None:
    ws, got = await anonymous(stack.ws[0])
    assert got == "connection_ack"
    try:
        await ws.send(
            json.dumps({"id": "p", "type": "subscribe", "payload": {"query": PRIVATE[field]}})
        )
        message = await next_message(ws, timeout=10)
        errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
        assert message["id"] == "p" and message["type"] in ("error", "next"), message
        assert [e["extensions"]["code"] for e in errors] == ["UNAUTHENTICATED"], message
        assert "Traceback" not in json.dumps(message)
        # A refused operation is not a refused socket: public data still flows on it.
        await ws.send(
            json.dumps(
                {
                    "id": "q",
                    "type": "subscribe",
                    "payload": {"query": "{ skus(first: 1) { edges { cursor } } }"},
                }
            )
        )
        while (reply := await next_message(ws, timeout=10))["id"] != "q":
            pass
        assert reply["type"] == "next" and "errors" not in reply["payload"], reply
    finally:
        await ws.close()


async def test_anonymous_sockets_are_limited_per_ip_across_processes(stack: Stack) -> None:
    await no_anonymous_slots_held(stack)
    first, a = await anonymous(stack.ws[0])
    second, b = await anonymous(stack.ws[1])
    third, c = await anonymous(stack.ws[0])
    token = await asyncio.to_thread(sync_sign_up_with_token, stack.http[0])
    signed_in, d = await connect_as(stack.ws[1], token)  # counted per user, not per IP
    try:
        assert (a, b, c, d) == ("connection_ack", "connection_ack", 4429, "connection_ack")
        assert third.close_reason == "Too many connections"
        # A closed socket gives its slot back, whichever process held it.
        await second.close()
        for _ in range(100):
            again, e = await anonymous(stack.ws[0])
            await again.close()
            if e == "connection_ack":
                break
            await asyncio.sleep(0.05)
        assert e == "connection_ack"
    finally:
        for ws in (first, second, third, signed_in):
            await ws.close()


async def test_an_anonymous_socket_gets_the_heartbeat(stack: Stack) -> None:
    ws, got = await anonymous(stack.ws[1])
    assert got == "connection_ack"
    try:
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "ping"}
        assert await closed_with(ws, answer_pings=False) == (4408, "Heartbeat timeout")
    finally:
        await ws.close()


async def test_anonymous_sockets_can_be_turned_off(service_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with served(
        service_env, tmp_path, "anonymous_off", GPUCLOUD_WS_MAX_ANONYMOUS_PER_IP="0"
    ) as off:
        ws, got = await anonymous(off.ws[0])
        await ws.close()
        assert got == 4403
        token = await asyncio.to_thread(sync_sign_up_with_token, off.http[0])
        signed_in, got = await connect_as(off.ws[0], token)
        await signed_in.close()
        assert got == "connection_ack"
