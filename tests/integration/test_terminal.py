"""The browser terminal end to end: the real app served by uvicorn on loopback, a real websocket
client, a RUNNING allocation on a real OpenSSH sshd that trusts the platform CA, real Redis and
PostgreSQL.

Tickets are refused when reused, expired, for another user's allocation or from another Origin;
a terminal types a command and reads its output as the allocation's own user, resizes its PTY,
and is cut when the allocation stops. Stock xterm.js (`@xterm/headless` + `@xterm/addon-attach`
from node_modules, run by node) types into it with text and with binary frames; JSON control
messages exist only in the `gpucloud.terminal.v1` subprotocol. These make real Linux users (as
root), deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
import uvicorn
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from domain.audit.records import RequestMeta
from domain.compute.allocation_services import stop_allocation
from domain.compute.allocations import Allocation
from domain.compute.terminals import TerminalTicket
from domain.errors import ServiceUnavailable
from domain.identity.accounts import AccountStatus
from domain.identity.admin import set_status
from domain.identity.principal import SYSTEM
from domain.ports import UnitOfWork
from gpucloud import terminal as terminal_endpoint
from gpucloud.app import create_app
from gpucloud.terminal import CONTROL_PROTOCOL
from infra.pubsub import publish
from infra.settings import Settings
from infra.slots import RedisSlots
from infra.terminal_tickets import RedisTicketStore
from schema.relay import from_global_id, to_global_id
from tests.support.compute import signed_in
from tests.support.identity import LOG_IN, PASSWORD, SIGN_UP, body, unique_email
from tests.support.processes import free_port
from tests.support.terminal_node import h200_node, running_allocation

META = RequestMeta(request_id="test")
APP = "https://app.test"
OTHER = "https://other.test"  # also one of the platform's origins
EVIL = "https://evil.test"  # not one
CONTROL = [Subprotocol(CONTROL_PROTOCOL)]  # text frames are JSON control messages
XTERM = Path(__file__).with_name("xterm_attach.cjs")  # stock xterm.js, run by node
Uow = Callable[[], UnitOfWork]

TICKET = """mutation T($id: ID!) { createTerminalTicket(allocationId: $id) {
  __typename
  ... on TerminalTicketPayload { ticket expiresAt url }
  ... on TerminalError { code message field }
} }"""


@dataclass
class Browser:
    client: httpx.AsyncClient
    user_id: int
    csrf: str
    email: str

    async def gql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = await self.client.post("/graphql", json=body(query, variables),
                                          headers={"x-csrf-token": self.csrf})  # fmt: skip
        return response.json()["data"]  # type: ignore[no-any-return]

    async def ticket(self, allocation_id: int, origin: str | None = APP) -> dict[str, Any]:
        headers = {"x-csrf-token": self.csrf}
        if origin is not None:
            headers["origin"] = origin
        response = await self.client.post(
            "/graphql",
            json=body(TICKET, {"id": to_global_id("Allocation", allocation_id)}),
            headers=headers,
        )
        return response.json()["data"]["createTerminalTicket"]  # type: ignore[no-any-return]


@dataclass
class World:
    base: str  # http://127.0.0.1:port
    namespace: str
    redis: aioredis.Redis
    ada: Browser
    bob: Browser
    allocation: Allocation
    stop: Callable[[], Any]
    app: Any

    def url(self, ticket: str, **size: int) -> str:
        extra = "".join(f"&{k}={v}" for k, v in size.items())
        return f"{self.base.replace('http', 'ws')}/terminal?ticket={ticket}{extra}"


async def _serve(app: Any) -> tuple[uvicorn.Server, asyncio.Task[None], str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on", ws="websockets-sansio"))  # fmt: skip
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.05)
    assert server.started
    return server, task, f"http://127.0.0.1:{port}"


async def _browser(stack: contextlib.AsyncExitStack, base: str) -> Browser:
    client = await stack.enter_async_context(httpx.AsyncClient(base_url=base))
    email = unique_email()
    signed = await client.post("/graphql", json=body(SIGN_UP, {"email": email,
                                                               "password": PASSWORD}))  # fmt: skip
    payload = signed.json()["data"]["signUp"]
    return Browser(client, from_global_id(payload["user"]["id"], "id")[1], payload["csrfToken"],
                   email)  # fmt: skip


@pytest.fixture
async def world(uow: Uow, settings: Settings, redis_namespace: str) -> AsyncIterator[World]:
    async with contextlib.AsyncExitStack() as stack:
        node = await h200_node(stack, uow, settings)
        served = replace(
            settings, fleet=node.fleet, compute=node.compute, allowed_origins=(APP, OTHER)
        )
        app = create_app(served)
        server, task, base = await _serve(app)

        async def shutdown() -> None:
            server.should_exit = True
            await task

        stack.push_async_callback(shutdown)
        ada, bob = await _browser(stack, base), await _browser(stack, base)
        user = signed_in(ada.user_id)
        running = await running_allocation(uow, node, ada.user_id, "t1")

        async def stop() -> Allocation:
            return await stop_allocation(node.kit, user, running.id, META)

        client = aioredis.Redis.from_url(settings.redis_url)
        stack.push_async_callback(client.aclose)
        yield World(base, redis_namespace, client, ada, bob, running, stop, app)


async def _relay(engine: AsyncEngine, world: World) -> None:
    """What the worker's outbox relay does: publish the allocation events to every API process."""
    async with engine.begin() as conn:
        rows = (await conn.execute(text(
            "SELECT id, topic, name, payload FROM outbox WHERE published_at IS NULL ORDER BY id"
        ))).all()  # fmt: skip
        await conn.execute(text("UPDATE outbox SET published_at = now()"))
    for row in rows:
        await publish(world.redis, world.namespace, row.topic,
                      {"id": row.id, "topic": row.topic, "name": row.name, "payload": row.payload})  # fmt: skip


async def _read_until(ws: ClientConnection, needle: bytes, seen: bytearray) -> None:
    async with asyncio.timeout(15):
        while needle not in seen:
            frame = await ws.recv()
            assert isinstance(frame, bytes), frame
            seen += frame


async def _closed(ws: ClientConnection) -> tuple[int, str]:
    async with asyncio.timeout(15):
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await ws.recv()
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def _refused(
    url: str, origin: str = APP, subprotocols: list[Subprotocol] | None = None
) -> tuple[int, str]:
    async with connect(url, origin=origin, subprotocols=subprotocols) as ws:  # type: ignore[arg-type]
        return await _closed(ws)


async def _xterm(
    url: str, keys: str, via: str, expect: list[str], cols: int = 80, rows: int = 24
) -> dict[str, Any]:
    """Stock xterm.js attached to `url` types `keys` (`via` "text": keystrokes through onData;
    "binary": through onBinary) and waits for every `expect` on its screen."""
    node = shutil.which("node")
    assert node is not None, "node is needed to run xterm.js (make node)"
    args: dict[str, Any] = {"url": url, "origin": APP, "keys": keys, "via": via}
    args |= {"expect": expect, "cols": cols, "rows": rows}
    pipe = asyncio.subprocess.PIPE
    proc = await asyncio.create_subprocess_exec(
        node, str(XTERM), orjson.dumps(args).decode(), stdout=pipe, stderr=pipe
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == 0, (out.decode(), err.decode())
    return orjson.loads(out.splitlines()[-1])  # type: ignore[no-any-return]


async def test_a_terminal_round_trip_resize_and_cut_when_the_allocation_stops(
    world: World, engine: AsyncEngine
) -> None:
    issued = await world.ada.ticket(world.allocation.id)
    assert issued["__typename"] == "TerminalTicketPayload", issued
    assert issued["url"] == f"/terminal?ticket={issued['ticket']}"
    url = world.url(issued["ticket"], cols=80, rows=24)
    async with connect(url, origin=APP, subprotocols=CONTROL) as ws:  # type: ignore[arg-type]
        assert ws.subprotocol == CONTROL_PROTOCOL
        seen = bytearray()
        await ws.send(b"echo hello-$((6*7)); whoami\n")
        await _read_until(ws, b"hello-42", seen)
        await _read_until(ws, world.allocation.username.encode(), seen)  # type: ignore[union-attr]
        await ws.send(b"stty size\n")
        await _read_until(ws, b"24 80", seen)
        await ws.send(orjson.dumps({"type": "resize", "cols": 100, "rows": 30}).decode())
        await ws.send(b"stty size\n")
        await _read_until(ws, b"30 100", seen)
        await ws.send('{"type":"ping"}')
        async with asyncio.timeout(10):
            while (frame := await ws.recv()) != '{"type":"pong"}':
                assert isinstance(frame, bytes)

        # The ticket was good once: the same URL again is refused.
        assert await _refused(url) == (4401, "TICKET_INVALID")

        await world.stop()
        await _relay(engine, world)
        assert await _closed(ws) == (4410, "ALLOCATION_STOPPED")

    refused = await world.ada.ticket(world.allocation.id)
    assert (refused["__typename"], refused["code"]) == ("TerminalError", "NOT_RUNNING")
    async with engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT action, actor_user_id, target_id, after FROM audit_events "
            "WHERE action LIKE 'terminal.%' ORDER BY id"))).all()  # fmt: skip
    key_id = f"terminal:alloc-{world.allocation.id}:user-{world.ada.user_id}"
    assert [(r.action, r.actor_user_id, r.target_id) for r in rows] == [
        ("terminal.opened", world.ada.user_id, str(world.allocation.id)),
        ("terminal.closed", world.ada.user_id, str(world.allocation.id)),
    ]
    assert (
        rows[0].after["keyId"] == key_id and rows[0].after["username"] == world.allocation.username
    )
    assert rows[1].after["code"] == 4410 and rows[1].after["seconds"] > 0
    async with engine.connect() as conn:
        issued_certs = (await conn.execute(text(
            "SELECT after FROM audit_events WHERE action = 'ssh_ca.certificate_issued' "
            "AND after->>'keyId' = :k"), {"k": key_id})).all()  # fmt: skip
    assert [r.after["principals"] for r in issued_certs] == [[world.allocation.username]]


async def test_tickets_are_refused_reused_expired_for_others_and_cross_origin(
    world: World,
) -> None:
    alloc = world.allocation.id
    # Someone else's allocation: as if it did not exist.
    theirs = await world.bob.ticket(alloc)
    assert (theirs["__typename"], theirs["code"], theirs["field"]) == (
        "TerminalError", "NOT_FOUND", "allocationId")  # fmt: skip
    # No Origin (a script): nothing could bind the ticket to the page that opens it.
    assert (await world.ada.ticket(alloc, origin=None))["code"] == "ORIGIN_REQUIRED"
    # From an Origin the platform does not list, the cookie may not act at all (CSRF).
    evil = await world.ada.client.post(
        "/graphql",
        json=body(TICKET, {"id": to_global_id("Allocation", alloc)}),
        headers={"x-csrf-token": world.ada.csrf, "origin": EVIL},
    )
    assert evil.json()["errors"][0]["extensions"]["code"] == "CSRF_FAILED", evil.text

    # Issued to one of the platform's origins, presented from another: refused, and used up.
    ticket = (await world.ada.ticket(alloc))["ticket"]
    assert await _refused(world.url(ticket), origin=OTHER) == (4403, "ORIGIN_MISMATCH")
    assert await _refused(world.url(ticket)) == (4401, "TICKET_INVALID")
    # From an Origin that is not the platform's, the handshake itself is refused.
    ticket = (await world.ada.ticket(alloc))["ticket"]
    with pytest.raises(InvalidStatus) as handshake:
        await _refused(world.url(ticket), origin=EVIL)
    assert handshake.value.response.status_code == 403
    # An unknown ticket, and an expired one.
    assert await _refused(world.url("nope")) == (4401, "TICKET_INVALID")
    store = RedisTicketStore(world.redis, world.namespace)
    late = await store.put(TerminalTicket(world.ada.user_id, alloc, APP,
                                          datetime.now(UTC) - timedelta(seconds=1)))  # fmt: skip
    assert await _refused(world.url(late)) == (4401, "TICKET_EXPIRED")
    # A ticket for an allocation that is not its user's (only forgeable in Redis) opens nothing.
    forged = await store.put(TerminalTicket(world.bob.user_id, alloc, APP,
                                            datetime.now(UTC) + timedelta(seconds=30)))  # fmt: skip
    assert await _refused(world.url(forged)) == (4403, "NOT_FOUND")

    # The limit on open terminals counts across processes: four slots held elsewhere.
    slots = RedisSlots(world.redis, f"{world.namespace}:terminal:open", timedelta(seconds=60))
    for holder in range(4):
        assert await slots.acquire(alloc, f"elsewhere-{holder}", 4)
    ticket = (await world.ada.ticket(alloc))["ticket"]
    assert await _refused(world.url(ticket)) == (4429, "TERMINAL_LIMIT")
    await slots.release(alloc, "elsewhere-0")
    ticket = (await world.ada.ticket(alloc))["ticket"]
    async with connect(world.url(ticket), origin=APP, subprotocols=CONTROL) as ws:  # type: ignore[arg-type]
        seen = bytearray()
        await ws.send(b"echo ok-$((1+1))\n")
        await _read_until(ws, b"ok-2", seen)
        await ws.send("not json")
        assert await _closed(ws) == (4400, "BAD_MESSAGE")

    # No input for the idle timeout (shortened here) closes the terminal.
    res = world.app.state.resources
    res.terminals = replace(res.terminals, policy=replace(res.terminals.policy,
                                                          idle_timeout=timedelta(seconds=1)))  # fmt: skip
    ticket = (await world.ada.ticket(alloc))["ticket"]
    async with connect(world.url(ticket), origin=APP, subprotocols=CONTROL) as ws:  # type: ignore[arg-type]
        # Keep-alive pings (sent until the end) are answered but are not input: were they,
        # this terminal would never idle out.
        async def keep_pinging() -> None:
            with contextlib.suppress(ConnectionClosed):
                while True:
                    await ws.send('{"type":"ping"}')
                    await asyncio.sleep(0.2)

        pinger = asyncio.create_task(keep_pinging())
        assert await _closed(ws) == (4408, "IDLE_TIMEOUT")
        await pinger


async def test_a_terminal_ends_with_the_credential_that_opened_it(
    world: World, uow: Uow, engine: AsyncEngine
) -> None:
    """Logging out (this process, at commit) or a suspension (another process: the event comes
    back through Redis) closes the open terminal at once with 4401 SIGNED_OUT."""
    alloc = world.allocation.id
    await _relay(engine, world)  # the allocation's own past events, before any terminal opens
    ticket = (await world.ada.ticket(alloc))["ticket"]
    async with connect(world.url(ticket), origin=APP) as ws:  # type: ignore[arg-type]
        seen = bytearray()
        await ws.send(b"echo up-$((2+2))\n")
        await _read_until(ws, b"up-4", seen)
        ended = await world.ada.gql("mutation { logOut { __typename } }")
        assert ended["logOut"]["__typename"] == "LogOutPayload", ended
        assert await _closed(ws) == (4401, "SIGNED_OUT")

    signed = await world.ada.gql(LOG_IN, {"email": world.ada.email, "password": PASSWORD})
    world.ada.csrf = signed["logIn"]["csrfToken"]
    ticket = (await world.ada.ticket(alloc))["ticket"]
    async with connect(world.url(ticket), origin=APP) as ws:  # type: ignore[arg-type]
        seen = bytearray()
        await ws.send(b"echo up-$((3+3))\n")
        await _read_until(ws, b"up-6", seen)
        # Suspended by another process (this uow has no hook into the app): only the identity
        # event, relayed as the worker would, can tell the terminal before its 30 s re-check.
        await set_status(uow(), SYSTEM, world.ada.user_id, AccountStatus.SUSPENDED, "abuse", META)
        await _relay(engine, world)
        assert await _closed(ws) == (4401, "SIGNED_OUT")


@pytest.mark.parametrize("via", ["text", "binary"])
async def test_stock_xterm_attach_addon_types_a_command_and_shows_its_output(
    world: World, engine: AsyncEngine, via: str
) -> None:
    """`@xterm/addon-attach` 0.12, unmodified: keystrokes leave as text frames (onData) or
    binary frames (onBinary), output comes back as binary frames, and no subprotocol is asked
    for, so every frame it sends is input. The PTY has the URL's size."""
    ticket = (await world.ada.ticket(world.allocation.id))["ticket"]
    marker = f"attach-{via}-{uuid.uuid4().hex[:8]}"
    # What the shell prints differs from what it echoes: only the command's output matches.
    keys = f"echo {marker}-$((6*7)); stty size\r"
    url = world.url(ticket, cols=100, rows=30)
    shown = await _xterm(url, keys, via, [f"{marker}-42", "30 100"], cols=100, rows=30)
    assert f"{marker}-42" in shown["screen"] and "30 100" in shown["screen"]
    assert shown["protocol"] == ""
    assert shown["sent"][0] == via  # (xterm.js may answer the shell's queries after it)
    assert shown["received"] and set(shown["received"]) == {"binary"}
    async with asyncio.timeout(15):
        while True:
            async with engine.connect() as conn:
                query = "SELECT after FROM audit_events WHERE action = 'terminal.closed'"
                closed = (await conn.execute(text(query))).all()
            if closed:
                break
            await asyncio.sleep(0.1)
    assert [(r.after["code"], r.after["reason"]) for r in closed] == [(1000, "CLIENT_CLOSED")]


async def test_without_the_subprotocol_every_frame_is_input_and_with_it_sizes_are_checked(
    world: World,
) -> None:
    """Text that looks like a control message is typed into the shell when no subprotocol was
    asked for; a bad size (URL or resize) closes 4400 INVALID_SIZE and a bad size in the URL
    leaves the ticket unused; a handshake asking only for other subprotocols gets HTTP 400."""
    alloc = world.allocation.id
    ticket = (await world.ada.ticket(alloc))["ticket"]
    async with connect(world.url(ticket), origin=APP) as ws:  # type: ignore[arg-type]
        assert ws.subprotocol is None
        seen = bytearray()
        await ws.send('echo \'{"type":"ping"}\' $((2+3))\n')
        await _read_until(ws, b'{"type":"ping"} 5', seen)
        await ws.send('{"type":"resize","cols":1,"rows":1}')
        await ws.send("\nstty size\n")
        await _read_until(ws, b"24 80", seen)

    ticket = (await world.ada.ticket(alloc))["ticket"]
    for bad in ({"cols": 0, "rows": 24}, {"cols": 80, "rows": 1001}):
        assert await _refused(world.url(ticket, **bad)) == (4400, "INVALID_SIZE")
    assert await _refused(world.url(ticket) + "&cols=wide") == (4400, "INVALID_SIZE")
    async with connect(world.url(ticket, cols=90, rows=20), origin=APP, subprotocols=CONTROL) as ws:  # type: ignore[arg-type]
        seen = bytearray()
        await ws.send(b"stty size\n")
        await _read_until(ws, b"20 90", seen)
        await ws.send('{"type":"resize","cols":"x","rows":30}')
        assert await _closed(ws) == (4400, "INVALID_SIZE")

    ticket = (await world.ada.ticket(alloc))["ticket"]
    with pytest.raises(InvalidStatus) as handshake:
        await _refused(world.url(ticket), origin=APP, subprotocols=[Subprotocol("tty")])
    assert handshake.value.response.status_code == 400
    error = orjson.loads(handshake.value.response.body or b"{}")["errors"][0]
    assert error["extensions"]["code"] == "UNSUPPORTED_SUBPROTOCOL", error
    # The refused handshake took nothing: the ticket still opens a terminal.
    async with connect(world.url(ticket), origin=APP) as ws:  # type: ignore[arg-type]
        seen = bytearray()
        await ws.send(b"echo still-$((4+4))\n")
        await _read_until(ws, b"still-8", seen)


async def test_a_close_that_cannot_be_recorded_still_closes_the_terminal(
    world: World, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The close is recorded before it is sent; a failed write still closes the socket, with the
    reason the terminal ended for."""
    record = terminal_endpoint.audit_terminal

    async def closing_fails(uow: Any, ticket: Any, action: str, *rest: Any) -> None:
        if action == "terminal.closed":
            raise ServiceUnavailable("database")
        await record(uow, ticket, action, *rest)

    monkeypatch.setattr(terminal_endpoint, "audit_terminal", closing_fails)
    issued = await world.ada.ticket(world.allocation.id)
    async with connect(world.url(issued["ticket"]), origin=APP, subprotocols=CONTROL) as ws:  # type: ignore[arg-type]
        await ws.send(b"echo open-$((6*7))\n")
        await _read_until(ws, b"open-42", bytearray())
        await world.stop()
        await _relay(engine, world)
        assert await _closed(ws) == (4410, "ALLOCATION_STOPPED")
