"""Writing and reading notifications."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from domain.notifications.notices import Notice, NoticeType, Notification, poke
from domain.pagination import Page, PageRequest
from domain.ports import UnitOfWork


async def notify(uow: UnitOfWork, user_ids: Sequence[int], kind: NoticeType,
                 payload: Mapping[str, Any]) -> None:  # fmt: skip
    """In the caller's transaction: store the notification for each user and record the
    outbox event that wakes their subscribers up."""
    recipients = sorted(set(user_ids))  # ascending: counters are locked in one order everywhere
    if not recipients:
        return
    await uow.notifications.add(Notice(recipients, kind, dict(payload)))
    uow.record(poke(recipients))


async def notify_admins(uow: UnitOfWork, kind: NoticeType, payload: Mapping[str, Any],
                        *, besides: int | None = None) -> None:  # fmt: skip
    """Every active administrator but `besides` (the one who acted, who needs no telling)."""
    admins = await uow.notifications.admin_ids()
    await notify(uow, [a for a in admins if a != besides], kind, payload)


async def after_many(uow: UnitOfWork, wants: Sequence[tuple[int, int]],
                     limit: int) -> dict[tuple[int, int], list[Notification]]:  # fmt: skip
    """`after` for many (user id, seq) pairs at once, every type: what one poke asks of a
    process serving many subscribers."""
    async with uow:
        return await uow.notifications.after_many(wants, limit)


async def page(uow: UnitOfWork, user_id: int, unread_only: bool,
               request: PageRequest) -> Page[Notification]:  # fmt: skip
    async with uow:
        return await uow.notifications.page(user_id, unread_only, request)


async def mark_read(uow: UnitOfWork, user_id: int, up_to_seq: int) -> int:
    """Mark the user's notifications up to `up_to_seq` read; returns how many changed."""
    async with uow:
        changed = await uow.notifications.mark_read(user_id, up_to_seq)
        await uow.commit()
        return changed


async def latest_seq(uow: UnitOfWork, user_id: int) -> int:
    async with uow:
        return await uow.notifications.latest_seq(user_id)
