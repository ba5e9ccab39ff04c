"""The async engine, made at start-up (never at import)."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def async_url(url: str) -> str:
    """Accept the usual `postgresql://` form and select the asyncpg driver."""
    parts = urlsplit(url)
    if parts.scheme in ("postgresql", "postgres"):
        parts = parts._replace(scheme="postgresql+asyncpg")
    return urlunsplit(parts)


def make_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,  # a restarted PostgreSQL must not poison the pool
        pool_recycle=1800,
        pool_timeout=5,
        # Fail fast when PostgreSQL is down instead of holding the request for a minute.
        connect_args={"timeout": 5, "command_timeout": 30},
    )
