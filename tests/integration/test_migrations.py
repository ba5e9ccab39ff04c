"""Alembic is the only source of the schema: up, down and up again on an empty database."""

from __future__ import annotations

import asyncio

import asyncpg
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

# Imported to register their tables on `metadata`.
import infra.db.allocation_tables
import infra.db.compute_tables
import infra.db.fleet_tables
import infra.db.money_tables
import infra.db.notification_tables
import infra.db.secret_tables
import infra.db.ssh_ca_tables  # noqa: F401
from infra import migrate
from infra.db.tables import metadata
from tests.support.servers import ServerUrls, create_database, drop_database


def _tables(url: str) -> set[str]:
    async def read() -> set[str]:
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            return {r["tablename"] for r in rows}
        finally:
            await conn.close()

    return asyncio.run(read())


def _diff_against_metadata(url: str) -> list[object]:
    # Alembic compares on a sync connection; run_sync lends it one over asyncpg.
    from infra.db.engine import make_engine

    async def compare() -> list[object]:
        engine = make_engine(url, pool_size=1)
        try:
            async with engine.connect() as conn:

                def run(sync_conn: Connection) -> list[object]:
                    return list(compare_metadata(MigrationContext.configure(sync_conn), metadata))

                return await conn.run_sync(run)
        finally:
            await engine.dispose()

    return asyncio.run(compare())


def test_upgrade_downgrade_upgrade_on_empty_database(servers: ServerUrls) -> None:
    name, url = create_database(servers.admin_database_url, prefix="gpucloud_migr")
    try:
        assert _tables(url) == set()
        migrate.upgrade(url)
        assert {"skus", "outbox", "alembic_version"} <= _tables(url)
        assert _diff_against_metadata(url) == [], "migrations and infra/db/tables.py disagree"
        migrate.downgrade(url, "base")
        assert _tables(url) == {"alembic_version"}
        migrate.upgrade(url)
        assert {"skus", "outbox"} <= _tables(url)
    finally:
        drop_database(servers.admin_database_url, name)


OLD_ALLOCATIONS = """
    INSERT INTO users (email) VALUES ('old@example.com');
    INSERT INTO skus (name, gpu_model, gpu_count, vcpus, ram_gib, disk_gib, region,
                      hourly_price_minor, currency)
         VALUES ('a', 'H200', 1, 8, 64, 100, 'eu-west', 399, 'USD'),
                ('b', 'H100', 1, 8, 64, 100, 'us-east', 249, 'EUR');
    INSERT INTO allocations (user_id, sku_id, state) VALUES (1, 1, 'requested'), (1, 2, 'requested');
"""


def test_allocations_made_before_agreed_prices_take_their_skus_price(servers: ServerUrls) -> None:
    name, url = create_database(servers.admin_database_url, prefix="gpucloud_migr")
    try:
        migrate.upgrade(url, "0009")
        asyncio.run(_execute(url, OLD_ALLOCATIONS))
        migrate.upgrade(url)
        query = "SELECT sku_id, hourly_price_minor, currency FROM allocations ORDER BY id"
        rows = asyncio.run(_fetch(url, query))
        assert rows == [(1, 399, "USD"), (2, 249, "EUR")]
    finally:
        drop_database(servers.admin_database_url, name)


async def _execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _fetch(url: str, sql: str) -> list[tuple[object, ...]]:
    conn = await asyncpg.connect(url)
    try:
        return [tuple(row) for row in await conn.fetch(sql)]
    finally:
        await conn.close()
