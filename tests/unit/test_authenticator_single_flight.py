"""Concurrent requests with one credential share a single lookup."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from domain.identity import auth
from domain.identity.principal import Principal
from domain.identity.scopes import Role
from gpucloud.auth import Authenticator
from gpucloud.principal_cache import PrincipalCache
from infra.metrics import Metrics
from infra.settings import load_settings

SETTINGS = load_settings({"DATABASE_URL": "postgresql://u@h/db", "REDIS_URL": "redis://h"})


def authenticator(cache: PrincipalCache) -> Authenticator:
    return Authenticator(kit=None, uow=lambda: None, cache=cache, settings=SETTINGS,  # type: ignore[arg-type]
                         metrics=Metrics())  # fmt: skip


async def test_one_lookup_serves_every_concurrent_request(monkeypatch: Any) -> None:
    calls = 0
    principal = Principal.for_token(1, Role.USER, 2, frozenset(), datetime.now(UTC) + timedelta(1))

    async def slow_lookup(uow: Any, secret: str) -> Principal:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return principal

    monkeypatch.setattr(auth, "authenticate_token", slow_lookup)
    cache = PrincipalCache(ttl=60)
    cache.live_epoch = lambda: 1
    shared = authenticator(cache)
    results = await asyncio.gather(*(shared.bearer("Bearer gpc_y") for _ in range(20)))
    assert all(r.principal == principal for r in results)
    assert calls == 1
    await shared.bearer("Bearer gpc_y")
    assert calls == 1  # and later requests hit the cache


async def test_a_lookup_overtaken_by_an_identity_change_is_not_shared(monkeypatch: Any) -> None:
    calls = 0
    cache = PrincipalCache(ttl=60)
    cache.live_epoch = lambda: 1
    principal = Principal.for_token(1, Role.USER, 2, frozenset(), datetime.now(UTC) + timedelta(1))

    async def lookup(uow: Any, secret: str) -> Principal:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(0.05)
            cache.invalidate()  # e.g. the token was revoked while we read it
        return principal

    monkeypatch.setattr(auth, "authenticate_token", lookup)
    shared = authenticator(cache)
    await asyncio.gather(*(shared.bearer("Bearer gpc_z") for _ in range(5)))
    assert calls == 2  # the leader's answer was stale, so one waiter looked again for all
