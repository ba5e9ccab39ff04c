"""Websocket authentication against a real `gpucloud serve`: graphql-transport-ws
`connection_init` with a Bearer token, or the session cookie from an allowed Origin, or no
credential at all (an anonymous connection: public subscriptions only, see
test_anonymous_subscriptions.py). A credential sent and refused closes the connection with 4403.
Tokens never ride in query strings."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import websockets

from schema.relay import from_global_id
from tests.support.identity import (
    ALL_USER_SCOPES,
    CREATE_TOKEN,
    PASSWORD,
    SIGN_UP,
    body,
    expire_token,
    unique_email,
)
from tests.support.processes import Process, free_port, gpucloud, wait_ready
from tests.support.stack import recv_json

PROTOCOL = [websockets.Subprotocol("graphql-transport-ws")]
SESSION_COOKIE = "gpucloud_session"  # GPUCLOUD_COOKIE_SECURE=false in tests: no __Host- prefix
SUBSCRIBE = "subscription { catalogChanged { kind sku { name } } }"
VIEWER = "query { viewer { id email } }"
REVOKE = """mutation Revoke($id: ID!) { revokeApiToken(id: $id) {
  __typename ... on ApiTokenPayload { token { status } } ... on AccountError { code } } }"""
LOG_OUT = "mutation { logOut { __typename } }"
ACK = "connection_ack"
SPA_ORIGIN = "https://app.example"  # configured in GPUCLOUD_ALLOWED_ORIGINS


@dataclass(frozen=True)
class Stack:
    http: str
    ws: str
    env: dict[str, str]


@pytest.fixture(scope="module")
def stack(service_env, tmp_path_factory) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    logs = tmp_path_factory.mktemp("ws-auth")
    port = free_port()
    env = {**service_env, "GPUCLOUD_PORT": str(port), "GPUCLOUD_ALLOWED_ORIGINS": SPA_ORIGIN}
    api = Process(["serve"], env, logs / "api.log")
    worker = Process(["worker"], env, logs / "worker.log")  # relays catalog events to Redis
    try:
        http = f"http://127.0.0.1:{port}"
        wait_ready(http, api.proc, api.output)
        yield Stack(http, f"ws://127.0.0.1:{port}/graphql", env)
    finally:
        api.stop()
        worker.stop()


@dataclass
class User:
    """A browser signed in over HTTP to the real server."""

    http: httpx.AsyncClient
    csrf: str
    session: str  # the session cookie's value

    async def gql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = await self.http.post("/graphql", json=body(query, variables),
                                         headers={"x-csrf-token": self.csrf})  # fmt: skip
        return response.json()  # type: ignore[no-any-return]

    async def token(self, scopes: list[str] = ALL_USER_SCOPES) -> tuple[str, str]:
        """A new API token: (secret, global id)."""
        expires = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        made = await self.gql(CREATE_TOKEN, {"name": "ws", "scopes": scopes, "expiresAt": expires})
        payload = made["data"]["createApiToken"]
        assert payload["__typename"] == "CreateApiTokenPayload", payload
        return payload["secret"], payload["token"]["id"]


@pytest.fixture
async def user(stack: Stack) -> AsyncIterator[User]:
    async with httpx.AsyncClient(base_url=stack.http) as client:
        signed = await client.post(
            "/graphql", json=body(SIGN_UP, {"email": unique_email("ws"), "password": PASSWORD})
        )
        payload = signed.json()["data"]["signUp"]
        assert payload["__typename"] == "SessionPayload", payload
        session = client.cookies.get(SESSION_COOKIE)
        assert session, f"no {SESSION_COOKIE} cookie in {dict(client.cookies)}"
        yield User(client, payload["csrfToken"], session)


async def handshake(
    url: str,
    payload: dict[str, Any] | None = None,
    *,
    origin: str | None = None,
    cookie: str | None = None,
) -> str | int | None:
    """`connection_ack`, or the close code the server answered connection_init with."""
    headers = {"Cookie": f"{SESSION_COOKIE}={cookie}"} if cookie else {}
    init: dict[str, Any] = {"type": "connection_init"}
    if payload is not None:
        init["payload"] = payload
    try:
        async with websockets.connect(
            url,
            subprotocols=PROTOCOL,
            additional_headers=headers,
            origin=None if origin is None else websockets.Origin(origin),
        ) as ws:
            await ws.send(json.dumps(init))
            message = await recv_json(ws, 10)
            return message["type"]  # type: ignore[no-any-return]
    except websockets.exceptions.InvalidStatus as refused:
        return f"HTTP {refused.response.status_code}"  # refused before the upgrade
    except websockets.exceptions.ConnectionClosed as closed:
        return None if closed.rcvd is None else closed.rcvd.code


async def private_refused(url: str, payload: dict[str, Any] | None = None) -> str:
    """The code `notifications` (a private subscription) is refused with on a socket opened
    with `payload`: UNAUTHENTICATED on an anonymous one."""
    async with websockets.connect(url, subprotocols=PROTOCOL) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": payload or {}}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": ACK}
        query = "subscription { notifications { cursor } }"
        await ws.send(json.dumps({"id": "n", "type": "subscribe", "payload": {"query": query}}))
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
        errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
        return str(errors[0]["extensions"]["code"])


def bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


async def _add_sku(stack: Stack, name: str) -> None:
    added = await asyncio.to_thread(
        gpucloud, "sku", "add", "--name", name, "--gpu-model", "H100", "--gpu-count", "1",
        "--vcpus", "8", "--ram-gib", "64", "--disk-gib", "500", "--region", "us-east",
        "--price-minor", "249", "--currency", "USD", env=stack.env,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr


async def _subscription_delivers(
    stack: Stack, payload: dict[str, Any], *, origin: str | None = None, cookie: str | None = None
) -> dict[str, Any]:
    """Open a socket, subscribe to catalogChanged and add SKUs until one change arrives (the
    subscription registers asynchronously, so a change made too early is not seen); returns
    the first message for the subscription."""
    headers = {"Cookie": f"{SESSION_COOKIE}={cookie}"} if cookie else {}
    async with websockets.connect(
        stack.ws,
        subprotocols=PROTOCOL,
        additional_headers=headers,
        origin=None if origin is None else websockets.Origin(origin),
    ) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        assert await recv_json(ws, 10) == {"type": ACK}
        await ws.send(json.dumps({"id": "s", "type": "subscribe", "payload": {"query": SUBSCRIBE}}))
        for _ in range(15):
            await _add_sku(stack, f"ws-auth-{uuid.uuid4().hex[:8]}")
            try:
                while True:
                    message = await recv_json(ws, 3)
                    if message["type"] == "ping":
                        await ws.send(json.dumps({"type": "pong"}))
                        continue
                    return message  # type: ignore[no-any-return]
            except TimeoutError:
                continue
    raise AssertionError("the subscription delivered no catalog change")


# --- Bearer tokens in connection_init ---------------------------------------------------------


async def test_bearer_token_is_acked_and_its_subscription_runs(stack, user) -> None:
    secret, _ = await user.token(["COMPUTE_READ"])  # any scope: the subscription is public
    message = await _subscription_delivers(stack, bearer(secret))
    assert message["type"] == "next", message
    assert message["id"] == "s"
    assert "errors" not in message["payload"], message
    assert message["payload"]["data"]["catalogChanged"]["kind"] == "ADDED"


async def test_no_credentials_is_an_anonymous_connection(stack) -> None:
    assert await handshake(stack.ws) == ACK
    assert await handshake(stack.ws, {}) == ACK
    assert await handshake(stack.ws, {"authorization": ""}) == ACK
    assert await private_refused(stack.ws) == "UNAUTHENTICATED"


async def test_subscribe_before_init_is_refused(stack) -> None:
    async with websockets.connect(stack.ws, subprotocols=PROTOCOL) as ws:
        await ws.send(json.dumps({"id": "s", "type": "subscribe", "payload": {"query": SUBSCRIBE}}))
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401  # graphql-transport-ws: Unauthorized


@pytest.mark.parametrize(
    "value",
    [
        "Bearer gpc_" + "A" * 43,  # well-formed, unknown
        "Bearer not-a-token",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "gpc_" + "A" * 43,  # no scheme
    ],
)
async def test_invalid_bearer_is_closed_with_4403(stack, value) -> None:
    assert await handshake(stack.ws, {"authorization": value}) == 4403


async def test_revoked_token_is_closed_with_4403(stack, user) -> None:
    secret, gid = await user.token()
    assert await handshake(stack.ws, bearer(secret)) == ACK
    revoked = await user.gql(REVOKE, {"id": gid})
    assert revoked["data"]["revokeApiToken"]["token"]["status"] == "REVOKED", revoked
    # The serving process applied the revocation on commit: no cached principal survives it.
    assert await handshake(stack.ws, bearer(secret)) == 4403

    never_used, gid = await user.token()
    assert (await user.gql(REVOKE, {"id": gid}))["data"]["revokeApiToken"]["token"]
    assert await handshake(stack.ws, bearer(never_used)) == 4403


async def test_expired_token_is_closed_with_4403(stack, user) -> None:
    secret, gid = await user.token()
    _, key = from_global_id(gid)
    await expire_token(stack.env["DATABASE_URL"], key)
    assert await handshake(stack.ws, bearer(secret)) == 4403
    async with httpx.AsyncClient(base_url=stack.http) as client:
        over_http = await client.post("/graphql", json=body(VIEWER),
                                      headers={"authorization": f"Bearer {secret}"})  # fmt: skip
    assert over_http.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_session_secret_is_not_a_bearer_token(stack, user) -> None:
    assert await handshake(stack.ws, bearer(user.session)) == 4403


# --- The session cookie, only from an allowed Origin ------------------------------------------


async def test_session_cookie_from_the_public_origin_is_acked(stack, user) -> None:
    assert await handshake(stack.ws, origin=stack.http, cookie=user.session) == ACK
    message = await _subscription_delivers(stack, {}, origin=stack.http, cookie=user.session)
    assert message["type"] == "next", message
    assert "errors" not in message["payload"], message


async def test_session_cookie_from_a_configured_origin_is_acked(stack, user) -> None:
    """GPUCLOUD_ALLOWED_ORIGINS (an SPA served elsewhere) may open sockets with the cookie."""
    assert await handshake(stack.ws, origin=SPA_ORIGIN, cookie=user.session) == ACK


@pytest.mark.parametrize(
    ("origin", "refused"),
    [
        # Strawberry lets these through the handshake (no Origin: not a browser; same host and
        # port); the app's own check then refuses the cookie in connection_init.
        (None, 4403),
        ("https://127.0.0.1:{port}", 4403),  # same host and port, other scheme
        # Cross-origin: Strawberry refuses the handshake itself, before any hook runs.
        ("https://evil.example", "HTTP 403"),
        ("null", "HTTP 403"),
        ("http://127.0.0.1:{port}.evil.example", "HTTP 403"),
        ("http://localhost:{port}", "HTTP 403"),
        ("https://app.example.evil.example", "HTTP 403"),
    ],
)
async def test_session_cookie_from_another_origin_is_refused(stack, user, origin, refused) -> None:
    port = stack.http.rsplit(":", 1)[1]
    sent = None if origin is None else origin.format(port=port)
    assert await handshake(stack.ws, origin=sent, cookie=user.session) == refused
    # The same cookie is good: only where the socket was opened from differs.
    assert await handshake(stack.ws, origin=stack.http, cookie=user.session) == ACK


async def test_ended_session_cookie_is_closed_with_4403(stack, user) -> None:
    assert await handshake(stack.ws, origin=stack.http, cookie=user.session) == ACK
    ended = await user.gql(LOG_OUT)
    assert ended["data"]["logOut"]["__typename"] == "LogOutPayload", ended
    assert await handshake(stack.ws, origin=stack.http, cookie=user.session) == 4403


async def test_logging_out_closes_the_open_socket_with_4401(stack, user) -> None:
    """The socket outlives connection_init: logging out ends it at once (4401, which
    graphql-ws clients do not retry), not at its next event or heartbeat (20 s here)."""
    async with websockets.connect(
        stack.ws, subprotocols=PROTOCOL, origin=websockets.Origin(stack.http),
        additional_headers={"Cookie": f"{SESSION_COOKIE}={user.session}"},
    ) as ws:  # fmt: skip
        await ws.send(json.dumps({"type": "connection_init"}))
        assert await recv_json(ws, 10) == {"type": ACK}
        await ws.send(json.dumps({"id": "s", "type": "subscribe", "payload": {"query": SUBSCRIBE}}))
        ended = await user.gql(LOG_OUT)
        assert ended["data"]["logOut"]["__typename"] == "LogOutPayload", ended
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401


async def test_explicit_bad_token_does_not_fall_back_to_the_cookie(stack, user) -> None:
    payload = {"authorization": "Bearer gpc_" + "A" * 43}
    assert await handshake(stack.ws, payload, origin=stack.http, cookie=user.session) == 4403


# --- Never from the URL -----------------------------------------------------------------------

QUERY_PARAMS = ["token", "access_token", "api_key", "authorization", "bearer"]


def _with(url: str, param: str, secret: str) -> str:
    value = f"Bearer%20{secret}" if param == "authorization" else secret
    return f"{url}?{param}={value}"


async def test_token_in_http_query_string_is_ignored(stack, user) -> None:
    secret, _ = await user.token()
    async with httpx.AsyncClient(base_url=stack.http) as client:  # no cookies: only the URL
        by_header = await client.post("/graphql", json=body(VIEWER),
                                      headers={"authorization": f"Bearer {secret}"})  # fmt: skip
        assert by_header.json()["data"]["viewer"]["id"], by_header.text  # the token is good
        for param in QUERY_PARAMS:
            response = await client.post(_with("/graphql", param, secret), json=body(VIEWER))
            result = response.json()
            assert result.get("data") is None, (param, result)
            assert result["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED", (param, result)


async def test_token_in_websocket_query_string_is_ignored(stack, user) -> None:
    secret, _ = await user.token()
    assert await handshake(stack.ws, bearer(secret)) == ACK  # the token is good
    for param in QUERY_PARAMS:
        # The token in the URL is not read: the connection is anonymous, and refused what
        # the token would have allowed.
        url = _with(stack.ws, param, secret)
        assert await private_refused(url) == "UNAUTHENTICATED", param
