"""LISTEN on a PostgreSQL channel with a dedicated asyncpg connection (wake-ups, not data)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from infra.db.engine import async_url


def _asyncpg_dsn(url: str) -> str:
    return async_url(url).replace("postgresql+asyncpg://", "postgresql://", 1)


async def open_listener(database_url: str, channel: str, wake: asyncio.Event) -> Any:
    """Connect and set `wake` on every notification; the caller closes the connection."""
    conn = await asyncpg.connect(_asyncpg_dsn(database_url))

    def on_notify(*_: object) -> None:
        wake.set()

    await conn.add_listener(channel, on_notify)
    return conn
