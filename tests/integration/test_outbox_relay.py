"""The outbox relay on real PostgreSQL: publish once, mark sent, survive failures, share work."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import select

from domain.catalog import services
from infra.db.outbox import OutboxMessage
from infra.db.tables import outbox
from jobs.relay import OutboxRelay
from tests.support.catalog import make_spec


def _into(sent: list[OutboxMessage]) -> Callable[[OutboxMessage], Awaitable[None]]:
    async def publish(message: OutboxMessage) -> None:
        sent.append(message)

    return publish


async def _unpublished(engine) -> int:  # type: ignore[no-untyped-def]
    async with engine.connect() as conn:
        rows = await conn.execute(select(outbox.c.id).where(outbox.c.published_at.is_(None)))
        return len(rows.all())


async def test_publishes_each_row_once_and_marks_it(uow, engine, database_url) -> None:
    for i in range(3):
        await services.add_sku(uow(), make_spec(f"s{i}"))
    sent: list[OutboxMessage] = []
    relay = OutboxRelay(engine, database_url, _into(sent))
    assert await relay.run_once() == 3
    assert await relay.run_once() == 0
    assert [m.payload["kind"] for m in sent] == ["added"] * 3
    assert [m.id for m in sent] == sorted(m.id for m in sent)
    assert await _unpublished(engine) == 0


async def test_a_failed_publish_keeps_rows_for_the_next_try(uow, engine, database_url) -> None:
    await services.add_sku(uow(), make_spec("kept"))

    async def broken(_: OutboxMessage) -> None:
        raise ConnectionError("redis down")

    with pytest.raises(ConnectionError):
        await OutboxRelay(engine, database_url, broken).run_once()
    assert await _unpublished(engine) == 1
    sent: list[OutboxMessage] = []
    assert await OutboxRelay(engine, database_url, _into(sent)).run_once() == 1
    assert len(sent) == 1


async def test_two_relays_share_rows_without_doubles(uow, engine, database_url) -> None:
    for i in range(40):
        await services.add_sku(uow(), make_spec(f"r{i}"))
    sent: list[int] = []

    async def slow_publish(message: OutboxMessage) -> None:
        sent.append(message.id)
        await asyncio.sleep(0)

    relays = [OutboxRelay(engine, database_url, slow_publish, batch_size=7) for _ in range(2)]
    while await _unpublished(engine):
        await asyncio.gather(*(r.run_once() for r in relays))
    assert sorted(sent) == sorted(set(sent))
    assert len(sent) == 40


async def test_run_wakes_on_notify_without_waiting_for_the_poll(uow, engine, database_url) -> None:
    got = asyncio.Event()
    sent: list[OutboxMessage] = []

    async def publish(message: OutboxMessage) -> None:
        sent.append(message)
        got.set()

    stop = asyncio.Event()
    # A one-hour poll: only LISTEN/NOTIFY can deliver within the bound below.
    relay = OutboxRelay(engine, database_url, publish, poll_seconds=3600)
    task = asyncio.create_task(relay.run(stop))
    try:
        await asyncio.sleep(0.5)  # let it LISTEN
        await services.add_sku(uow(), make_spec("wake"))
        await asyncio.wait_for(got.wait(), 15)
        assert sent[0].payload["kind"] == "added"
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
