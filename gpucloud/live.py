"""Live graphql-transport-ws connections: heartbeat, per-user and per-IP limits, an end on
revocation and a notice on shutdown.

Strawberry runs the protocol; `LiveHandler` adds what a long-lived socket needs in production:

- Heartbeat. Once acknowledged, the server sends {"type": "ping"} every ping interval and
  closes the connection with 4408 when no pong came back within the pong timeout. A half-open
  TCP connection (a closed laptop, a NAT that forgot it) would otherwise hold its
  subscriptions, and its slot, forever. Standard clients (graphql-ws) answer pings by themselves.
- Per-user limit. Each acknowledged connection holds a slot in Redis (`RedisSlots`, renewed at
  every ping), so the limit counts every API process; a `connection_init` beyond it is closed
  with 4429 before any ack.
- Anonymous connections. A `connection_init` with no credential is acknowledged as anonymous:
  subscriptions over public data (`catalogChanged`) run, the others are refused by the
  permission declared on their field (UNAUTHENTICATED). Such connections hold a slot per client
  IP instead (GPUCLOUD_WS_MAX_ANONYMOUS_PER_IP, across processes; 4429 beyond it).
- Revocation. The credential is checked again when an identity event names the user (log out,
  token revoked, suspension: from this process at commit, from the others through Redis) and at
  every ping interval (expiry has no event). Once it no longer stands the connection is closed
  with 4401, which graphql-ws clients treat as final: sign in again, do not retry.
- Shutdown. When the server begins to stop (gpucloud/draining.py) every connection is closed
  with 1001 "Server shutting down", which graphql-ws clients retry (against another process,
  or this one once it is back) and then resubscribe.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
    PongMessage,
)

from domain.identity.kit import IDENTITY_TOPIC
from gpucloud.draining import Draining
from infra.metrics import Metrics
from infra.slots import RedisSlots
from schema.context import AppContext

log = structlog.get_logger(__name__)

UNAUTHORIZED = 4401  # the session or token was revoked, expired or its user suspended
HEARTBEAT_TIMEOUT = 4408  # no pong within the pong timeout
TOO_MANY_CONNECTIONS = 4429  # the user (or, anonymous, the IP) holds the maximum already
GOING_AWAY = 1001  # the server is shutting down: graphql-ws clients reconnect


class TooManyConnections(Exception):
    """Raised by `LiveConnections.admit`; the handler closes with 4429."""


@dataclass(frozen=True)
class Admission:
    slots: RedisSlots  # per user, or per client IP for anonymous connections
    key: str | int  # the user id, or the client IP
    holder: str  # this connection's member in the key's slot set
    user_id: int | None  # None: anonymous


@dataclass(frozen=True)
class LivePolicy:
    ping_interval: timedelta
    pong_timeout: timedelta
    max_per_user: int
    max_anonymous_per_ip: int

    @property
    def lease(self) -> timedelta:
        # Renewed at every ping: three missed rounds before a dead process's slot lapses.
        return 3 * (self.ping_interval + self.pong_timeout)


class LiveConnections:
    """This process's acknowledged connections by user, and their slots across processes; open
    terminals watch their user's credentials through it too."""

    def __init__(
        self, slots: RedisSlots, anonymous_slots: RedisSlots, policy: LivePolicy, metrics: Metrics
    ) -> None:
        self.slots = slots
        self.anonymous_slots = anonymous_slots
        self.policy = policy
        self._metrics = metrics
        # Per user: what to call when an identity event names them (one per socket or terminal).
        self._wakers: defaultdict[int, set[Callable[[], None]]] = defaultdict(set)

    async def admit(self, user_id: int) -> Admission:
        admission = Admission(self.slots, user_id, uuid.uuid4().hex, user_id)
        return await self._admit(admission, self.policy.max_per_user)

    async def admit_anonymous(self, client_ip: str) -> Admission:
        admission = Admission(self.anonymous_slots, client_ip, uuid.uuid4().hex, None)
        return await self._admit(admission, self.policy.max_anonymous_per_ip)

    async def _admit(self, admission: Admission, limit: int) -> Admission:
        if not await admission.slots.acquire(admission.key, admission.holder, limit):
            self.closed("too_many_connections")
            raise TooManyConnections
        return admission

    async def until_revoked(self, user_id: int, still_valid: Callable[[], Awaitable[bool]],
                            every: float) -> None:  # fmt: skip
        """Returns once `still_valid()` says no: asked whenever an identity event names the
        user (from any process) and every `every` seconds (expiry has no event). An outage
        (it raises) is not a revocation: it asks again later. For live sockets and terminals."""
        woken = asyncio.Event()
        wake = woken.set  # one bound method, so that `unwatch` finds it
        self.watch(user_id, wake)
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(every):
                        await woken.wait()
                woken.clear()
                try:
                    if not await still_valid():
                        return
                except Exception:
                    log.warning("live.credential_check_failed", user_id=user_id, exc_info=True)
        finally:
            self.unwatch(user_id, wake)

    def watch(self, user_id: int, wake: Callable[[], None]) -> None:
        """Call `wake()` whenever an identity event names the user (or may have been lost)."""
        self._wakers[user_id].add(wake)

    def unwatch(self, user_id: int, wake: Callable[[], None]) -> None:
        wakers = self._wakers.get(user_id)
        if wakers is not None:
            wakers.discard(wake)
            if not wakers:
                del self._wakers[user_id]

    def opened(self) -> None:
        self._metrics.ws_connections.inc()

    async def leave(self, admission: Admission, *, opened: bool) -> None:
        if opened:
            self._metrics.ws_connections.dec()
        with contextlib.suppress(Exception):  # the lease lapses by itself if Redis is away
            await admission.slots.release(admission.key, admission.holder)

    def wake(self, user_ids: Iterable[int] | None) -> None:
        """Have the named users' connections check their credential now; None: everyone's
        (a lagging or broken event stream may have lost an event)."""
        groups = self._wakers.values() if user_ids is None else (
            self._wakers.get(user_id, ()) for user_id in user_ids)  # fmt: skip
        for group in groups:
            for wake in list(group):
                wake()

    def identity_changed(self, message: dict[str, Any] | None) -> None:
        """Follower of IDENTITY_TOPIC messages (None: some may have been lost)."""
        user_id = None if message is None else message.get("payload", {}).get("userId")
        self.wake(None if user_id is None else [int(user_id)])

    def closed(self, reason: str) -> None:
        self._metrics.ws_closed.labels(reason).inc()


def users_named(events: Iterable[Any]) -> list[int]:
    """The users whose identity events (domain events just committed) name them."""
    return [int(event.payload["userId"]) for event in events
            if event.topic == IDENTITY_TOPIC and "userId" in event.payload]  # fmt: skip


def admitted(context: AppContext) -> Admission | None:
    """The admission `GraphQLView.on_ws_connect` kept on the websocket, if it admitted one."""
    return getattr(context.request.state, "live_admission", None)


class LiveHandler(BaseGraphQLTransportWSHandler[AppContext, None]):
    """graphql-transport-ws with heartbeat, per-user limit and revocation (module docstring).

    An idle socket holds no task of its own: the heartbeat is a timer, the credential watch a
    callback, and each runs a short task only when it has something to do. Two sleeping tasks
    per socket were a tenth of an idle subscriber's memory (bench/fanout.py)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # All set here, not first on acknowledgement: attributes added to an instance later
        # give it a dict of its own instead of one sharing its class's key table, which was
        # most of a kilobyte per idle socket (bench/fanout.py).
        self._admission: Admission | None = None
        self._wake: Callable[[], None] | None = None  # registered with LiveConnections.watch
        self._ping_timer: asyncio.TimerHandle | None = None
        self._pong_timer: asyncio.TimerHandle | None = None  # set while a ping awaits its pong
        self._chores: set[asyncio.Task[None]] | None = None
        self._checking = False
        self._check_again = False

    @property
    def _live(self) -> LiveConnections:
        return self.context.request.app.state.resources.live  # type: ignore[no-any-return]

    async def handle(self) -> None:
        draining: Draining = self.context.request.app.state.resources.draining
        with draining.holding(self._going_away):
            await super().handle()

    async def _going_away(self) -> None:
        self._live.closed("server_shutdown")
        await self._close(GOING_AWAY, "Server shutting down")

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        try:
            await super().handle_connection_init(message)
        except TooManyConnections:
            await self._close(TOO_MANY_CONNECTIONS, "Too many connections")
            return
        finally:
            # Strawberry cancelled its init timeout but keeps the task, and with it the
            # CancelledError's traceback and frames, for the socket's life: let it go. The
            # payload has been read (on_ws_connect); its credential is not kept either.
            self.connection_init_timeout_task = None
            self.context.connection_params = None
        admission = admitted(self.context)
        if self.connection_acknowledged and admission is not None and self._admission is None:
            self._live.opened()
            self._admission = admission
            if admission.user_id is not None:  # anonymous: no credential to outlive
                self._wake = self._check_credential
                self._live.watch(admission.user_id, self._wake)
            self._schedule_ping()

    async def handle_pong(self, message: PongMessage) -> None:
        if self._pong_timer is None:
            return  # no ping outstanding
        self._pong_timer.cancel()
        self._pong_timer = None
        self._spawn(self._renew())
        self._schedule_ping()

    async def shutdown(self) -> None:
        for timer in (self._ping_timer, self._pong_timer):
            if timer is not None:
                timer.cancel()
        self._ping_timer = self._pong_timer = None
        opened = self._admission is not None
        if self._admission is not None and self._admission.user_id is not None and self._wake:
            self._live.unwatch(self._admission.user_id, self._wake)
        for task in list(self._chores or ()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        admission = admitted(self.context)
        if admission is not None:  # admitted, perhaps never acknowledged: give the slot back
            await self._live.leave(admission, opened=opened)
        await super().shutdown()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` as a task this socket owns (cancelled at shutdown)."""
        if self._chores is None:
            self._chores = set()
        task = asyncio.get_running_loop().create_task(work)
        self._chores.add(task)
        task.add_done_callback(self._chore_done)

    def _chore_done(self, task: asyncio.Task[None]) -> None:
        if self._chores is not None:
            self._chores.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # A send to a client that has gone: the socket's shutdown follows.
            log.debug("ws.chore_failed", error=repr(task.exception()))

    def _schedule_ping(self) -> None:
        interval = self._live.policy.ping_interval.total_seconds()
        self._ping_timer = asyncio.get_running_loop().call_later(interval, self._beat)

    def _beat(self) -> None:
        self._ping_timer = None
        if self._wake is not None:  # signed in: every interval too, since expiry has no event
            self._check_credential()
        self._spawn(self._ping())

    async def _ping(self) -> None:
        timeout = self._live.policy.pong_timeout.total_seconds()
        self._pong_timer = asyncio.get_running_loop().call_later(timeout, self._no_pong)
        await self.send_message({"type": "ping"})

    def _no_pong(self) -> None:
        self._pong_timer = None
        self._live.closed("heartbeat_timeout")
        self._spawn(self._close(HEARTBEAT_TIMEOUT, "Heartbeat timeout"))

    async def _renew(self) -> None:
        admission = self._admission
        assert admission is not None
        try:
            renewed = await admission.slots.renew(admission.key, admission.holder)
        except Exception:  # Redis away: keep the heartbeat going; the slot may lapse
            log.warning("ws.slot_renew_failed", user_id=admission.user_id)
            return
        if not renewed:
            log.warning("ws.slot_lapsed", user_id=admission.user_id)

    def _check_credential(self) -> None:
        """Does the credential still stand? Asked on identity events naming the user and at
        every heartbeat; one check at a time, and once more if asked again meanwhile."""
        if self._checking:
            self._check_again = True
            return
        self._checking = True
        self._spawn(self._recheck())

    async def _recheck(self) -> None:
        still_authorized = self.context.still_authorized
        assert still_authorized is not None and self._admission is not None
        try:
            while True:
                self._check_again = False
                try:
                    valid = await still_authorized()
                except Exception:  # an outage is not a revocation: asked again later
                    user_id = self._admission.user_id
                    log.warning("live.credential_check_failed", user_id=user_id, exc_info=True)
                    valid = True
                if not valid:
                    self._live.closed("unauthorized")
                    await self._close(UNAUTHORIZED, "Unauthorized: the credential no longer stands")
                    return
                if not self._check_again:
                    return
        finally:
            self._checking = False

    async def _close(self, code: int, reason: str) -> None:
        # The client may have gone, or another task closed first: either way it is closed.
        with contextlib.suppress(Exception):
            await self.websocket.close(code=code, reason=reason)
