"""Subscribers of one process share their reads: one query per poke for every notification
subscription (`after_many`), one read per event for every `catalogChanged` subscriber."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from domain.catalog.services import add_sku
from domain.catalog.sku import SkuSpec
from domain.notifications.notices import NoticeType
from domain.notifications.services import after_many, notify
from domain.ports import UnitOfWork
from resolvers.shared_reads import make_shared_reads, warm_notifications
from tests.support.compute import stored_user


async def _tell(uow: Callable[[], UnitOfWork], user_id: int, count: int) -> None:
    for n in range(count):
        async with uow() as u:
            await notify(u, [user_id], NoticeType.PAYMENT_SUCCEEDED, {"n": n, "user": user_id})
            await u.commit()


def _counting(uow: Callable[[], UnitOfWork]) -> tuple[Callable[[], UnitOfWork], list[int]]:
    opened = [0]

    def counted() -> UnitOfWork:
        opened[0] += 1
        return uow()

    return counted, opened


async def test_after_many_gives_each_cursor_its_own_window(uow: Any) -> None:
    ada, bob, cid = await stored_user(uow), await stored_user(uow), await stored_user(uow)
    await _tell(uow, ada, 5)
    await _tell(uow, bob, 3)
    found = await after_many(uow(), [(ada, 0), (ada, 3), (bob, 1), (cid, 0), (ada, 0)], 2)
    seqs = {key: [n.seq for n in rows] for key, rows in found.items()}
    assert seqs == {(ada, 0): [1, 2], (ada, 3): [4, 5], (bob, 1): [2, 3], (cid, 0): []}
    assert all(n.user_id == ada for n in found[(ada, 3)])


async def test_concurrent_subscribers_share_one_read(uow: Any) -> None:
    users = [await stored_user(uow) for _ in range(20)]
    for user_id in users:
        await _tell(uow, user_id, 2)
    counted, opened = _counting(uow)
    shared = make_shared_reads(counted)
    # 100 subscriptions (5 sockets per user, at two cursors) woken by one poke.
    keys = [(user_id, cursor) for user_id in users for cursor in (0, 0, 0, 1, 1)]
    results = await asyncio.gather(*(shared.notifications_after.load(key) for key in keys))
    assert opened[0] == 1  # one unit of work, one query, for all of them
    for (user_id, cursor), rows in zip(keys, results, strict=True):
        assert [n.seq for n in rows] == [1, 2][cursor:]
        payloads: list[Any] = [n.view.payload for n in rows]
        assert all(p["user"] == user_id for p in payloads)
    # Sockets of one user at one cursor share the views: executed once (resolvers/broadcast.py).
    assert results[0] is results[1] and results[0][0].view is results[2][0].view

    # The next poke reads again: nothing is cached between loop turns.
    await _tell(uow, users[0], 1)
    assert [n.seq for n in await shared.notifications_after.load((users[0], 2))] == [3]
    assert opened[0] == 2


async def test_one_catalog_event_is_read_once_for_every_subscriber(uow: Any) -> None:
    sku = await add_sku(uow(), SkuSpec.create(
        name="shared-read", gpu_model="H100", gpu_count=1, vcpus=8, ram_gib=64, disk_gib=100,
        region="eu-west", hourly_price_minor=100, currency="USD"))  # fmt: skip
    counted, opened = _counting(uow)
    shared = make_shared_reads(counted)
    seen = await asyncio.gather(*(shared.catalog_change(41, sku.id, "added") for _ in range(500)))
    assert opened[0] == 1
    assert len({id(change) for change in seen}) == 1  # one object: executed once (broadcast.py)
    assert seen[0].sku is not None and seen[0].sku.name == "shared-read"
    await shared.catalog_change(42, sku.id, "updated")  # another event reads afresh
    assert opened[0] == 2


async def test_a_waiter_reads_again_when_the_first_reader_is_cancelled(uow: Any) -> None:
    sku = await add_sku(uow(), SkuSpec.create(
        name="shared-cancel", gpu_model="H100", gpu_count=1, vcpus=8, ram_gib=64, disk_gib=100,
        region="eu-west", hourly_price_minor=100, currency="USD"))  # fmt: skip
    counted, opened = _counting(uow)
    shared = make_shared_reads(counted)
    leader = asyncio.ensure_future(shared.catalog_change(7, sku.id, "added"))
    await asyncio.sleep(0)  # the leader has started its read
    waiter = asyncio.ensure_future(shared.catalog_change(7, sku.id, "added"))
    await asyncio.sleep(0)
    leader.cancel()
    found = await waiter
    assert found.sku is not None and found.sku.name == "shared-cancel"  # read again
    assert opened[0] == 2


async def test_a_poke_is_read_once_for_every_live_subscription_before_they_wake(uow: Any) -> None:
    users = [await stored_user(uow) for _ in range(10)]
    for user_id in users:
        await _tell(uow, user_id, 2)
    counted, opened = _counting(uow)
    shared = make_shared_reads(counted)
    # Three subscriptions per user: two at seq 0, one that has seen the first notification.
    cursors = [shared.cursors.hold(user_id, last) for user_id in users for last in (0, 0, 1)]
    poke = {"id": 77, "payload": {"userIds": users[:5]}}
    await warm_notifications(shared, poke)
    assert opened[0] == 1  # one query for the ten (user, seq) keys of the five users named
    assert poke["payload"]["userIds"] == frozenset(users[:5])

    # Woken, each reads what the warm-up made: no query, the same objects for one key.
    woken = [c for c in cursors if c.user_id in users[:5]]
    got = await asyncio.gather(*(shared.notifications_on(77, c.user_id, c.last) for c in woken))
    assert opened[0] == 1
    assert [[n.seq for n in rows] for rows in got] == [[1, 2], [1, 2], [2]] * 5
    assert got[0] is got[1]

    # A subscription that moved on reads for itself; a later poke reads afresh.
    assert [n.seq for n in await shared.notifications_on(77, users[0], 2)] == []
    assert opened[0] == 2
    for cursor in cursors:
        shared.cursors.release(cursor)
    assert shared.cursors.keys(users) == set()
    await warm_notifications(shared, {"id": 78, "payload": {"userIds": users}})
    assert opened[0] == 2  # no live subscription: nothing to read
