"""Wake, then poll: a committed change that makes work due wakes the worker's Dispatcher at once
(migration 0010's triggers NOTIFY gpucloud_work; jobs/loop.py LISTENs). The Dispatchers here
poll once an hour, so whatever they send before the test's own timeout they were woken for."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.fleet.nodes import NodeAuth
from domain.fleet.records import NewNode
from domain.leases import Claimed
from domain.ports import UnitOfWork
from infra.db.leases import WORK_CHANNEL
from infra.db.listen import open_listener
from jobs.fleet import claim_nodes
from jobs.loop import Dispatcher, Listener

Uow = Callable[[], UnitOfWork]
HOUR = 3600.0


class _Sent:
    def __init__(self) -> None:
        self.items: list[tuple[int, int]] = []
        self.ticks = 0
        self.changed = asyncio.Event()

    def send(self, row_id: int, token: int) -> None:
        self.items.append((row_id, token))
        self.changed.set()

    async def claim(
        self, uow: UnitOfWork, now: datetime, lease: timedelta, limit: int
    ) -> list[Claimed]:
        claimed = list(await claim_nodes(uow, now, lease, limit))
        self.ticks += 1
        self.changed.set()
        return claimed

    async def until(self, check: Callable[[], bool]) -> None:
        async with asyncio.timeout(30):
            while not check():
                self.changed.clear()
                await self.changed.wait()


@asynccontextmanager
async def _dispatching(uow: Uow, database_url: str, sent: _Sent) -> AsyncIterator[None]:
    def listen(wake: asyncio.Event) -> asyncio.Future[Listener]:
        return asyncio.ensure_future(open_listener(database_url, WORK_CHANNEL, wake))

    dispatcher = Dispatcher(uow, sent.claim, sent.send, timedelta(minutes=1), HOUR, "fleet", listen)
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        await sent.until(lambda: sent.ticks >= 1)  # listening, and the first tick done
        yield
    finally:
        stop.set()
        await task


def _node(name: str, host: str, due: datetime | None) -> NewNode:
    return NewNode(
        name=name,
        host=host,
        port=22,
        ssh_user="ubuntu",
        auth=NodeAuth.CA,
        credential_secret_id=None,
        host_key=None,
        region="eu-west",
        labels={},
        next_probe_at=due,
    )


async def test_a_commit_that_makes_work_due_wakes_the_dispatcher(
    uow: Uow, engine: AsyncEngine, database_url: str
) -> None:
    sent = _Sent()
    async with _dispatching(uow, database_url, sent):
        async with uow() as tx:
            later = await tx.nodes.add(
                _node("later", "10.0.0.1", datetime.now(UTC) + timedelta(hours=2))
            )
            due = await tx.nodes.add(_node("due", "10.0.0.2", datetime.now(UTC)))
            await tx.commit()
        await sent.until(lambda: bool(sent.items))
        assert sent.items == [(due.id, 1)]
        # Made due by a later commit (an admin asks for a probe now): woken again.
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE nodes SET next_probe_at = now() WHERE id = :id"), {"id": later.id}
            )
        await sent.until(lambda: len(sent.items) == 2)
        assert sent.items[1] == (later.id, 1)


async def test_a_released_or_revoked_lease_on_a_due_row_wakes_the_dispatcher(
    uow: Uow, database_url: str
) -> None:
    async with uow() as tx:
        node = await tx.nodes.add(_node("n", "10.0.0.3", datetime.now(UTC)))
        token = await tx.nodes.take_lease(node.id, 60)
        await tx.commit()
    assert token == 1
    sent = _Sent()
    async with _dispatching(uow, database_url, sent):
        assert sent.items == []  # leased: not claimed, however due
        async with uow() as tx:  # the step ended with the row still due (say, a retry now)
            assert await tx.nodes.release_lease(node.id, token)
            await tx.commit()
        await sent.until(lambda: bool(sent.items))
        assert sent.items == [(node.id, 2)]
        async with uow() as tx:  # a stop supersedes that claim: due at once, woken again
            assert await tx.nodes.revoke_lease(node.id) == 3
            await tx.commit()
        await sent.until(lambda: len(sent.items) == 2)
        assert sent.items[1] == (node.id, 4)


async def test_a_full_batch_is_followed_by_another_claim_at_once(uow: Uow) -> None:
    now = datetime.now(UTC)
    async with uow() as tx:
        nodes = [await tx.nodes.add(_node(f"n{i}", f"10.0.1.{i}", now)) for i in range(3)]
        await tx.commit()
    sent = _Sent()
    # No listener and an hour's tick: only "the batch was full, more may be due" claims again.
    dispatcher = Dispatcher(
        uow, sent.claim, sent.send, timedelta(minutes=1), HOUR, "fleet", batch=2
    )
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        await sent.until(lambda: len(sent.items) == 3)
        assert sorted(row_id for row_id, _ in sent.items) == [n.id for n in nodes]
        assert sent.ticks == 2  # a full batch of two, then the last one
    finally:
        stop.set()
        await task
