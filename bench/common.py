"""What the benchmarks share: the query, a throwaway database (created, migrated through the
real CLI, seeded, and dropped whatever happens) and a request straight into the ASGI app."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import orjson

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
HOST = "127.0.0.1"

SELECTION = (
    "edges { cursor node { id name gpuModel gpuCount vcpus ramGib diskGib region "
    "hourlyPrice { amountMinor currency } status } } pageInfo { hasNextPage endCursor }"
)
QUERY = f"query Bench {{ skus(first: 50) {{ {SELECTION} }} }}"
COUNT_QUERY = f"query Count($first: Int!) {{ skus(first: $first) {{ {SELECTION} }} }}"
SKU_ROWS = 150  # every tenth is retired, so the default ACTIVE filter has rows to skip


def graphql_body(query: str, variables: dict[str, Any] | None = None) -> bytes:
    return orjson.dumps({"query": query, "variables": variables or {}})


async def asgi_post(app: Any, body: bytes, headers: dict[str, str] | None = None) -> None:
    """One POST /graphql straight into the ASGI app: no HTTP client, no sockets in the timing."""
    raw = [(b"host", b"bench"), (b"content-type", b"application/json"),
           (b"content-length", str(len(body)).encode())]  # fmt: skip
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/graphql", "raw_path": b"/graphql", "query_string": b"",
        "root_path": "", "client": (HOST, 40000), "server": (HOST, 80), "headers": raw,
    }  # fmt: skip
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    status = 0

    async def receive() -> dict[str, Any]:
        return messages.pop() if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        status = message.get("status", status)

    await app(scope, receive, send)
    assert status == 200, status


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    scheme = "postgresql" if parts.scheme.startswith("postgres") else parts.scheme
    return parts._replace(scheme=scheme, path=f"/{name}").geturl()


async def _admin(admin_url: str, sql: str) -> None:
    conn = await asyncpg.connect(with_database(admin_url, urlsplit(admin_url).path.lstrip("/")))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def migrate(database_url: str) -> None:
    # Through the real CLI, as a deployment would; alembic's env.py runs its own event loop.
    env = {**os.environ, "DATABASE_URL": database_url, "GPUCLOUD_LOG_LEVEL": "warning"}
    argv = [sys.executable, "-m", "gpucloud", "migrate"]
    done = await asyncio.to_thread(
        subprocess.run, argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"migrate failed:\n{done.stdout}{done.stderr}")


def sku_rows(count: int) -> list[tuple[Any, ...]]:
    models = (("H200", 399), ("H100", 249), ("A100", 129), ("L40S", 99))
    regions = ("eu-west", "us-east", "ap-south")
    now = datetime.now(UTC)
    rows = []
    for i in range(count):
        model, price = models[i % len(models)]
        gpus = 1 << (i % 4)
        retired = i % 10 == 9
        rows.append((
            f"{model.lower()}x{gpus}-{i:03d}", model, gpus, 12 * gpus, 120 * gpus, 1000 * gpus,
            regions[i % len(regions)], price * gpus, "USD",
            "retired" if retired else "active", now if retired else None,
        ))  # fmt: skip
    return rows


async def seed(database_url: str) -> None:
    columns = [
        "name", "gpu_model", "gpu_count", "vcpus", "ram_gib", "disk_gib", "region",
        "hourly_price_minor", "currency", "status", "retired_at",
    ]  # fmt: skip
    conn = await asyncpg.connect(database_url)
    try:
        await conn.copy_records_to_table("skus", records=sku_rows(SKU_ROWS), columns=columns)
        await conn.execute("ANALYZE skus")
    finally:
        await conn.close()


@dataclass(frozen=True)
class BenchDatabase:
    name: str
    env: dict[str, str]  # settings for the app: this database, Redis, a namespace of its own


@contextlib.asynccontextmanager
async def bench_database() -> AsyncIterator[BenchDatabase]:
    """A fresh, migrated and seeded database on the server named by DATABASE_URL (default:
    local PostgreSQL), dropped at the end whatever happens."""
    admin_url = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    tag = secrets.token_hex(4)
    name = f"gpucloud_bench_{tag}"
    env = {
        "DATABASE_URL": with_database(admin_url, name),
        "REDIS_URL": os.environ.get("REDIS_URL", DEFAULT_REDIS_URL),
        "GPUCLOUD_REDIS_NAMESPACE": f"gpucloud_bench_{tag}",
    }
    await _admin(admin_url, f'CREATE DATABASE "{name}"')
    try:
        await migrate(env["DATABASE_URL"])
        await seed(env["DATABASE_URL"])
        yield BenchDatabase(name, env)
    finally:
        # FORCE ends any connection a crashed server left behind.
        await _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        print(f"\ndropped {name}")


@contextlib.asynccontextmanager
async def running_app(env: dict[str, str]) -> AsyncIterator[Any]:
    """The real app in-process with its lifespan running and its event hub subscribed (the
    result cache stores nothing before that); logging at warning, so no request log."""
    from asgi_lifespan import LifespanManager

    from gpucloud.app import create_app
    from infra.logging import configure_logging
    from infra.settings import load_settings

    configure_logging("warning")
    app = create_app(load_settings(env))
    async with LifespanManager(app):
        await app.state.resources.hub.wait_ready()
        yield app


def run_main(coro: Any) -> int:
    try:
        import uvloop  # the cheaper loop for the generator; uvicorn picks it for the servers too
    except ImportError:
        return int(asyncio.run(coro))
    return int(uvloop.run(coro))
