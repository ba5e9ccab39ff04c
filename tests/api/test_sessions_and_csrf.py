"""Session cookies and CSRF over HTTP: cookie attributes, the CSRF guard, GET never mutating,
idle and absolute expiry, and what a bad credential gets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from asgi_lifespan import LifespanManager
from httpx import AsyncClient, Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.settings import Settings
from tests.support.identity import CREATE_TOKEN, PASSWORD, SIGN_UP, Accounts, body

SESSION_COOKIE, CSRF_COOKIE = "gpucloud_session", "gpucloud_csrf"
VIEWER = "{ viewer { id email } }"
SKUS = "{ skus { edges { cursor } } }"
REVOKE = """mutation Revoke($id: ID!) { revokeApiToken(id: $id) { __typename
  ... on ApiTokenPayload { token { id status } }
  ... on AccountError { code } } }"""
INVALID_CREDENTIAL = "The credential sent is invalid, expired or revoked; sign in again."


@asynccontextmanager
async def app_with(settings: Settings, **changes: Any) -> AsyncIterator[Accounts]:
    """The real app built with other settings, and an account factory against it."""
    from gpucloud.app import create_app

    application = create_app(replace(settings, **changes))
    async with LifespanManager(application), AsyncExitStack() as stack:
        yield Accounts(application, stack)


def token_vars(name: str = "ci") -> dict[str, Any]:
    expires = (datetime.now(UTC) + timedelta(days=7)).isoformat()
    return {"name": name, "scopes": ["ACCOUNT_READ", "ACCOUNT_WRITE"], "expiresAt": expires}


def set_cookies(response: Response) -> dict[str, list[str]]:
    """Set-Cookie headers by cookie name: the attributes, lower-cased, value first."""
    found: dict[str, list[str]] = {}
    for header in response.headers.get_list("set-cookie"):
        parts = [p.strip() for p in header.split(";")]
        name, _, value = parts[0].partition("=")
        found[name] = [value] + [p.lower() for p in parts[1:]]
    return found


def codes(result: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in result.get("errors", [])]


async def count(engine: AsyncEngine, table: str) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())


async def with_cookie(accounts: Accounts, secret: str, query: str = VIEWER) -> dict[str, Any]:
    client = await accounts.client()
    response = await client.post(
        "/graphql", json=body(query), headers={"cookie": f"{SESSION_COOKIE}={secret}"}
    )
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


# --- cookie attributes -----------------------------------------------------------------------


async def test_sign_up_sets_http_only_session_and_readable_csrf_cookies(
    accounts: Accounts,
) -> None:
    client = await accounts.client()
    response = await client.post(
        "/graphql", json=body(SIGN_UP, {"email": "cookie@example.com", "password": PASSWORD})
    )
    csrf_token = response.json()["data"]["signUp"]["csrfToken"]
    cookies = set_cookies(response)
    assert set(cookies) == {SESSION_COOKIE, CSRF_COOKIE}
    session, csrf = cookies[SESSION_COOKIE], cookies[CSRF_COOKIE]
    assert session[0].startswith("gps_")
    assert csrf[0] == csrf_token
    assert "httponly" in session
    assert "httponly" not in csrf
    for attrs in (session, csrf):
        assert "samesite=lax" in attrs
        assert "path=/" in attrs
        assert "secure" not in attrs  # the test env turns Secure off for plain http
        assert not any(a.startswith("domain=") for a in attrs)  # host-only
        max_age = next(int(a.split("=", 1)[1]) for a in attrs if a.startswith("max-age="))
        assert 0 < max_age <= 168 * 3600


async def test_secure_cookies_use_the_host_prefix(settings: Settings, engine: AsyncEngine) -> None:
    async with app_with(settings, cookie_secure=True) as accounts:
        client = await accounts.client()
        response = await client.post(
            "/graphql", json=body(SIGN_UP, {"email": "secure@example.com", "password": PASSWORD})
        )
        assert response.json()["data"]["signUp"]["__typename"] == "SessionPayload"
        cookies = set_cookies(response)
        assert set(cookies) == {"__Host-gpucloud_session", "__Host-gpucloud_csrf"}
        session, csrf = cookies["__Host-gpucloud_session"], cookies["__Host-gpucloud_csrf"]
        for attrs in (session, csrf):
            assert "secure" in attrs
            assert "path=/" in attrs
            assert "samesite=lax" in attrs
            assert not any(a.startswith("domain=") for a in attrs)
        assert "httponly" in session and "httponly" not in csrf

        # The prefixed cookie is the one the server reads; the unprefixed name means nothing.
        secret = session[0]
        named = await client.post(
            "/graphql", json=body(VIEWER), headers={"cookie": f"__Host-gpucloud_session={secret}"}
        )
        assert named.json()["data"]["viewer"]["email"] == "secure@example.com"
        plain = await client.post(
            "/graphql", json=body(VIEWER), headers={"cookie": f"{SESSION_COOKIE}={secret}"}
        )
        assert codes(plain.json()) == ["UNAUTHENTICATED"]


async def test_log_out_clears_both_cookies(accounts: Accounts) -> None:
    account = await accounts.sign_up()
    response = await account.client.post(
        "/graphql",
        json=body("mutation { logOut { __typename } }"),
        headers={"x-csrf-token": account.csrf},
    )
    assert response.json()["data"]["logOut"]["__typename"] == "LogOutPayload"
    cookies = set_cookies(response)
    assert set(cookies) == {SESSION_COOKIE, CSRF_COOKIE}
    for attrs in cookies.values():
        assert attrs[0] in ("", '""')
        assert "max-age=0" in attrs
        assert "path=/" in attrs


# --- CSRF ------------------------------------------------------------------------------------


async def test_cookie_mutation_without_csrf_header_is_refused(
    accounts: Accounts, engine: AsyncEngine
) -> None:
    account = await accounts.sign_up()
    result = await account.gql(CREATE_TOKEN, token_vars(), csrf=False)
    assert result["data"] is None
    assert codes(result) == ["CSRF_FAILED"]
    assert "X-CSRF-Token" in result["errors"][0]["message"]
    assert await count(engine, "api_tokens") == 0
    # With the header the same request goes through.
    ok = await account.gql(CREATE_TOKEN, token_vars())
    assert ok["data"]["createApiToken"]["__typename"] == "CreateApiTokenPayload"
    assert await count(engine, "api_tokens") == 1


async def test_cookie_mutation_with_a_wrong_csrf_header_is_refused(
    accounts: Accounts, engine: AsyncEngine
) -> None:
    account = await accounts.sign_up()
    account.csrf = "0" * 64
    result = await account.gql(CREATE_TOKEN, token_vars())
    assert codes(result) == ["CSRF_FAILED"]
    assert result["data"] is None
    assert await count(engine, "api_tokens") == 0


async def test_csrf_token_of_another_session_is_refused(
    accounts: Accounts, engine: AsyncEngine
) -> None:
    """An attacker with an account of their own cannot plant their CSRF cookie and header."""
    victim, attacker = await accounts.sign_up(), await accounts.sign_up()
    secret = victim.client.cookies.get(SESSION_COOKIE)
    client = await accounts.client()
    response = await client.post(
        "/graphql",
        json=body(CREATE_TOKEN, token_vars()),
        headers={
            "cookie": f"{SESSION_COOKIE}={secret}; {CSRF_COOKIE}={attacker.csrf}",
            "x-csrf-token": attacker.csrf,
        },
    )
    assert codes(response.json()) == ["CSRF_FAILED"]
    assert await count(engine, "api_tokens") == 0


async def test_csrf_header_must_match_the_csrf_cookie(
    accounts: Accounts, engine: AsyncEngine
) -> None:
    account = await accounts.sign_up()
    secret = account.client.cookies.get(SESSION_COOKIE)
    client = await accounts.client()
    response = await client.post(
        "/graphql",
        json=body(CREATE_TOKEN, token_vars()),
        headers={"cookie": f"{SESSION_COOKIE}={secret}", "x-csrf-token": account.csrf},
    )
    assert codes(response.json()) == ["CSRF_FAILED"]
    assert await count(engine, "api_tokens") == 0


async def test_cookie_queries_need_no_csrf_header(accounts: Accounts) -> None:
    account = await accounts.sign_up()
    result = await account.gql(VIEWER, csrf=False)
    assert result["data"]["viewer"]["id"] == account.user_id


async def test_bearer_mutation_needs_no_csrf(accounts: Accounts, engine: AsyncEngine) -> None:
    account = await accounts.sign_up()
    keep = await account.gql(CREATE_TOKEN, token_vars("keep"))
    doomed = await account.gql(CREATE_TOKEN, token_vars("doomed"))
    bearer = await accounts.bearer(keep["data"]["createApiToken"]["secret"])
    doomed_id = doomed["data"]["createApiToken"]["token"]["id"]
    response = await bearer.post("/graphql", json=body(REVOKE, {"id": doomed_id}))
    result = response.json()
    assert "errors" not in result
    assert result["data"]["revokeApiToken"]["token"] == {"id": doomed_id, "status": "REVOKED"}
    async with engine.connect() as conn:
        revoked = (
            await conn.execute(text("SELECT count(*) FROM api_tokens WHERE revoked_at IS NOT NULL"))
        ).scalar_one()
    assert revoked == 1


# --- GET never executes ----------------------------------------------------------------------


async def test_get_never_executes_a_mutation(accounts: Accounts, engine: AsyncEngine) -> None:
    anonymous = await accounts.client()
    sign_up = (
        'mutation { signUp(input: {email: "get@example.com", password: "%s"}) { __typename } }'
        % PASSWORD
    )
    response = await anonymous.get("/graphql", params={"query": sign_up})
    assert response.status_code == 405  # GET serves the IDE; operations are POSTed
    assert response.json()["errors"][0]["extensions"]["code"] == "METHOD_NOT_ALLOWED"
    assert await count(engine, "users") == 0
    assert "set-cookie" not in response.headers

    account = await accounts.sign_up()
    expires = (datetime.now(UTC) + timedelta(days=7)).isoformat()
    create = (
        'mutation { createApiToken(input: {name: "via-get", scopes: [ACCOUNT_READ], '
        'expiresAt: "%s"}) { __typename } }' % expires
    )
    for headers in ({}, {"x-csrf-token": account.csrf}):
        got = await account.client.get("/graphql", params={"query": create}, headers=headers)
        assert got.status_code == 405
        assert "createApiToken" not in got.text
    assert await count(engine, "api_tokens") == 0
    assert await count(engine, "users") == 1


# --- expiry ----------------------------------------------------------------------------------


async def test_idle_session_expires(settings: Settings, engine: AsyncEngine) -> None:
    async with app_with(settings, auth_cache_seconds=0, session_idle_minutes=30) as accounts:
        account = await accounts.sign_up()
        assert (await account.gql(VIEWER))["data"]["viewer"]["id"] == account.user_id
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE sessions SET last_seen_at = now() - interval '31 minutes'")
            )
        result = await account.gql(VIEWER)
        assert result["data"] is None
        assert codes(result) == ["UNAUTHENTICATED"]
        assert result["errors"][0]["message"] == INVALID_CREDENTIAL


async def test_use_keeps_a_session_from_idling_out(settings: Settings, engine: AsyncEngine) -> None:
    async with app_with(settings, auth_cache_seconds=0, session_idle_minutes=30) as accounts:
        account = await accounts.sign_up()
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE sessions SET last_seen_at = now() - interval '20 minutes'")
            )
        assert (await account.gql(VIEWER))["data"]["viewer"]["id"] == account.user_id
        async with engine.connect() as conn:
            idle = (
                await conn.execute(text("SELECT now() - last_seen_at FROM sessions"))
            ).scalar_one()
        assert idle < timedelta(minutes=1)  # the request moved last-seen forward


async def test_absolute_expiry_ends_an_active_session(
    settings: Settings, engine: AsyncEngine
) -> None:
    async with app_with(settings, auth_cache_seconds=0) as accounts:
        account = await accounts.sign_up()
        assert (await account.gql(VIEWER))["data"]["viewer"]["id"] == account.user_id
        async with engine.begin() as conn:
            # Used a second ago, but past its fixed lifetime.
            await conn.execute(
                text(
                    "UPDATE sessions SET expires_at = now() - interval '1 second', "
                    "last_seen_at = now()"
                )
            )
        result = await account.gql(VIEWER)
        assert codes(result) == ["UNAUTHENTICATED"]
        assert result["errors"][0]["message"] == INVALID_CREDENTIAL
        # An expired session cannot mutate either.
        create = await account.gql(CREATE_TOKEN, token_vars())
        assert codes(create) == ["UNAUTHENTICATED"]
        assert await count(engine, "api_tokens") == 0


async def test_session_expiry_is_set_from_the_configured_lifetime(
    settings: Settings, engine: AsyncEngine
) -> None:
    async with app_with(settings, session_max_hours=5) as accounts:
        account = await accounts.sign_up()
        async with engine.connect() as conn:
            lifetime = (
                await conn.execute(text("SELECT expires_at - created_at FROM sessions"))
            ).scalar_one()
        assert timedelta(hours=5) - timedelta(minutes=1) < lifetime <= timedelta(hours=5)
        assert (await account.gql(VIEWER))["data"]["viewer"]["id"] == account.user_id


# --- bad credentials -------------------------------------------------------------------------


async def test_garbage_cookie_is_anonymous_for_public_fields(accounts: Accounts) -> None:
    for garbage in ("garbage", "gps_" + "x" * 43, ""):
        client = await accounts.client()
        response = await client.post(
            "/graphql", json=body(SKUS), headers={"cookie": f"{SESSION_COOKIE}={garbage}"}
        )
        result = response.json()
        assert "errors" not in result, garbage
        assert result["data"]["skus"]["edges"] == []


async def test_garbage_cookie_gets_a_clear_error_on_private_fields(accounts: Accounts) -> None:
    for garbage in ("garbage", "gps_" + "x" * 43):
        result = await with_cookie(accounts, garbage)
        assert result["data"] is None
        assert codes(result) == ["UNAUTHENTICATED"]
        assert result["errors"][0]["message"] == INVALID_CREDENTIAL


async def test_no_credential_gets_the_plain_sign_in_message(client: AsyncClient) -> None:
    response = await client.post("/graphql", json=body(VIEWER))
    result = response.json()
    assert codes(result) == ["UNAUTHENTICATED"]
    assert "invalid, expired or revoked" not in result["errors"][0]["message"]


async def test_garbage_cookie_does_not_block_signing_up(accounts: Accounts) -> None:
    client = await accounts.client()
    response = await client.post(
        "/graphql",
        json=body(SIGN_UP, {"email": "fresh@example.com", "password": PASSWORD}),
        headers={"cookie": f"{SESSION_COOKIE}=garbage"},
    )
    assert response.json()["data"]["signUp"]["__typename"] == "SessionPayload"
