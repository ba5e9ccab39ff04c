"""Notification resolvers: the list, marking read, and the subscription that replays what a
client missed after its cursor and then streams live, in order, without gaps or repeats."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from strawberry import Info

from domain.errors import DomainError, InvalidInput, Problem
from domain.notifications import services
from domain.notifications.notices import NOTIFICATIONS_TOPIC, NoticeType
from domain.pagination import PageRequest, decode_cursor
from resolvers.shared_reads import BATCH
from schema.context import AppContext
from schema.errors import typed_error
from schema.notifications import (
    MarkNotificationsReadPayload,
    Notification,
    NotificationConnection,
    NotificationError,
    NotificationProblem,
)
from schema.relay import After, Before, First, Last


def _me(info: Info[AppContext, None]) -> int:
    user_id = info.context.principal.user_id
    assert user_id is not None  # the requirement asks for a signed-in caller
    return user_id


def _seq(cursor: str, field: str) -> int:
    try:
        return decode_cursor(cursor)
    except InvalidInput as exc:
        raise InvalidInput(Problem("INVALID_CURSOR", exc.problems[0].message, field)) from exc


async def notifications(
    info: Info[AppContext, None], first: First = None, after: After = None,
    last: Last = None, before: Before = None,
    unread_only: bool = False,
) -> NotificationConnection:  # fmt: skip
    page = await services.page(
        info.context.uow(), _me(info), unread_only, PageRequest.parse(first, after, last, before)
    )
    return NotificationConnection.from_page(page, Notification.from_domain)


async def mark_notifications_read(
    info: Info[AppContext, None], up_to: str
) -> MarkNotificationsReadPayload | NotificationError:
    try:
        marked = await services.mark_read(info.context.uow(), _me(info), _seq(up_to, "upTo"))
    except DomainError as exc:
        return typed_error(exc, NotificationError, NotificationProblem)
    return MarkNotificationsReadPayload(marked=marked)


async def notifications_stream(
    info: Info[AppContext, None], after: str | None = None,
    types: list[NoticeType] | None = None,
) -> AsyncGenerator[Notification, None]:  # fmt: skip
    """Everything after `after` (from now on when it is not given), then each new one live.

    The stream listens before it reads, so nothing committed in between is lost; a poke only
    says "read again", and every read asks the database for sequence numbers above the last
    one delivered, which become visible in order (see domain/notifications/notices.py)."""
    ctx = info.context
    user_id = _me(info)
    wanted = frozenset(types) if types else None
    shared = ctx.shared  # every subscription of this process: one batched query per poke
    assert shared is not None  # the app gives every context one
    async with ctx.events.subscribe(NOTIFICATIONS_TOPIC) as stream:
        last = (_seq(after, "after") if after is not None
                else await services.latest_seq(ctx.uow(), user_id))  # fmt: skip
        # Where this subscription stands, so a poke's read for it can be made before it wakes.
        cursor = shared.cursors.hold(user_id, last)

        async def newer(poke: object = None) -> AsyncGenerator[Notification, None]:
            while True:
                if poke is not None:  # the poke's read, made once for every subscriber
                    batch = await shared.notifications_on(poke, user_id, cursor.last)
                    poke = None  # a full batch: the rest is read afresh
                else:
                    batch = await shared.notifications_after.load((user_id, cursor.last))
                for delivery in batch:
                    cursor.last = delivery.seq  # past other types too: never read twice
                    if wanted is None or delivery.type in wanted:
                        yield delivery.view
                if len(batch) < BATCH:
                    return

        try:
            async for replayed in newer():
                yield replayed
            async for message in stream:
                if user_id not in message["payload"].get("userIds", ()):
                    continue
                async for live in newer(message.get("id")):
                    yield live
        finally:
            shared.cursors.release(cursor)
