"""Rate limits on log-in and sign-up, counted in Redis: per address, and failures per account.

Each test builds its own app with small limits and its own Redis namespace, so counters never
leak between tests (the namespace sits under the run's, which the session fixture cleans up).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from typing import Any

from asgi_lifespan import LifespanManager
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.settings import Settings
from tests.support.identity import LOG_IN, PASSWORD, SIGN_UP, Accounts, body

CHANGE_PASSWORD = """mutation Change($current: String!, $new: String!) {
  changePassword(input: {currentPassword: $current, newPassword: $new}) { __typename
    ... on AccountError { code retryAfterSeconds } } }"""


@asynccontextmanager
async def limited_app(
    settings: Settings, redis_namespace: str, **limits: Any
) -> AsyncIterator[Accounts]:
    from gpucloud.app import create_app

    values = {
        "login_limit_per_ip": 1000,
        "login_failures_per_account": 1000,
        "signup_limit_per_ip": 1000,
        **limits,
    }
    namespace = f"{redis_namespace}:{uuid.uuid4().hex[:8]}"
    application = create_app(replace(settings, redis_namespace=namespace, **values))
    async with LifespanManager(application), AsyncExitStack() as stack:
        yield Accounts(application, stack)


async def log_in(client: AsyncClient, email: str, password: str) -> dict[str, Any]:
    client.cookies.clear()  # each attempt as a signed-out browser at that address
    response = await client.post(
        "/graphql", json=body(LOG_IN, {"email": email, "password": password})
    )
    assert response.status_code == 200
    payload = response.json()["data"]["logIn"]
    if payload["__typename"] == "AccountError" and payload["code"] == "RATE_LIMITED":
        assert "set-cookie" not in response.headers
    return payload  # type: ignore[no-any-return]


async def sign_up(client: AsyncClient, email: str) -> dict[str, Any]:
    client.cookies.clear()
    response = await client.post(
        "/graphql", json=body(SIGN_UP, {"email": email, "password": PASSWORD})
    )
    return response.json()["data"]["signUp"]  # type: ignore[no-any-return]


def assert_rate_limited(payload: dict[str, Any], window: int) -> None:
    assert payload["__typename"] == "AccountError", payload
    assert payload["code"] == "RATE_LIMITED"
    assert 0 < payload["retryAfterSeconds"] <= window
    assert f"{payload['retryAfterSeconds']} seconds" in payload["message"]


async def test_login_attempts_per_address(
    settings: Settings, engine: AsyncEngine, redis_namespace: str
) -> None:
    async with limited_app(settings, redis_namespace, login_limit_per_ip=3) as accounts:
        account = await accounts.sign_up()
        here = await accounts.client(ip="10.0.0.1")
        outcomes = [
            await log_in(here, account.email, "wrong password 1"),
            await log_in(here, "nobody@example.com", PASSWORD),
            await log_in(here, account.email, account.password),
        ]
        assert [o.get("code", o["__typename"]) for o in outcomes] == [
            "INVALID_CREDENTIALS",
            "INVALID_CREDENTIALS",
            "SessionPayload",
        ]
        # The fourth attempt from this address is refused, right password or not.
        assert_rate_limited(await log_in(here, account.email, account.password), 60)
        assert_rate_limited(await log_in(here, "nobody@example.com", PASSWORD), 60)

        # Another address is not affected.
        there = await accounts.client(ip="10.0.0.2")
        assert (await log_in(there, account.email, account.password))["__typename"] == (
            "SessionPayload"
        )
    async with engine.connect() as conn:
        sessions = (await conn.execute(text("SELECT count(*) FROM sessions"))).scalar_one()
    assert sessions == 3  # sign-up, the third attempt, the other address


async def test_failures_per_account_block_that_account_from_every_address(
    settings: Settings, engine: AsyncEngine, redis_namespace: str
) -> None:
    async with limited_app(settings, redis_namespace, login_failures_per_account=3) as accounts:
        victim = await accounts.sign_up()
        bystander = await accounts.sign_up()
        attacker = await accounts.client(ip="10.0.0.66")
        for i in range(3):
            failed = await log_in(attacker, victim.email, f"guess number {i}!")
            assert failed["code"] == "INVALID_CREDENTIALS"

        # The right password, from the owner's own address, is refused for now ...
        owner = await accounts.client(ip="10.0.0.2")
        assert_rate_limited(await log_in(owner, victim.email, victim.password), 900)
        # ... also spelled differently (the counter is per normalised email) ...
        assert_rate_limited(await log_in(owner, victim.email.upper(), victim.password), 900)
        # ... and password changes with the old password are blocked too.
        change = await victim.gql(
            CHANGE_PASSWORD, {"current": victim.password, "new": "a brand new password"}
        )
        assert change["data"]["changePassword"]["code"] == "RATE_LIMITED"
        assert change["data"]["changePassword"]["retryAfterSeconds"] > 0

        # Other accounts are not blocked, not even from the attacker's address.
        for client in (attacker, owner):
            ok = await log_in(client, bystander.email, bystander.password)
            assert ok["__typename"] == "SessionPayload"


async def test_failures_count_for_unknown_emails_too(
    settings: Settings, engine: AsyncEngine, redis_namespace: str
) -> None:
    async with limited_app(settings, redis_namespace, login_failures_per_account=2) as accounts:
        client = await accounts.client(ip="10.0.0.3")
        for _ in range(2):
            assert (await log_in(client, "ghost@example.com", PASSWORD))["code"] == (
                "INVALID_CREDENTIALS"
            )
        assert_rate_limited(await log_in(client, "ghost@example.com", PASSWORD), 900)


async def test_successful_logins_do_not_count_as_failures(
    settings: Settings, engine: AsyncEngine, redis_namespace: str
) -> None:
    async with limited_app(settings, redis_namespace, login_failures_per_account=2) as accounts:
        account = await accounts.sign_up()
        client = await accounts.client(ip="10.0.0.4")
        for _ in range(4):
            assert (await log_in(client, account.email, account.password))["__typename"] == (
                "SessionPayload"
            )
        assert (await log_in(client, account.email, "wrong password!!"))["code"] == (
            "INVALID_CREDENTIALS"
        )
        assert (await log_in(client, account.email, account.password))["__typename"] == (
            "SessionPayload"
        )


async def test_sign_ups_per_address(
    settings: Settings, engine: AsyncEngine, redis_namespace: str
) -> None:
    async with limited_app(settings, redis_namespace, signup_limit_per_ip=2) as accounts:
        here = await accounts.client(ip="10.0.1.1")
        assert (await sign_up(here, "one@example.com"))["__typename"] == "SessionPayload"
        assert (await sign_up(here, "two@example.com"))["__typename"] == "SessionPayload"
        assert_rate_limited(await sign_up(here, "three@example.com"), 3600)

        there = await accounts.client(ip="10.0.1.2")
        assert (await sign_up(there, "three@example.com"))["__typename"] == "SessionPayload"
    async with engine.connect() as conn:
        made = (await conn.execute(text("SELECT email FROM users ORDER BY id"))).scalars().all()
    assert made == ["one@example.com", "two@example.com", "three@example.com"]


async def test_concurrent_guesses_cannot_exceed_the_failure_limit(
    settings: Settings, engine: AsyncEngine, redis_namespace: str
) -> None:
    async with limited_app(settings, redis_namespace, login_failures_per_account=3) as accounts:
        victim = await accounts.sign_up()
        clients = [await accounts.client(ip=f"10.0.2.{i}") for i in range(12)]
        outcomes = await asyncio.gather(
            *(log_in(c, victim.email, f"concurrent guess {i}") for i, c in enumerate(clients))
        )
        checked = [o for o in outcomes if o.get("code") == "INVALID_CREDENTIALS"]
        assert all(o.get("code") in ("INVALID_CREDENTIALS", "RATE_LIMITED") for o in outcomes)
        # At most `limit` passwords may be tried against one account per window.
        assert len(checked) <= 3
