"""The browser terminal: `/terminal?ticket=...[&cols=..&rows=..]`, a websocket (not GraphQL).

The ticket comes from the `createTerminalTicket` mutation (see domain/compute/terminals.py);
`cols`/`rows` size the PTY from the start. Output always leaves as binary frames. What the client
sends depends on the handshake:

- No subprotocol (stock xterm.js `@xterm/addon-attach`, which sends keystrokes as text frames and
  some input as binary): every frame, text or binary, is input for the shell.
- Subprotocol `gpucloud.terminal.v1` (a client that asks for it): binary frames are input, text
  frames are JSON control messages, {"type": "resize", "cols": C, "rows": R} and {"type":
  "ping"} (answered {"type": "pong"}). A client that asks only for other subprotocols is refused.

A handshake from an Origin that is not the platform's is refused (HTTP 403) before anything
else. Every other refusal, and every end, is a close frame whose code says why (CLOSE_CODES) and
whose reason is the error code, so a client can tell "ask for a new ticket" from "stopped".
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect
from strawberry.http.websocket_origin import normalize_origin

from domain.compute.allocations import AllocationState
from domain.compute.changes import ALLOCATIONS_TOPIC
from domain.compute.terminals import (
    TerminalErrorCode,
    TerminalPolicy,
    TerminalRefused,
    TerminalTicket,
    check_ticket,
    key_id,
    refused,
    still_entitled,
    still_running,
    terminal_size,
    terminal_target,
)
from domain.compute.terminals import record as audit_terminal
from domain.errors import DomainError, InvalidInput, SubscriberLagged
from domain.fleet.remote import NodeFailure
from gpucloud.auth import request_meta
from gpucloud.resources import Resources
from infra.nodes.connector import SshNodeConnector
from infra.nodes.terminal import TerminalSession, open_terminal

log = structlog.get_logger(__name__)

SHELL_EXITED = 1000  # the shell ended (exit, logout)
GOING_AWAY = 1001  # the server is shutting down
INTERNAL_ERROR = 1011  # a bug or an outage mid-session; logged with the request id
BAD_MESSAGE = 4400  # in the control subprotocol, a text frame that is not a control message
INVALID_SIZE = 4400  # cols/rows (URL or resize message) that are not whole numbers in bounds
CLOSE_CODES = {
    TerminalErrorCode.TICKET_INVALID: 4401,  # unknown or already used: get a new ticket
    TerminalErrorCode.TICKET_EXPIRED: 4401,
    TerminalErrorCode.ORIGIN_MISMATCH: 4403,
    TerminalErrorCode.NOT_FOUND: 4403,  # the allocation is gone or not the ticket's user's
    TerminalErrorCode.NOT_RUNNING: 4409,
    TerminalErrorCode.TERMINAL_LIMIT: 4429,
}
IDLE = 4408  # no input for the idle timeout
SIGNED_OUT = 4401  # the session or token that asked for the ticket ended, or the user suspended
STOPPED = 4410  # the allocation left RUNNING
NODE_UNREACHABLE = 4502  # the node could not be reached or refused the login
UNAVAILABLE = 4503  # the key service (and so the CA) is not configured

# Asked for in the handshake by a client that sends resizes and pings; without it (the stock
# xterm.js attach addon) every frame is input, so typed text can never be taken for a command.
CONTROL_PROTOCOL = "gpucloud.terminal.v1"

Events = AsyncIterator[dict[str, Any]]


@dataclass
class _Ended:
    code: int
    reason: str

    @property
    def by(self) -> str:
        """Who closed: the client (it closed or went away), or this server, for `reason`."""
        return "client" if self.reason == "CLIENT_CLOSED" else "server"


async def terminal(websocket: WebSocket) -> None:
    res: Resources = websocket.app.state.resources
    origin = normalize_origin(websocket.headers.get("origin") or "")
    if origin is None or origin not in res.authenticator.allowed_origins:
        await websocket.close(code=1008)  # before accept: the handshake is refused with 403
        return
    offered = websocket.scope.get("subprotocols") or []
    control = _asks_for_control(websocket)
    if offered and not control:
        # A browser fails a handshake that picks none of the subprotocols it asked for, so no
        # close code could reach it: refuse the handshake itself, saying why.
        await _deny(
            websocket,
            400,
            "UNSUPPORTED_SUBPROTOCOL",
            f"The terminal speaks no subprotocol or {CONTROL_PROTOCOL!r}; asked for "
            f"{', '.join(offered)}.",
        )
        return
    await websocket.accept(subprotocol=CONTROL_PROTOCOL if control else None)
    request_id = websocket.scope.get("state", {}).get("request_id") or uuid.uuid4().hex
    meta = request_meta(websocket, request_id)
    if res.compute is None or not isinstance(res.compute.fleet.connector, SshNodeConnector):
        await websocket.close(code=UNAVAILABLE, reason="SERVICE_UNAVAILABLE")
        return
    dialer = res.compute.fleet.connector.dialer
    policy = res.terminals.policy
    try:  # before the ticket is taken: a bad size leaves it good for a corrected retry
        cols, rows = terminal_size(
            websocket.query_params.get("cols", policy.default_cols),
            websocket.query_params.get("rows", policy.default_rows),
            policy,
        )
    except InvalidInput:
        await websocket.close(code=INVALID_SIZE, reason="INVALID_SIZE")
        return
    try:
        ticket = check_ticket(await res.terminals.tickets.take(websocket.query_params.get(
            "ticket", "")), origin, res.compute.clock())  # fmt: skip
        # Listen first, then read: a stop committed in between arrives as an event.
        async with res.hub.subscribe(ALLOCATIONS_TOPIC) as stream:
            allocation, target = await terminal_target(res.uow(), ticket)
            holder = uuid.uuid4().hex
            if not await res.terminal_slots.acquire(allocation.id, holder,
                                                    policy.max_per_allocation):  # fmt: skip
                raise refused(TerminalErrorCode.TERMINAL_LIMIT,
                              f"At most {policy.max_per_allocation} terminals may be open to one "
                              "allocation.")  # fmt: skip
            try:
                try:
                    session = await open_terminal(dialer, target, cols, rows)
                except NodeFailure as exc:
                    log.warning("terminal.node_failed", allocation_id=allocation.id,
                                error=str(exc), request_id=request_id)  # fmt: skip
                    await websocket.close(code=NODE_UNREACHABLE, reason="NODE_UNREACHABLE")
                    return
                cert_key_id = key_id(allocation)
                await audit_terminal(res.uow(), ticket, "terminal.opened", meta,
                                     {"keyId": cert_key_id, "username": target.user,
                                      "nodeId": target.node_id})  # fmt: skip
                started = time.monotonic()
                ended = _Ended(GOING_AWAY, "SERVER_SHUTDOWN")
                try:
                    ended = await _run(websocket, session, stream, ticket, res, holder)
                finally:
                    await session.close()
                    # Recorded before the close goes out: a client that has seen its terminal
                    # close finds the record of it (and a failed write still closes).
                    try:
                        await audit_terminal(
                            res.uow(),
                            ticket,
                            "terminal.closed",
                            meta,
                            {
                                "keyId": cert_key_id,
                                "code": ended.code,
                                "reason": ended.reason,
                                "closedBy": ended.by,
                                "seconds": round(time.monotonic() - started, 3),
                            },
                        )
                    finally:
                        with contextlib.suppress(Exception):
                            await websocket.close(code=ended.code, reason=ended.reason)
            finally:
                await res.terminal_slots.release(allocation.id, holder)
    except TerminalRefused as exc:
        await websocket.close(code=CLOSE_CODES[exc.code], reason=str(exc.code))
    except DomainError as exc:  # the database or Redis is down
        log.warning("terminal.refused", error=str(exc), request_id=request_id)
        await websocket.close(code=UNAVAILABLE, reason=exc.problems[0].code)


def _asks_for_control(websocket: WebSocket) -> bool:
    return CONTROL_PROTOCOL in (websocket.scope.get("subprotocols") or [])


async def _deny(websocket: WebSocket, status: int, code: str, message: str) -> None:
    """Refuse the handshake with an HTTP answer in the standard error shape (HTTP 403 with no
    body where the server cannot send one)."""
    body = {"errors": [{"message": message, "extensions": {"code": code}}]}
    try:
        await websocket.send_denial_response(JSONResponse(body, status_code=status))
    except RuntimeError:  # the server has no websocket denial response extension
        await websocket.close(code=1008)


async def _run(websocket: WebSocket, session: TerminalSession, stream: Events,
               ticket: TerminalTicket, res: Resources, holder: str) -> _Ended:  # fmt: skip
    """Pump bytes both ways until one side ends, the client idles out or the allocation stops;
    returns why it ended."""
    policy = res.terminals.policy
    control = _asks_for_control(websocket)
    last_input = [time.monotonic()]
    tasks = [
        asyncio.create_task(_to_client(websocket, session)),
        asyncio.create_task(_from_client(websocket, session, last_input, policy, control)),
        asyncio.create_task(_idle(last_input, policy)),
        asyncio.create_task(_stopped(stream, ticket.allocation_id)),
        asyncio.create_task(_lease(res, ticket.allocation_id, holder)),
        asyncio.create_task(_entitled(res, ticket)),
        asyncio.create_task(_shutdown(res)),
    ]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        first = next(iter(done))
        if (error := first.exception()) is not None:
            log.error("terminal.failed", allocation_id=ticket.allocation_id, exc_info=error)
            return _Ended(INTERNAL_ERROR, "INTERNAL_ERROR")
        return first.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _to_client(websocket: WebSocket, session: TerminalSession) -> _Ended:
    while data := await session.read():
        try:
            await websocket.send_bytes(data)
        except (WebSocketDisconnect, RuntimeError, OSError):  # the client went away meanwhile
            return _Ended(SHELL_EXITED, "CLIENT_CLOSED")
    return _Ended(SHELL_EXITED, "SHELL_EXITED")


async def _from_client(
    websocket: WebSocket,
    session: TerminalSession,
    last_input: list[float],
    policy: TerminalPolicy,
    control: bool,
) -> _Ended:
    """Input to the shell: every frame, or in the control subprotocol binary frames only (its
    text frames are control messages)."""
    while True:
        try:
            message = await websocket.receive()
        except WebSocketDisconnect:
            return _Ended(SHELL_EXITED, "CLIENT_CLOSED")
        if message["type"] == "websocket.disconnect":
            return _Ended(SHELL_EXITED, "CLIENT_CLOSED")
        data: bytes | None = message.get("bytes")
        if data is None and not control:  # the attach addon's keystrokes: text is UTF-8 input
            data = (message.get("text") or "").encode()
        if data is not None:
            if data:  # an empty frame is not a keystroke, so it does not hold off the idle timeout
                last_input[0] = time.monotonic()
                await session.write(data)
            continue
        try:
            request = orjson.loads(message.get("text") or "")
        except orjson.JSONDecodeError:
            return _Ended(BAD_MESSAGE, "BAD_MESSAGE")
        kind = request.get("type") if isinstance(request, dict) else None
        if kind == "ping":  # a keep-alive, not input: it does not hold off the idle timeout
            await websocket.send_text('{"type":"pong"}')
        elif kind == "resize":
            try:
                size = terminal_size(request.get("cols"), request.get("rows"), policy)
            except InvalidInput:
                return _Ended(INVALID_SIZE, "INVALID_SIZE")
            last_input[0] = time.monotonic()
            session.resize(*size)
        else:
            return _Ended(BAD_MESSAGE, "BAD_MESSAGE")


async def _idle(last_input: list[float], policy: TerminalPolicy) -> _Ended:
    limit = policy.idle_timeout.total_seconds()
    while True:
        left = last_input[0] + limit - time.monotonic()
        if left <= 0:
            return _Ended(IDLE, "IDLE_TIMEOUT")
        await asyncio.sleep(left)


async def _stopped(stream: Events, allocation_id: int) -> _Ended:
    """Ends when an event says the allocation left RUNNING (from any API process or worker)."""
    try:
        async for message in stream:
            payload = message.get("payload") or {}
            if (int(payload.get("allocationId", -1)) == allocation_id
                    and payload.get("state") != AllocationState.RUNNING):  # fmt: skip
                return _Ended(STOPPED, "ALLOCATION_STOPPED")
    except SubscriberLagged:
        pass
    # The stream ended: `_lease` still re-reads the state now and then.
    return await asyncio.get_running_loop().create_future()  # type: ignore[no-any-return]


async def _lease(res: Resources, allocation_id: int, holder: str) -> _Ended:
    """Keeps the terminal's slot, and re-reads the allocation now and then in case an event was
    missed (a Redis reconnect, a lagging stream)."""
    every = min(res.terminals.policy.recheck_interval, res.terminal_slots.lease / 3).total_seconds()
    while True:
        await asyncio.sleep(every)
        await res.terminal_slots.renew(allocation_id, holder)
        if not await still_running(res.uow(), allocation_id):
            return _Ended(STOPPED, "ALLOCATION_STOPPED")


async def _entitled(res: Resources, ticket: TerminalTicket) -> _Ended:
    """Ends once the user may no longer hold the terminal (logged out, token revoked, account
    suspended): checked when an identity event names them, from any process, and periodically."""
    await res.live.until_revoked(
        ticket.user_id, lambda: still_entitled(res.uow(), ticket, datetime.now(UTC)),
        res.terminals.policy.recheck_interval.total_seconds())  # fmt: skip
    return _Ended(SIGNED_OUT, "SIGNED_OUT")


async def _shutdown(res: Resources) -> _Ended:
    """Ends when the server begins to stop (gpucloud/draining.py): closed with 1001 before
    uvicorn would close the socket with 1012 and no reason."""
    await res.draining.begun.wait()
    return _Ended(GOING_AWAY, "SERVER_SHUTDOWN")
