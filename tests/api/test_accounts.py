"""Accounts over GraphQL: sign-up, log-in and -out, session rotation, password change, viewer."""

from __future__ import annotations

from typing import Any

from httpx import AsyncClient
from sqlalchemy import text

from tests.support.identity import LOG_IN, PASSWORD, SIGN_UP, Accounts, body

SESSION_COOKIE = "gpucloud_session"
VIEWER = "{ viewer { id email role status hasPassword } }"
LOG_OUT = """mutation { logOut { __typename
  ... on LogOutPayload { sessionsEnded }
  ... on AccountError { code message } } }"""
LOG_OUT_EVERYWHERE = """mutation { logOutEverywhere { __typename
  ... on LogOutPayload { sessionsEnded }
  ... on AccountError { code message } } }"""
CHANGE_PASSWORD = """mutation Change($current: String!, $new: String!) {
  changePassword(input: {currentPassword: $current, newPassword: $new}) { __typename
    ... on SessionPayload { csrfToken user { id email } }
    ... on AccountError { code message field problems { code field } } } }"""
NEW_PASSWORD = "a much longer new passphrase"


async def post(
    client: AsyncClient, query: str, variables: dict[str, Any] | None = None, **headers: str
) -> dict[str, Any]:
    response = await client.post("/graphql", json=body(query, variables), headers=headers)
    assert response.status_code == 200, response.text
    assert "Traceback" not in response.text
    return response.json()  # type: ignore[no-any-return]


def error_codes(result: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in result.get("errors", [])]


async def replay(accounts: Accounts, session_secret: str, query: str = VIEWER) -> dict[str, Any]:
    """A fresh client presenting only the given session cookie value."""
    client = await accounts.client()
    return await post(client, query, cookie=f"{SESSION_COOKIE}={session_secret}")


async def sign_up(client: AsyncClient, email: str, password: str) -> dict[str, Any]:
    result = await post(client, SIGN_UP, {"email": email, "password": password})
    return result["data"]["signUp"]  # type: ignore[no-any-return]


async def log_in(client: AsyncClient, email: str, password: str, **headers: str) -> dict[str, Any]:
    result = await post(client, LOG_IN, {"email": email, "password": password}, **headers)
    return result["data"]["logIn"]  # type: ignore[no-any-return]


# --- sign-up ---------------------------------------------------------------------------------


async def test_sign_up_signs_in_and_viewer_is_the_new_account(accounts: Accounts) -> None:
    client = await accounts.client()
    payload = await sign_up(client, "  New.Person@Example.COM ", PASSWORD)
    assert payload["__typename"] == "SessionPayload"
    assert payload["user"]["email"] == "new.person@example.com"
    assert payload["user"]["role"] == "USER"
    assert payload["user"]["status"] == "ACTIVE"
    assert len(payload["csrfToken"]) == 64
    assert client.cookies.get(SESSION_COOKIE, "").startswith("gps_")

    viewer = await post(client, VIEWER)
    assert "errors" not in viewer
    assert viewer["data"]["viewer"] == {
        "id": payload["user"]["id"],
        "email": "new.person@example.com",
        "role": "USER",
        "status": "ACTIVE",
        "hasPassword": True,
    }


async def test_viewer_needs_sign_in(client: AsyncClient) -> None:
    result = await post(client, VIEWER)
    assert result["data"] is None
    assert error_codes(result) == ["UNAUTHENTICATED"]


async def test_email_is_unique_case_insensitively(accounts: Accounts, engine) -> None:
    first = await sign_up(await accounts.client(), "A@x.com", PASSWORD)
    assert first["__typename"] == "SessionPayload"
    second_client = await accounts.client()
    second = await sign_up(second_client, "a@X.com", PASSWORD)
    assert second["__typename"] == "AccountError"
    assert second["code"] == "EMAIL_TAKEN"
    assert second["field"] == "email"
    assert SESSION_COOKIE not in second_client.cookies
    async with engine.connect() as conn:
        emails = (await conn.execute(text("SELECT email FROM users"))).scalars().all()
    assert emails == ["a@x.com"]


async def test_short_password_is_refused(accounts: Accounts, engine) -> None:
    payload = await sign_up(await accounts.client(), "short@example.com", "elevenchars")
    assert payload["__typename"] == "AccountError"
    assert payload["code"] == "PASSWORD_TOO_SHORT"
    assert payload["field"] == "password"
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM users"))).scalar_one() == 0


async def test_bad_email_is_refused(accounts: Accounts) -> None:
    for bad in ("no-at-sign.example.com", "two@@example.com", "a b@example.com", "x@nodot"):
        payload = await sign_up(await accounts.client(), bad, PASSWORD)
        assert payload["__typename"] == "AccountError", bad
        assert payload["code"] == "INVALID_EMAIL", bad
        assert payload["field"] == "email"


async def test_every_sign_up_problem_is_listed_at_once(accounts: Accounts) -> None:
    payload = await sign_up(await accounts.client(), "not-an-email", "short")
    assert payload["__typename"] == "AccountError"
    assert {(p["code"], p["field"]) for p in payload["problems"]} == {
        ("INVALID_EMAIL", "email"),
        ("PASSWORD_TOO_SHORT", "password"),
    }
    assert payload["code"] == payload["problems"][0]["code"]


async def test_password_is_stored_only_as_an_argon2id_hash(accounts: Accounts, engine) -> None:
    account = await accounts.sign_up(password=PASSWORD)
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT * FROM users WHERE email = :e"), {"e": account.email.lower()}
            )
        ).one()
    assert row.password_hash.startswith("$argon2id$")
    assert PASSWORD not in row.password_hash
    # The password appears in no column at all.
    assert all(PASSWORD not in str(value) for value in row)


# --- log-in ----------------------------------------------------------------------------------


async def test_log_in_with_the_right_password(accounts: Accounts) -> None:
    account = await accounts.sign_up()
    client = await accounts.client()
    payload = await log_in(client, account.email.upper(), account.password)
    assert payload["__typename"] == "SessionPayload"
    assert payload["user"]["id"] == account.user_id
    assert client.cookies.get(SESSION_COOKIE, "").startswith("gps_")
    viewer = await post(client, VIEWER)
    assert viewer["data"]["viewer"]["id"] == account.user_id


async def test_wrong_password_and_unknown_email_answer_identically(accounts: Accounts) -> None:
    account = await accounts.sign_up()
    wrong_client, unknown_client = await accounts.client(), await accounts.client()
    wrong = await wrong_client.post(
        "/graphql",
        json=body(LOG_IN, {"email": account.email, "password": "not the password at all"}),
    )
    unknown = await unknown_client.post(
        "/graphql",
        json=body(LOG_IN, {"email": "nobody-here@example.com", "password": account.password}),
    )
    assert wrong.status_code == unknown.status_code == 200
    assert wrong.json() == unknown.json()
    payload = wrong.json()["data"]["logIn"]
    assert payload["__typename"] == "AccountError"
    assert payload["code"] == "INVALID_CREDENTIALS"
    assert payload["message"] == "Email or password is wrong."
    assert payload["field"] is None
    assert payload["retryAfterSeconds"] is None
    assert "set-cookie" not in wrong.headers and "set-cookie" not in unknown.headers


async def test_log_in_rotates_the_session(accounts: Accounts) -> None:
    account = await accounts.sign_up()
    old = account.client.cookies.get(SESSION_COOKIE)
    assert old is not None
    # The old cookie works (and is now known to this process).
    assert (await replay(accounts, old))["data"]["viewer"]["id"] == account.user_id

    payload = await log_in(
        account.client, account.email, account.password, **{"x-csrf-token": account.csrf}
    )
    assert payload["__typename"] == "SessionPayload"
    new = account.client.cookies.get(SESSION_COOKIE)
    assert new is not None and new != old
    assert payload["csrfToken"] != account.csrf

    stale = await replay(accounts, old)
    assert stale["data"] is None
    assert error_codes(stale) == ["UNAUTHENTICATED"]
    fresh = await post(account.client, VIEWER)
    assert fresh["data"]["viewer"]["id"] == account.user_id


# --- log-out ---------------------------------------------------------------------------------


async def test_log_out_revokes_the_session(accounts: Accounts, engine) -> None:
    account = await accounts.sign_up()
    secret = account.client.cookies.get(SESSION_COOKIE)
    assert secret is not None
    assert (await replay(accounts, secret))["data"]["viewer"]["id"] == account.user_id

    result = await account.gql(LOG_OUT)
    assert result["data"]["logOut"] == {"__typename": "LogOutPayload", "sessionsEnded": 1}
    assert SESSION_COOKIE not in account.client.cookies  # the response cleared it

    replayed = await replay(accounts, secret)
    assert replayed["data"] is None
    assert error_codes(replayed) == ["UNAUTHENTICATED"]
    assert "invalid, expired or revoked" in replayed["errors"][0]["message"]
    async with engine.connect() as conn:
        revoked = (await conn.execute(text("SELECT revoked_at FROM sessions"))).scalar_one()
    assert revoked is not None


async def test_log_out_needs_a_session(client: AsyncClient) -> None:
    result = await post(client, LOG_OUT)
    assert result["data"] is None
    assert error_codes(result) == ["UNAUTHENTICATED"]


async def test_log_out_everywhere_ends_every_session_of_the_user(accounts: Accounts) -> None:
    account = await accounts.sign_up()
    other_client = await accounts.client(ip="10.0.0.9")
    assert (await log_in(other_client, account.email, account.password))["__typename"] == (
        "SessionPayload"
    )
    bystander = await accounts.sign_up()
    assert (await post(other_client, VIEWER))["data"]["viewer"]["id"] == account.user_id
    secret = account.client.cookies.get(SESSION_COOKIE)
    assert secret is not None

    result = await account.gql(LOG_OUT_EVERYWHERE)
    assert result["data"]["logOutEverywhere"] == {
        "__typename": "LogOutPayload",
        "sessionsEnded": 2,
    }
    for stale in (await post(other_client, VIEWER), await replay(accounts, secret)):
        assert stale["data"] is None
        assert error_codes(stale) == ["UNAUTHENTICATED"]
    # Somebody else's session is untouched.
    assert (await bystander.gql(VIEWER))["data"]["viewer"]["id"] == bystander.user_id


# --- password change -------------------------------------------------------------------------


async def test_change_password_with_a_wrong_current_password(accounts: Accounts) -> None:
    account = await accounts.sign_up()
    result = await account.gql(
        CHANGE_PASSWORD, {"current": "wrong wrong wrong", "new": NEW_PASSWORD}
    )
    payload = result["data"]["changePassword"]
    assert payload["__typename"] == "AccountError"
    assert payload["code"] == "WRONG_PASSWORD"
    assert payload["field"] == "currentPassword"
    # Nothing changed: the session lives and the old password still works.
    assert (await account.gql(VIEWER))["data"]["viewer"]["id"] == account.user_id
    fresh = await accounts.client()
    assert (await log_in(fresh, account.email, account.password))["__typename"] == "SessionPayload"


async def test_change_password_refuses_a_short_new_password(accounts: Accounts) -> None:
    account = await accounts.sign_up()
    result = await account.gql(CHANGE_PASSWORD, {"current": account.password, "new": "short"})
    payload = result["data"]["changePassword"]
    assert payload["code"] == "PASSWORD_TOO_SHORT"
    assert payload["field"] == "newPassword"


async def test_change_password_ends_other_sessions_and_renews_this_one(
    accounts: Accounts,
) -> None:
    account = await accounts.sign_up()
    other_client = await accounts.client(ip="10.0.0.7")
    assert (await log_in(other_client, account.email, account.password))["__typename"] == (
        "SessionPayload"
    )
    assert (await post(other_client, VIEWER))["data"]["viewer"]["id"] == account.user_id
    old_secret = account.client.cookies.get(SESSION_COOKIE)

    result = await account.gql(CHANGE_PASSWORD, {"current": account.password, "new": NEW_PASSWORD})
    payload = result["data"]["changePassword"]
    assert payload["__typename"] == "SessionPayload", payload
    new_secret = account.client.cookies.get(SESSION_COOKIE)
    assert new_secret is not None and new_secret != old_secret

    # The other browser and this browser's previous cookie are signed out ...
    elsewhere = await post(other_client, VIEWER)
    assert error_codes(elsewhere) == ["UNAUTHENTICATED"]
    assert old_secret is not None
    assert error_codes(await replay(accounts, old_secret)) == ["UNAUTHENTICATED"]
    # ... this browser keeps working with the renewed cookie and CSRF token.
    assert (await account.gql(VIEWER))["data"]["viewer"]["id"] == account.user_id
    account.csrf = payload["csrfToken"]
    assert (await account.gql(LOG_OUT))["data"]["logOut"]["__typename"] == "LogOutPayload"

    old_login = await log_in(await accounts.client(), account.email, account.password)
    assert old_login["code"] == "INVALID_CREDENTIALS"
    new_login = await log_in(await accounts.client(), account.email, NEW_PASSWORD)
    assert new_login["__typename"] == "SessionPayload"
    assert new_login["user"]["id"] == account.user_id
