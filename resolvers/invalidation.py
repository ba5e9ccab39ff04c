"""Keep per-process state honest: act on every event of a topic, from any process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog

from domain.errors import SubscriberLagged
from domain.ports import EventStream

log = structlog.get_logger(__name__)


async def follow(
    events: EventStream, topic: str, handle: Callable[[dict[str, Any] | None], None]
) -> None:
    """Call `handle` with every event of `topic`; runs until cancelled. A lagged or broken
    stream may have lost an event, so it is called with None too before resubscribing."""
    while True:
        try:
            async with events.subscribe(topic) as stream:
                async for message in stream:
                    handle(message)
        except SubscriberLagged:
            handle(None)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("cache.follow_failed", topic=topic)
            handle(None)
            await asyncio.sleep(1.0)
