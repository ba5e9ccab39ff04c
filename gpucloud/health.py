"""Liveness, readiness and the metrics scrape."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gpucloud.resources import Resources
from infra.broker import JOB_STATS_KEY
from infra.db import outbox
from infra.metrics import ScrapeSnapshot

_CHECK_TIMEOUT = 2.0


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _check_postgres(res: Resources) -> None:
    async with res.engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def _check_redis(res: Resources) -> None:
    await res.redis.ping()


async def _outcome(check: Awaitable[None]) -> str:
    try:
        await asyncio.wait_for(check, _CHECK_TIMEOUT)
    except TimeoutError:
        return "timed out"
    except Exception as exc:  # any failure means not ready; its kind is enough for the operator
        return f"unavailable ({type(exc).__name__})"
    return "ok"


async def readyz(request: Request) -> Response:
    res: Resources = request.app.state.resources
    pg, rd = await asyncio.gather(_outcome(_check_postgres(res)), _outcome(_check_redis(res)))
    checks = {"postgres": pg, "redis": rd}
    failing = [name for name, outcome in checks.items() if outcome != "ok"]
    body = {
        "status": "ready" if not failing else "unavailable",
        "checks": checks,
        "failing": failing,
    }
    return JSONResponse(body, status_code=503 if failing else 200)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _snapshot(res: Resources) -> ScrapeSnapshot:
    snap = ScrapeSnapshot()
    ns = res.settings.redis_namespace

    async def from_redis() -> None:
        raw = await res.redis.hgetall(f"{ns}:{JOB_STATS_KEY}")
        for field, value in raw.items():
            actor, _, result = _text(field).rpartition(":")
            snap.jobs[(actor, result)] = int(value)
        async for raw_key in res.redis.scan_iter(match=f"{ns}:dramatiq:*.msgs", count=100):
            key = _text(raw_key)
            queue = key.removeprefix(f"{ns}:dramatiq:").removesuffix(".msgs")
            snap.queue_messages[queue] = int(await res.redis.hlen(key))

    async def from_postgres() -> None:
        async with res.engine.connect() as conn:
            snap.outbox_unpublished = await outbox.count_unpublished(conn)

    redis_ok, pg_ok = await asyncio.gather(_outcome(from_redis()), _outcome(from_postgres()))
    snap.sources_up = {"redis": redis_ok == "ok", "postgres": pg_ok == "ok"}
    return snap


async def metrics(request: Request) -> Response:
    res: Resources = request.app.state.resources
    res.metrics.state.snapshot = await _snapshot(res)
    return Response(generate_latest(res.metrics.registry), media_type=CONTENT_TYPE_LATEST)
