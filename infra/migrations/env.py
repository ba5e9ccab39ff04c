"""Alembic environment: runs migrations over the async engine given by `infra.migrate`."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection

# Imported to register their tables on `metadata`.
import infra.db.allocation_tables
import infra.db.compute_tables
import infra.db.fleet_tables
import infra.db.money_tables
import infra.db.notification_tables
import infra.db.secret_tables
import infra.db.ssh_ca_tables  # noqa: F401
from infra.db.engine import make_engine
from infra.db.tables import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def _main() -> None:
    engine = make_engine(config.attributes["database_url"], pool_size=1)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_run)
            await conn.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit(
        "offline migrations are not supported: run `gpucloud migrate` against a database"
    )
asyncio.run(_main())
