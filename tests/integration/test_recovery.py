"""PostgreSQL or Redis going away and coming back: the API says which part is down, answers
with a clear error, keeps running, and recovers by itself."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient

from gpucloud.app import create_app
from infra import migrate
from infra.embedded.postgres import EmbeddedPostgres
from infra.embedded.redis import EmbeddedRedis
from tests.api.helpers import codes, gql
from tests.support.processes import free_port

QUERY = "{ skus { edges { node { name } } } }"


@pytest.fixture
def state_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="gpucloud-recovery-"))
    path.chmod(0o755)  # embedded PostgreSQL runs as an unprivileged user
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def _eventually_ready(client: AsyncClient, timeout: float = 30) -> dict[str, object]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        ready = await client.get("/readyz")
        if ready.status_code == 200 or asyncio.get_running_loop().time() > deadline:
            return ready.json()  # type: ignore[no-any-return]
        await asyncio.sleep(0.3)


async def test_redis_restart(settings, state_dir) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    redis = EmbeddedRedis(state_dir / "redis", port=port)
    app = create_app(dataclasses.replace(settings, redis_url=redis.start()))
    try:
        async with (
            LifespanManager(app),
            AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as c,
        ):
            hub = app.state.resources.hub
            await hub.wait_ready()
            redis.stop()
            down = await c.get("/readyz")
            assert down.status_code == 503 and down.json()["failing"] == ["redis"]
            assert (await c.get("/healthz")).status_code == 200

            redis = EmbeddedRedis(state_dir / "redis", port=port)
            redis.start()
            assert (await _eventually_ready(c))["failing"] == []
            # The event hub re-subscribes by itself: a publish after the restart is delivered.
            await hub.wait_ready(timeout=30)
            async with hub.subscribe("catalog") as stream:
                await hub.publish("catalog", {"id": 1})
                assert (await asyncio.wait_for(anext(stream), 10)) == {"id": 1}
    finally:
        redis.stop()


async def test_postgres_restart(settings, state_dir) -> None:  # type: ignore[no-untyped-def]
    pg = EmbeddedPostgres(state_dir / "pg")
    url = pg.start()
    try:
        await asyncio.to_thread(migrate.upgrade, url)
        # No result cache: this test is about the database answering, not about cached pages.
        app = create_app(dataclasses.replace(settings, database_url=url, result_cache_seconds=0))
        async with (
            LifespanManager(app),
            AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as c,
        ):
            assert "errors" not in await gql(c, QUERY)
            await asyncio.to_thread(pg.stop)

            down = await gql(c, QUERY)
            assert codes(down) == ["SERVICE_UNAVAILABLE"]
            assert down["errors"][0]["message"] == "The database is unavailable; try again shortly."
            ready = await c.get("/readyz")
            assert ready.status_code == 503 and ready.json()["failing"] == ["postgres"]

            await asyncio.to_thread(pg.start)
            # No pre-ping: the pools learn of their dead connections by themselves. The first
            # read after the restart answers, or at worst says the database is unavailable; the
            # next one answers.
            first = await gql(c, QUERY)
            assert "errors" not in first or codes(first) == ["SERVICE_UNAVAILABLE"]
            assert "errors" not in await gql(c, QUERY)
            assert (await _eventually_ready(c))["failing"] == []
            assert "errors" not in await gql(c, QUERY)  # the pool replaced its dead connections
    finally:
        await asyncio.to_thread(pg.stop)
