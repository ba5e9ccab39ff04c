"""Subscriptions over graphql-transport-ws against real processes: CLI -> outbox -> worker ->
Redis pub/sub -> websocket."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import httpx
import pytest
import websockets

from tests.support.identity import sync_sign_up_with_token
from tests.support.processes import Process, free_port, gpucloud, wait_ready
from tests.support.stack import next_message, recv_json

SUBSCRIBE = "subscription { catalogChanged { kind sku { name gpuModel status } } }"


@pytest.fixture(scope="module")
def stack(service_env, tmp_path_factory) -> Iterator[dict[str, object]]:  # type: ignore[no-untyped-def]
    logs = tmp_path_factory.mktemp("stack")
    port = free_port()
    env = {**service_env, "GPUCLOUD_PORT": str(port)}
    api = Process(["serve"], env, logs / "api.log")
    worker = Process(["worker"], env, logs / "worker.log")
    try:
        wait_ready(f"http://127.0.0.1:{port}", api.proc, api.output)
        http = f"http://127.0.0.1:{port}"
        yield {"ws": f"ws://127.0.0.1:{port}/graphql", "http": http, "env": env, "api": api,
               "worker": worker, "token": sync_sign_up_with_token(http)}  # fmt: skip
    finally:
        api.stop()
        worker.stop()


async def _open(stack: dict[str, object]) -> websockets.ClientConnection:
    ws = await websockets.connect(
        str(stack["ws"]), subprotocols=[websockets.Subprotocol("graphql-transport-ws")]
    )
    init = {"type": "connection_init", "payload": {"authorization": f"Bearer {stack['token']}"}}
    await ws.send(json.dumps(init))
    assert await recv_json(ws, 10) == {"type": "connection_ack"}
    return ws


async def _next_payload(ws: websockets.ClientConnection, timeout: float = 20) -> dict[str, object]:
    return await next_message(ws, timeout)


def _catalog_names(http: str) -> list[str]:
    query = {"query": "{ skus(first: 100) { edges { node { name } } } }"}
    edges = httpx.post(f"{http}/graphql", json=query).json()["data"]["skus"]["edges"]
    return [e["node"]["name"] for e in edges]


async def test_cli_change_reaches_a_websocket_subscriber(stack) -> None:  # type: ignore[no-untyped-def]
    ws = await _open(stack)
    before = await asyncio.to_thread(_catalog_names, stack["http"])  # now cached by the API
    assert "ws-live" not in before
    try:
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIBE}}))
        await asyncio.sleep(1.0)  # the subscription is registered before the change is made
        added = await asyncio.to_thread(
            gpucloud, "sku", "add", "--name", "ws-live", "--gpu-model", "h200", "--gpu-count", "2",
            "--vcpus", "32", "--ram-gib", "256", "--disk-gib", "2000", "--region", "eu-west",
            "--price-minor", "798", "--currency", "USD", env=stack["env"],
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        message = await _next_payload(ws)
        assert message == {"id": "1", "type": "next", "payload": {"data": {"catalogChanged": {
            "kind": "ADDED", "sku": {"name": "ws-live", "gpuModel": "H200", "status": "ACTIVE"}}}}}  # fmt: skip
        # The same event invalidated the API's cached catalog page.
        for _ in range(50):
            if "ws-live" in await asyncio.to_thread(_catalog_names, stack["http"]):
                break
            await asyncio.sleep(0.1)
        assert "ws-live" in await asyncio.to_thread(_catalog_names, stack["http"])
        retired = await asyncio.to_thread(gpucloud, "sku", "retire", "ws-live", env=stack["env"])
        assert retired.returncode == 0, retired.stderr
        message = await _next_payload(ws)
        assert message["payload"]["data"]["catalogChanged"]["kind"] == "RETIRED"  # type: ignore[index]
    finally:
        await ws.close()


async def test_only_graphql_transport_ws_is_spoken(stack) -> None:  # type: ignore[no-untyped-def]
    legacy = [websockets.Subprotocol("graphql-ws")]
    with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
        async with websockets.connect(stack["ws"], subprotocols=legacy) as ws:
            await ws.send(json.dumps({"type": "connection_init"}))
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4406  # "Subprotocol not acceptable"


async def test_bad_subscription_document_is_an_error_message(stack) -> None:  # type: ignore[no-untyped-def]
    ws = await _open(stack)
    try:
        await ws.send(json.dumps({"id": "9", "type": "subscribe",
                                  "payload": {"query": "subscription { nope }"}}))  # fmt: skip
        message = await _next_payload(ws)
        assert message["type"] == "error"
        assert "nope" in json.dumps(message["payload"])
        assert "Traceback" not in json.dumps(message)
    finally:
        await ws.close()


def test_api_logs_are_json_with_request_ids(stack) -> None:  # type: ignore[no-untyped-def]
    response = httpx.post(
        f"{stack['http']}/graphql", json={"query": "{ skus { edges { cursor } } }"}
    )
    request_id = response.headers["x-request-id"]

    def mine() -> list[dict[str, object]]:
        lines = [json.loads(line) for line in stack["api"].output().splitlines() if line.strip()]
        return [line for line in lines if line.get("request_id") == request_id]

    # The access line is written once the response has gone out: give the process a moment.
    for _ in range(50):
        if any(line["event"] == "http.request" for line in mine()):
            break
        time.sleep(0.1)
    assert any(line["event"] == "http.request" and line["status"] == 200 for line in mine())


def test_metrics_report_the_workers_jobs(stack) -> None:  # type: ignore[no-untyped-def]
    added = gpucloud(
        "sku", "add", "--name", "metrics-probe", "--gpu-model", "H100", "--gpu-count", "1",
        "--vcpus", "8", "--ram-gib", "64", "--disk-gib", "500", "--region", "us-east",
        "--price-minor", "249", "--currency", "USD", env=stack["env"],
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    line = 'gpucloud_jobs_total{actor="outbox_relay",outcome="published"}'
    for _ in range(100):
        text = httpx.get(f"{stack['http']}/metrics").text
        if line in text and "gpucloud_outbox_unpublished 0.0" in text:
            break
        time.sleep(0.1)
    assert line in text and "gpucloud_outbox_unpublished 0.0" in text
    count = float(next(x for x in text.splitlines() if x.startswith(line)).split()[-1])
    assert count >= 1


def _bearer_gql(stack: dict[str, object], token: str, query: str) -> dict[str, object]:
    response = httpx.post(f"{stack['http']}/graphql", json={"query": query},
                          headers={"authorization": f"Bearer {token}"})  # fmt: skip
    return response.json()  # type: ignore[no-any-return]


async def test_a_revoked_token_ends_its_open_subscription(stack) -> None:  # type: ignore[no-untyped-def]
    token = await asyncio.to_thread(sync_sign_up_with_token, str(stack["http"]))
    ws = await _open({**stack, "token": token})
    try:
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIBE}}))
        await asyncio.sleep(1.0)
        listed = _bearer_gql(stack, token, "{ apiTokens { edges { node { id } } } }")
        token_id = listed["data"]["apiTokens"]["edges"][0]["node"]["id"]  # type: ignore[index]
        revoked = _bearer_gql(stack, token, 'mutation { revokeApiToken(id: "%s") { __typename } }'
                              % token_id)  # fmt: skip
        assert revoked["data"]["revokeApiToken"]["__typename"] == "ApiTokenPayload"  # type: ignore[index]
        added = await asyncio.to_thread(
            gpucloud, "sku", "add", "--name", "after-revoke", "--gpu-model", "h100",
            "--gpu-count", "1", "--vcpus", "8", "--ram-gib", "64", "--disk-gib", "100",
            "--region", "eu-west", "--price-minor", "100", "--currency", "USD", env=stack["env"],
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        # The revocation closes the socket itself (4401, final for graphql-ws clients), not
        # only the next event: events of earlier tests may still arrive first, but never the
        # one made after the revocation.
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            while True:
                message = await _next_payload(ws)
                assert "after-revoke" not in json.dumps(message), message
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4401, closed.value.rcvd
    finally:
        await ws.close()
