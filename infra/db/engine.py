"""The async engine, made at start-up (never at import)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

READ_POOL_NAME = "gpucloud-reads"


def async_url(url: str) -> str:
    """Accept the usual `postgresql://` form and select the asyncpg driver."""
    parts = urlsplit(url)
    if parts.scheme in ("postgresql", "postgres"):
        parts = parts._replace(scheme="postgresql+asyncpg")
    return urlunsplit(parts)


def _discard_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """At checkout, a connection whose socket the server already closed (a restart, an
    administrator's terminate) is replaced without a round trip: asyncpg notices the closed
    socket as soon as the event loop does. Without `pool_pre_ping` (three round trips on every
    checkout: BEGIN, `;`, ROLLBACK), a connection that died unnoticed fails its first
    statement instead; SQLAlchemy then invalidates the whole pool, the unit of work answers
    ServiceUnavailable, and the next checkout connects afresh."""
    if dbapi_connection.driver_connection.is_closed():
        raise DisconnectionError("connection closed by the server")  # the pool retries


def make_engine(
    url: str, *, pool_size: int = 10, read_only: bool = False, pre_ping: bool = True
) -> AsyncEngine:
    """`read_only`: a pool for reads. Each statement runs on its own (autocommit: no BEGIN and
    ROLLBACK around it, so a one-statement read is one round trip), and PostgreSQL refuses
    writes on these sessions (`default_transaction_read_only`, set when connecting).
    `pre_ping`: test each connection with a round trip at checkout. The API turns it off (a
    request pays for it every time); the worker and the CLI keep it (a job that fails on a
    stale connection is retried only later)."""
    connect_args: dict[str, Any] = {
        # Fail fast when PostgreSQL is down instead of holding the request for a minute.
        "timeout": 5,
        "command_timeout": 30,
    }
    options: dict[str, Any] = {}
    if read_only:
        connect_args["server_settings"] = {
            "default_transaction_read_only": "on",
            "application_name": READ_POOL_NAME,  # tells them apart in pg_stat_activity
        }
        options["isolation_level"] = "AUTOCOMMIT"
    engine = create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=pre_ping,
        pool_recycle=1800,
        pool_timeout=5,
        connect_args=connect_args,
        **options,
    )
    event.listen(engine.sync_engine, "checkout", _discard_closed)
    return engine
