"""Fan-out of events through Redis pub/sub, so any API process can serve any subscriber.

Each process holds one Redis subscription and hands messages to its local subscribers' queues;
the Redis channel, not process memory, is what connects a publisher to every process. The relay
publishes at least once; a repeated event id is dropped here, once per process, so subscribers
see each event once without each keeping its own record.

A topic may have a warm-up (`warm_before_delivery`): awaited once per message, in order, before
that message wakes its subscribers, so a read they all share is done before 10,000 of them wake
and ask for it. Otherwise each would run until it waits on the read and then run again once it
is done: twice the scheduling, and the first delivery only after every subscriber had its turn
(bench/fanout.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any

import orjson
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from domain.errors import SubscriberLagged

log = structlog.get_logger(__name__)

_SUBSCRIBER_BUFFER = 256
_RECENT_IDS = 4096  # per topic: far more than a relay batch, so a re-published one is caught

# Put in place of a slow subscriber's backlog: its stream must end so the client reconnects
# (and, with cursors, replays) instead of silently missing messages.
OVERFLOW: dict[str, Any] = {"overflow": True}

Warm = Callable[[dict[str, Any]], Awaitable[object]]


class _Subscription:
    """One subscriber's messages: its context manager, iterator and bounded buffer in one slotted
    object. An idle subscriber is only this (no deque, queue or generator frames: an
    asyncio.Queue alone is three deques, 2.3 KiB), and the hub holds 10,000 of them."""

    __slots__ = ("_hub", "_items", "_topic", "_waiter")

    def __init__(self, hub: EventHub, topic: str) -> None:
        self._hub = hub
        self._topic = topic
        self._items: list[dict[str, Any]] = []
        self._waiter: asyncio.Future[None] | None = None

    async def __aenter__(self) -> AsyncIterator[dict[str, Any]]:
        self._hub._subscribers[self._topic].add(self)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._hub._subscribers[self._topic].discard(self)

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self

    async def __anext__(self) -> dict[str, Any]:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        message = self._items.pop(0)  # a short list: usually one message, at most the buffer
        if message is OVERFLOW:
            raise SubscriberLagged()
        return message

    def offer(self, message: dict[str, Any]) -> bool:
        """Buffer `message`; False (and the buffer replaced by OVERFLOW) when it is full."""
        full = len(self._items) >= _SUBSCRIBER_BUFFER
        if full:
            self._items = [OVERFLOW]
        else:
            self._items.append(message)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        return not full


class _Recent:
    """The last `size` event ids of a topic, for O(1) "seen it?" checks."""

    def __init__(self, size: int = _RECENT_IDS) -> None:
        self._order: deque[Any] = deque(maxlen=size)
        self._ids: set[Any] = set()

    def first_time(self, event_id: Any) -> bool:
        if event_id in self._ids:
            return False
        if len(self._order) == self._order.maxlen:
            self._ids.discard(self._order[0])
        self._order.append(event_id)
        self._ids.add(event_id)
        return True


def _channel(namespace: str, topic: str) -> str:
    return f"{namespace}:events:{topic}"


async def publish(
    client: aioredis.Redis, namespace: str, topic: str, message: dict[str, Any]
) -> int:
    """Publish to every API process; returns how many Redis subscribers (processes) got it."""
    return int(await client.publish(_channel(namespace, topic), orjson.dumps(message)))


class EventHub:
    def __init__(self, client: aioredis.Redis, namespace: str) -> None:
        self._client = client
        self._namespace = namespace
        self._prefix = _channel(namespace, "")
        self._subscribers: dict[str, set[_Subscription]] = defaultdict(set)
        self._warm: dict[str, Warm] = {}
        self._warming: dict[str, deque[dict[str, Any]]] = {}  # topic -> messages not yet offered
        self._warmers: set[asyncio.Task[None]] = set()
        self._recent: defaultdict[str, _Recent] = defaultdict(_Recent)
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._epochs = 0
        # Counts (re)subscriptions; None while not subscribed. Anything derived from events
        # (caches) is only valid within one epoch, since a reconnect may have missed some.
        self.epoch: int | None = None

    async def publish(self, topic: str, message: dict[str, Any]) -> int:
        return await publish(self._client, self._namespace, topic, message)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="event-hub")

    async def wait_ready(self, timeout: float = 5.0) -> None:
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def stop(self) -> None:
        for task in [self._task, *self._warmers]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def warm_before_delivery(self, topic: str, warm: Warm) -> None:
        """Await `warm(message)` for each message of `topic` before offering it to this
        process's subscribers; messages of the topic keep their order. A failed warm-up is
        logged and the message delivered anyway: subscribers then read for themselves."""
        self._warm[topic] = warm

    def subscribe(
        self, topic: str
    ) -> contextlib.AbstractAsyncContextManager[AsyncIterator[dict[str, Any]]]:
        """Messages of `topic` published after entering, from any process."""
        return _Subscription(self, topic)

    async def _listen(self) -> None:
        delay = 0.1
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.psubscribe(self._prefix + "*")
                self._epochs += 1
                self.epoch = self._epochs
                self._ready.set()
                delay = 0.1
                async for raw in pubsub.listen():
                    if raw.get("type") == "pmessage":
                        self._dispatch(raw["channel"], raw["data"])
            except (RedisError, OSError) as exc:
                self.epoch = None
                self._ready.clear()
                log.warning("event_hub.disconnected", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)  # back off while Redis is down, recover by itself
            finally:
                self.epoch = None
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _dispatch(self, channel: bytes | str, data: bytes | str) -> None:
        name = channel.decode() if isinstance(channel, bytes) else channel
        topic = name.removeprefix(self._prefix)
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError:
            log.warning("event_hub.bad_message", channel=name)
            return
        event_id = message.get("id")
        if event_id is not None and not self._recent[topic].first_time(event_id):
            return  # the relay published it again (a crash between publish and mark)
        if topic in self._warm and self._subscribers.get(topic):
            waiting = self._warming.get(topic)
            if waiting is not None:  # a warm-up is running: after the messages before it
                waiting.append(message)
                return
            self._warming[topic] = deque([message])
            task = asyncio.create_task(self._warm_and_offer(topic), name=f"event-hub-warm-{topic}")
            self._warmers.add(task)
            task.add_done_callback(self._warmers.discard)
            return
        self._offer(topic, message)

    async def _warm_and_offer(self, topic: str) -> None:
        waiting = self._warming[topic]
        try:
            while waiting:
                message = waiting[0]
                try:
                    await self._warm[topic](message)
                except Exception as exc:  # the subscribers read for themselves
                    log.warning("event_hub.warm_failed", topic=topic, error=repr(exc))
                waiting.popleft()
                self._offer(topic, message)
        finally:
            del self._warming[topic]

    def _offer(self, topic: str, message: dict[str, Any]) -> None:
        for subscriber in list(self._subscribers.get(topic, ())):
            if not subscriber.offer(message):
                # A subscriber that cannot keep up must not stall the others.
                self._subscribers[topic].discard(subscriber)
                log.warning("event_hub.slow_subscriber_dropped", topic=topic)
