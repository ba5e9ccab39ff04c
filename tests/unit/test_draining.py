"""`Draining`: every socket held is told once the server begins to stop (a socket that opens
later, at once), and `drain` reports whether all had left within the grace period."""

from __future__ import annotations

import asyncio

from gpucloud.draining import Draining


async def test_each_socket_is_told_and_drain_waits_for_them_to_leave() -> None:
    draining = Draining()
    told: list[str] = []
    leave = asyncio.Event()

    async def socket(name: str) -> None:
        async def close() -> None:
            told.append(name)
            leave.set()

        with draining.holding(close):
            await leave.wait()
            await asyncio.sleep(0)  # its closing work, still counted as open

    sockets = [asyncio.create_task(socket(name)) for name in ("a", "b")]
    await asyncio.sleep(0)
    assert draining.open == 2 and not draining.begun.is_set()
    assert await draining.drain(grace=30)
    assert sorted(told) == ["a", "b"] and draining.open == 0
    await asyncio.gather(*sockets)

    late = asyncio.create_task(socket("late"))  # opened after the stop began: told at once
    await late
    assert told[-1] == "late" and draining.open == 0


async def test_drain_gives_up_after_the_grace_period() -> None:
    draining = Draining()
    stuck = asyncio.Event()

    async def deaf() -> None:
        with draining.holding():  # watches nothing: it will not leave by itself
            await stuck.wait()

    task = asyncio.create_task(deaf())
    await asyncio.sleep(0)
    assert not await draining.drain(grace=0.05)
    assert draining.open == 1
    stuck.set()
    await task
    assert draining.open == 0 and await draining.drain(grace=0.05)
