"""A refused credential says why in `extensions.reason`, to whoever holds it; a guess learns
only INVALID."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import replace
from typing import Any

import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.audit.records import RequestMeta
from domain.identity import admin
from domain.identity.accounts import AccountStatus
from domain.identity.principal import SYSTEM
from infra.settings import Settings
from tests.support.identity import Accounts

VIEWER = {"query": "{ viewer { email } }"}


@pytest.fixture
async def uncached(settings: Settings, engine: AsyncEngine) -> AsyncIterator[Accounts]:
    """Without the credential cache, so database edits (expiry) show at once."""
    from gpucloud.app import create_app

    application = create_app(replace(settings, auth_cache_seconds=0))
    async with LifespanManager(application), AsyncExitStack() as stack:
        yield Accounts(application, stack)


async def refusal(client: Any) -> tuple[str, str | None]:
    result = (await client.post("/graphql", json=VIEWER)).json()
    extensions = result["errors"][0]["extensions"]
    return extensions["code"], extensions.get("reason")


async def test_each_reason(uncached: Accounts, engine: AsyncEngine) -> None:
    account = await uncached.sign_up()
    guessed = await uncached.bearer("gpc_" + "A" * 43)
    assert await refusal(guessed) == ("UNAUTHENTICATED", "INVALID")
    anonymous = await uncached.client()
    assert await refusal(anonymous) == ("UNAUTHENTICATED", None)  # nothing was presented

    expiring = await uncached.bearer(await account.token(["ACCOUNT_READ"], name="expiring"))
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE api_tokens SET expires_at = now() - interval '1 second' "
                                "WHERE name = 'expiring'"))  # fmt: skip
    assert await refusal(expiring) == ("UNAUTHENTICATED", "EXPIRED")

    revoked_secret = await account.token(["ACCOUNT_READ", "ACCOUNT_WRITE"], name="revoked")
    revoked = await uncached.bearer(revoked_secret)
    token_id = (await revoked.post("/graphql", json={"query": "{ apiTokens { edges { node { id name } } } }"})).json()  # fmt: skip
    mine = [e["node"]["id"] for e in token_id["data"]["apiTokens"]["edges"]
            if e["node"]["name"] == "revoked"]  # fmt: skip
    await revoked.post("/graphql", json={"query": 'mutation { revokeApiToken(id: "%s") { __typename } }' % mine[0]})  # fmt: skip
    assert await refusal(revoked) == ("UNAUTHENTICATED", "REVOKED")

    idle = await uncached.sign_up()
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE sessions SET last_seen_at = now() - interval '1 day' "
                                "WHERE user_id = (SELECT id FROM users WHERE email = :e)"),
                           {"e": idle.email.lower()})  # fmt: skip
    assert await refusal(idle.client) == ("UNAUTHENTICATED", "EXPIRED")

    suspended = await uncached.sign_up()
    still = await uncached.bearer(await suspended.token(["ACCOUNT_READ"]))
    res = uncached.app.state.resources
    async with res.uow() as tx:
        user = await tx.users.get_by_email(suspended.email.lower())
    assert user is not None
    await admin.set_status(res.uow(), SYSTEM, user.id, AccountStatus.SUSPENDED, "test",
                           RequestMeta(request_id="test"))  # fmt: skip
    assert await refusal(still) == ("UNAUTHENTICATED", "SUSPENDED")
    # Suspension also ended the browser session: that one reads as revoked.
    assert await refusal(suspended.client) == ("UNAUTHENTICATED", "REVOKED")
