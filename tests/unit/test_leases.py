"""domain/leases.py without a database: who works under which lease, and the heartbeat."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta

from domain.leases import Claimed, Holding, heartbeat, under_lease

LEASE = timedelta(seconds=0.06)


class _Row:
    """One leased row, as the SQL keeps it: a generation and whether someone holds it."""

    def __init__(self) -> None:
        self.token = 0
        self.held = False
        self.renewals = 0
        self.released: list[int] = []

    async def claim_due(self, now: datetime, lease: timedelta, limit: int) -> Sequence[Claimed]:
        raise AssertionError("not used here")

    async def take_lease(self, row_id: int, seconds: float) -> int | None:
        if self.held:
            return None
        self.token, self.held = self.token + 1, True
        return self.token

    async def renew_lease(self, row_id: int, token: int, seconds: float) -> bool:
        self.renewals += token == self.token
        return token == self.token

    async def release_lease(self, row_id: int, token: int) -> bool:
        self.released.append(token)
        if token == self.token:
            self.held = False
        return token == self.token

    async def revoke_lease(self, row_id: int) -> int:
        self.token, self.held = self.token + 1, False
        return self.token


class _Tx:
    def __init__(self, row: _Row) -> None:
        self.row = row

    async def __aenter__(self) -> _Tx:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def commit(self) -> None:
        return None


async def _run(row: _Row, token: int | None, renewals: int = 0) -> tuple[object, list[int]]:
    """`under_lease` with a step that lasts until the lease was renewed `renewals` times."""
    seen: list[int] = []

    async def work(generation: int) -> str:
        seen.append(generation)
        while row.renewals < renewals:
            await asyncio.sleep(0.005)
        return "done"

    result = await asyncio.wait_for(
        under_lease(lambda: _Tx(row), lambda tx: tx.row, 1, token, LEASE, "row 1", work), 10
    )
    return result, seen


async def test_a_direct_call_takes_the_lease_works_under_its_generation_and_releases_it() -> None:
    row = _Row()
    assert await _run(row, None) == ("done", [1])
    assert row.released == [1] and not row.held


async def test_a_held_or_superseded_lease_means_no_work() -> None:
    row = _Row()
    assert await row.take_lease(1, 60) == 1  # another worker holds it
    assert await _run(row, None) == (None, [])
    assert await row.revoke_lease(1) == 2  # a stop superseded the claim of generation 1
    assert await _run(row, 1) == (None, [])
    assert row.released == []  # nothing to release: nothing was held


async def test_the_heartbeat_renews_while_a_step_outlasts_the_lease() -> None:
    row = _Row()
    token = await row.take_lease(1, 60)
    # The claim's check renews once; the step then outlasts three leases' worth of beats.
    assert await _run(row, token, renewals=1 + 3 * 3) == ("done", [1])
    assert row.released == [1]


async def _lost(holding: Holding) -> None:
    while not holding.lost:
        await asyncio.sleep(0.005)


async def test_a_revoked_lease_is_reported_lost_and_not_renewed_again() -> None:
    row = _Row()
    token = await row.take_lease(1, 60)

    async def renew() -> bool:
        return await row.renew_lease(1, token or 0, 60)

    async with heartbeat(renew, LEASE, "row 1") as holding:
        await row.revoke_lease(1)
        await asyncio.wait_for(_lost(holding), 10)
        renewals = row.renewals
        await asyncio.sleep(LEASE.total_seconds())
    assert row.renewals == renewals == 0
