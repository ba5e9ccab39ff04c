"""Keep a per-process cache honest: drop it on every event of a topic, from any process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from domain.errors import SubscriberLagged
from domain.ports import EventStream

log = structlog.get_logger(__name__)


async def follow(events: EventStream, topic: str, invalidate: Callable[[], None]) -> None:
    """Call `invalidate` on every event of `topic`; runs until cancelled. A lagged or broken
    stream may have lost an event, so it invalidates too before resubscribing."""
    while True:
        try:
            async with events.subscribe(topic) as stream:
                async for _ in stream:
                    invalidate()
        except SubscriberLagged:
            invalidate()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("cache.follow_failed", topic=topic)
            invalidate()
            await asyncio.sleep(1.0)
