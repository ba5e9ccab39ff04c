"""The audit log over HTTP: every auth event leaves a row in the transaction that made the
change, with who, what, which object, from where and the request id; administrators read it
with filters; the table is append-only and its hash chain verifies."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.audit.services import verify_chain
from tests.support.identity import (
    CREATE_TOKEN,
    LOG_IN,
    PASSWORD,
    SIGN_UP,
    Account,
    Accounts,
    body,
)

AUDIT = """query Audit($first: Int, $after: String, $filter: AuditEventFilter) {
  auditEvents(first: $first, after: $after, filter: $filter) {
    edges { node { id occurredAt actorType actorUserId actorTokenId action targetType targetId
                   requestId clientIp before after hash } }
    pageInfo { hasNextPage endCursor } } }"""
LOG_OUT = "mutation { logOut { __typename } }"
LOG_OUT_EVERYWHERE = (
    "mutation { logOutEverywhere { __typename ... on LogOutPayload { sessionsEnded } } }"
)
CHANGE_PASSWORD = """mutation Change($current: String!, $new: String!) {
  changePassword(input: {currentPassword: $current, newPassword: $new}) { __typename
    ... on SessionPayload { csrfToken }
    ... on AccountError { code } } }"""
REVOKE = """mutation Revoke($id: ID!) { revokeApiToken(id: $id) { __typename
  ... on ApiTokenPayload { token { id status } } } }"""
SET_ROLE = """mutation SetRole($id: ID!, $role: Role!) {
  setUserRole(input: {userId: $id, role: $role}) { __typename } }"""
SUSPEND = """mutation Suspend($id: ID!, $reason: String) {
  suspendUser(input: {userId: $id, reason: $reason}) { __typename } }"""
REINSTATE = "mutation Reinstate($id: ID!) { reinstateUser(userId: $id) { __typename } }"
NEW_PASSWORD = "an entirely new passphrase"


def key(global_id: str, kind: str) -> int:
    raw = base64.urlsafe_b64decode(global_id + "=" * (-len(global_id) % 4)).decode()
    found, _, number = raw.partition(":")
    assert found == kind
    return int(number)


def codes(result: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in result.get("errors", [])]


async def call(
    client: AsyncClient,
    query: str,
    variables: dict[str, Any] | None = None,
    csrf: str | None = None,
    **headers: str,
) -> tuple[dict[str, Any], str]:
    """Post one operation; returns the result and the response's request id."""
    if csrf is not None:
        headers["x-csrf-token"] = csrf
    response = await client.post("/graphql", json=body(query, variables), headers=headers)
    assert response.status_code == 200, response.text
    result = response.json()
    assert "errors" not in result, result
    return result, response.headers["x-request-id"]


async def rows_of(engine: AsyncEngine, request_id: str) -> list[Any]:
    """The audit rows one request wrote, with the id of the transaction that wrote each."""
    async with engine.connect() as conn:
        result = await conn.execute(
            text("SELECT *, xmin::text AS tx FROM audit_events WHERE request_id = :r ORDER BY id"),
            {"r": request_id},
        )
        return list(result.all())


async def only_row(engine: AsyncEngine, request_id: str) -> Any:
    rows = await rows_of(engine, request_id)
    assert len(rows) == 1, rows
    return rows[0]


async def writer_of(engine: AsyncEngine, table: str, row_id: int) -> str:
    """The transaction that wrote the current version of a row."""
    async with engine.connect() as conn:
        return str(
            (
                await conn.execute(
                    text(f"SELECT xmin::text FROM {table} WHERE id = :i"), {"i": row_id}
                )
            ).scalar_one()
        )


async def audit_count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM audit_events"))).scalar_one())


async def sign_up_at(accounts: Accounts, ip: str, email: str) -> tuple[Account, str]:
    client = await accounts.client(ip=ip)
    result, request_id = await call(client, SIGN_UP, {"email": email, "password": PASSWORD})
    payload = result["data"]["signUp"]
    assert payload["__typename"] == "SessionPayload", payload
    account = Account(client, email, PASSWORD, payload["user"]["id"], payload["csrfToken"])
    return account, request_id


# --- one row per event, in the same transaction ----------------------------------------------


async def test_sign_up_and_login_are_audited(accounts: Accounts, engine: AsyncEngine) -> None:
    account, request_id = await sign_up_at(accounts, "10.2.0.1", "Audited@Example.com")
    user_id = key(account.user_id, "User")
    row = await only_row(engine, request_id)
    assert (row.action, row.actor_type, row.actor_user_id, row.actor_token_id) == (
        "auth.signup",
        "user",
        user_id,
        None,
    )
    assert (row.target_type, row.target_id) == ("user", str(user_id))
    assert row.client_ip == "10.2.0.1"
    assert row.before is None
    assert row.after == {"email": "audited@example.com", "role": "user", "status": "active"}
    assert row.tx == await writer_of(engine, "users", user_id)

    client = await accounts.client(ip="10.2.0.2")
    result, request_id = await call(
        client,
        LOG_IN,
        {"email": account.email, "password": PASSWORD},
        **{"x-request-id": "edge-proxy-req-0001"},
    )
    assert request_id == "edge-proxy-req-0001"  # a well-formed incoming id is kept
    assert result["data"]["logIn"]["__typename"] == "SessionPayload"
    row = await only_row(engine, request_id)
    assert (row.action, row.actor_type, row.actor_user_id) == (
        "auth.login.succeeded",
        "user",
        user_id,
    )
    assert (row.target_type, row.target_id) == ("user", str(user_id))
    assert row.client_ip == "10.2.0.2"
    session_id = row.after["sessionId"]
    assert row.after == {"method": "password", "sessionId": session_id}
    # The session row and its audit row were written by one transaction.
    assert row.tx == await writer_of(engine, "sessions", session_id)


async def test_failed_logins_are_audited_for_known_and_unknown_emails(
    accounts: Accounts, engine: AsyncEngine
) -> None:
    account = await accounts.sign_up()
    user_id = key(account.user_id, "User")
    client = await accounts.client(ip="10.2.0.3")

    result, request_id = await call(
        client, LOG_IN, {"email": account.email, "password": "nope nope nope"}
    )
    assert result["data"]["logIn"]["code"] == "INVALID_CREDENTIALS"
    row = await only_row(engine, request_id)
    assert (row.action, row.actor_type, row.actor_user_id, row.actor_token_id) == (
        "auth.login.failed",
        "anonymous",
        None,
        None,
    )
    assert (row.target_type, row.target_id) == ("user", str(user_id))
    assert row.client_ip == "10.2.0.3"
    assert row.after == {"email": account.email.lower(), "reason": "credentials"}
    assert PASSWORD not in str(row) and "nope nope nope" not in str(row)

    result, request_id = await call(
        client, LOG_IN, {"email": "Ghost@Example.com", "password": PASSWORD}
    )
    assert result["data"]["logIn"]["code"] == "INVALID_CREDENTIALS"
    row = await only_row(engine, request_id)
    assert (row.action, row.actor_type, row.target_type, row.target_id) == (
        "auth.login.failed",
        "anonymous",
        None,
        None,
    )
    assert row.after == {"email": "ghost@example.com", "reason": "credentials"}
    assert row.client_ip == "10.2.0.3"

    # The right password for a suspended account: refused, and recorded with the reason.
    admin = await accounts.admin()
    await call(admin.client, SUSPEND, {"id": account.user_id}, csrf=admin.csrf)
    result, request_id = await call(
        client, LOG_IN, {"email": account.email, "password": account.password}
    )
    assert result["data"]["logIn"]["code"] == "ACCOUNT_SUSPENDED"
    row = await only_row(engine, request_id)
    assert (row.action, row.actor_type, row.target_id) == (
        "auth.login.failed",
        "anonymous",
        str(user_id),
    )
    assert row.after == {"email": account.email.lower(), "reason": "suspended"}


async def test_log_out_and_log_out_everywhere_are_audited(
    accounts: Accounts, engine: AsyncEngine
) -> None:
    account = await accounts.sign_up()
    user_id = key(account.user_id, "User")
    second = await accounts.client(ip="10.2.0.4")
    logged, _ = await call(second, LOG_IN, {"email": account.email, "password": PASSWORD})
    second_csrf = logged["data"]["logIn"]["csrfToken"]
    async with engine.connect() as conn:
        second_session = (
            await conn.execute(
                text("SELECT max(id) FROM sessions WHERE user_id = :u"), {"u": user_id}
            )
        ).scalar_one()

    _, request_id = await call(second, LOG_OUT, csrf=second_csrf)
    row = await only_row(engine, request_id)
    assert (row.action, row.actor_type, row.actor_user_id) == ("auth.logout", "user", user_id)
    assert (row.target_type, row.target_id) == ("session", str(second_session))
    assert row.client_ip == "10.2.0.4"
    assert row.tx == await writer_of(engine, "sessions", second_session)

    third = await accounts.client(ip="10.2.0.5")
    await call(third, LOG_IN, {"email": account.email, "password": PASSWORD})
    result, request_id = await call(account.client, LOG_OUT_EVERYWHERE, csrf=account.csrf)
    assert result["data"]["logOutEverywhere"]["sessionsEnded"] == 2
    row = await only_row(engine, request_id)
    assert (row.action, row.actor_type, row.actor_user_id) == (
        "auth.logout_everywhere",
        "user",
        user_id,
    )
    assert (row.target_type, row.target_id) == ("user", str(user_id))
    assert row.after == {"sessionsRevoked": 2}
    assert row.client_ip == "127.0.0.1"
    async with engine.connect() as conn:
        writers = (
            (
                await conn.execute(
                    text(
                        "SELECT DISTINCT xmin::text FROM sessions WHERE user_id = :u AND id <> :s"
                    ),
                    {"u": user_id, "s": second_session},
                )
            )
            .scalars()
            .all()
        )
    assert writers == [row.tx]


async def test_token_creation_and_revocation_are_audited(
    accounts: Accounts, engine: AsyncEngine
) -> None:
    account = await accounts.sign_up()
    user_id = key(account.user_id, "User")
    expires = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    result, request_id = await call(
        account.client,
        CREATE_TOKEN,
        {
            "name": "robot",
            "scopes": ["ACCOUNT_WRITE", "ACCOUNT_READ"],
            "expiresAt": expires.isoformat(),
        },
        csrf=account.csrf,
    )
    made = result["data"]["createApiToken"]
    token_id = key(made["token"]["id"], "ApiToken")
    row = await only_row(engine, request_id)
    assert (row.action, row.actor_type, row.actor_user_id, row.actor_token_id) == (
        "token.created",
        "user",
        user_id,
        None,
    )
    assert (row.target_type, row.target_id) == ("api_token", str(token_id))
    assert row.after == {
        "name": "robot",
        "scopes": ["account:read", "account:write"],
        "prefix": made["secret"][:12],
        "expiresAt": expires.isoformat(),
    }
    assert made["secret"] not in str(tuple(row))
    assert row.tx == await writer_of(engine, "api_tokens", token_id)

    # Revoked by the token itself: the actor is the token, on behalf of its owner.
    bearer = await accounts.bearer(made["secret"])
    result, request_id = await call(bearer, REVOKE, {"id": made["token"]["id"]})
    assert result["data"]["revokeApiToken"]["token"]["status"] == "REVOKED"
    row = await only_row(engine, request_id)
    assert (row.action, row.actor_type, row.actor_user_id, row.actor_token_id) == (
        "token.revoked",
        "token",
        user_id,
        token_id,
    )
    assert (row.target_type, row.target_id) == ("api_token", str(token_id))
    assert row.before == {"revokedAt": None}
    assert datetime.fromisoformat(row.after["revokedAt"]) <= datetime.now(UTC)
    assert row.tx == await writer_of(engine, "api_tokens", token_id)


async def test_password_changes_are_audited(accounts: Accounts, engine: AsyncEngine) -> None:
    account = await accounts.sign_up()
    user_id = key(account.user_id, "User")
    result, request_id = await call(
        account.client,
        CHANGE_PASSWORD,
        {"current": "not my password", "new": NEW_PASSWORD},
        csrf=account.csrf,
    )
    assert result["data"]["changePassword"]["code"] == "WRONG_PASSWORD"
    row = await only_row(engine, request_id)
    assert (row.action, row.actor_type, row.actor_user_id) == (
        "auth.password_change.failed",
        "user",
        user_id,
    )
    assert (row.target_type, row.target_id) == ("user", str(user_id))

    result, request_id = await call(
        account.client,
        CHANGE_PASSWORD,
        {"current": PASSWORD, "new": NEW_PASSWORD},
        csrf=account.csrf,
    )
    assert result["data"]["changePassword"]["__typename"] == "SessionPayload"
    row = await only_row(engine, request_id)
    assert (row.action, row.actor_type, row.actor_user_id) == (
        "auth.password_changed",
        "user",
        user_id,
    )
    assert (row.target_type, row.target_id) == ("user", str(user_id))
    assert set(row.after) == {"sessionId"}
    assert row.client_ip == "127.0.0.1"
    assert row.tx == await writer_of(engine, "users", user_id)
    assert row.tx == await writer_of(engine, "sessions", row.after["sessionId"])
    assert NEW_PASSWORD not in str(tuple(row)) and PASSWORD not in str(tuple(row))


async def test_admin_changes_are_audited(accounts: Accounts, engine: AsyncEngine) -> None:
    admin = await accounts.admin()
    admin_id = key(admin.user_id, "User")
    user = await accounts.sign_up()
    user_id = key(user.user_id, "User")
    steps = [
        (
            SET_ROLE,
            {"id": user.user_id, "role": "ADMIN"},
            "admin.user.role_changed",
            {"role": "user"},
            {"role": "admin"},
        ),
        (
            SET_ROLE,
            {"id": user.user_id, "role": "USER"},
            "admin.user.role_changed",
            {"role": "admin"},
            {"role": "user"},
        ),
        (
            SUSPEND,
            {"id": user.user_id, "reason": "abuse"},
            "admin.user.suspended",
            {"status": "active"},
            {"status": "suspended", "reason": "abuse", "sessionsRevoked": 1},
        ),
        (
            REINSTATE,
            {"id": user.user_id},
            "admin.user.reinstated",
            {"status": "suspended"},
            {"status": "active", "reason": None, "sessionsRevoked": 0},
        ),
    ]
    for query, variables, action, before, after in steps:
        result, request_id = await call(admin.client, query, variables, csrf=admin.csrf)
        assert next(iter(result["data"].values()))["__typename"] == "UserPayload"
        row = await only_row(engine, request_id)
        assert (row.action, row.actor_type, row.actor_user_id, row.actor_token_id) == (
            action,
            "user",
            admin_id,
            None,
        )
        assert (row.target_type, row.target_id) == ("user", str(user_id))
        assert (row.before, row.after) == (before, after)
        assert row.client_ip == "127.0.0.1"
        assert row.tx == await writer_of(engine, "users", user_id)


async def test_refused_changes_leave_no_success_rows(
    accounts: Accounts, engine: AsyncEngine
) -> None:
    account = await accounts.sign_up("taken@example.com")
    before = await audit_count(engine)
    client = await accounts.client()
    result, request_id = await call(
        client, SIGN_UP, {"email": "TAKEN@example.com", "password": PASSWORD}
    )
    assert result["data"]["signUp"]["code"] == "EMAIL_TAKEN"
    assert await rows_of(engine, request_id) == []
    result, request_id = await call(
        account.client,
        CREATE_TOKEN,
        {"name": "x", "scopes": [], "expiresAt": datetime.now(UTC).isoformat()},
        csrf=account.csrf,
    )
    assert result["data"]["createApiToken"]["code"] == "INVALID_SCOPES"
    assert await rows_of(engine, request_id) == []
    assert await audit_count(engine) == before


# --- reading the log -------------------------------------------------------------------------


async def audit_page(admin: Account, **filters: Any) -> list[dict[str, Any]]:
    result = await admin.gql(AUDIT, {"first": 100, "filter": filters or None})
    assert "errors" not in result, result
    return [edge["node"] for edge in result["data"]["auditEvents"]["edges"]]


async def test_audit_events_filters(accounts: Accounts, engine: AsyncEngine) -> None:
    admin = await accounts.admin()
    alice = await accounts.sign_up()
    bob = await accounts.sign_up()
    token_secret = await alice.token(["ACCOUNT_READ"])
    assert token_secret.startswith("gpc_")
    await call(await accounts.client(), LOG_IN, {"email": bob.email, "password": "wrong!!wrong!!"})
    _, bob_logout = await call(bob.client, LOG_OUT, csrf=bob.csrf)
    await call(admin.client, SUSPEND, {"id": alice.user_id}, csrf=admin.csrf)

    everything = await audit_page(admin)
    assert len(everything) == await audit_count(engine)
    ids = [key(e["id"], "AuditEvent") for e in everything]
    assert ids == sorted(ids, reverse=True)  # newest first
    async with engine.connect() as conn:
        hashes = {
            row.id: row.hash for row in await conn.execute(text("SELECT * FROM audit_events"))
        }
    assert all(e["hash"] == bytes(hashes[key(e["id"], "AuditEvent")]).hex() for e in everything)

    by_alice = await audit_page(admin, actorUserId=alice.user_id)
    assert {e["action"] for e in by_alice} == {"auth.signup", "token.created"}
    assert all(e["actorUserId"] == alice.user_id for e in by_alice)

    logouts = await audit_page(admin, action="auth.logout")
    assert [(e["actorUserId"], e["requestId"]) for e in logouts] == [(bob.user_id, bob_logout)]

    auth_rows = await audit_page(admin, action="auth.")
    assert {e["action"] for e in auth_rows} == {
        "auth.signup",
        "auth.login.failed",
        "auth.logout",
    }
    assert len(auth_rows) == 5  # three sign-ups, one failure, one logout
    assert await audit_page(admin, action="auth") == []  # not a prefix without the dot
    assert await audit_page(admin, action="auth.%") == []  # wildcards are literal
    assert {e["action"] for e in await audit_page(admin, action="admin.")} == {
        "admin.user.role_changed",
        "admin.user.suspended",
    }

    about_alice = await audit_page(admin, targetType="user", targetId=alice.user_id)
    assert {e["action"] for e in about_alice} == {"auth.signup", "admin.user.suspended"}
    assert {e["targetId"] for e in about_alice} == {alice.user_id}  # the global ID, as sent
    # The database key the domain records finds the same rows; without a type, the ID says it.
    alice_key = str(key(alice.user_id, "User"))
    assert await audit_page(admin, targetType="user", targetId=alice_key) == about_alice
    assert await audit_page(admin, targetId=alice.user_id) == about_alice
    suspended = next(e for e in about_alice if e["action"] == "admin.user.suspended")
    assert suspended["actorUserId"] == admin.user_id
    assert suspended["before"] == {"status": "active"}
    assert suspended["after"]["status"] == "suspended"
    tokens = await audit_page(admin, targetType="api_token")
    assert [e["action"] for e in tokens] == ["token.created"]

    # since is inclusive, until exclusive.
    middle = everything[len(everything) // 2]
    instant = middle["occurredAt"]
    since = await audit_page(admin, since=instant)
    until = await audit_page(admin, until=instant)
    assert middle["id"] in {e["id"] for e in since}
    assert middle["id"] not in {e["id"] for e in until}
    assert len(since) + len(until) == len(everything)
    at = datetime.fromisoformat(instant)
    assert all(datetime.fromisoformat(e["occurredAt"]) >= at for e in since)
    assert all(datetime.fromisoformat(e["occurredAt"]) < at for e in until)
    window = await audit_page(admin, since=instant, until=instant)
    assert window == []
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert await audit_page(admin, since=future) == []
    bob_signed_up = next(
        e for e in everything if e["action"] == "auth.signup" and e["actorUserId"] == bob.user_id
    )["occurredAt"]
    combined = await audit_page(admin, actorUserId=bob.user_id, action="auth.", since=bob_signed_up)
    assert [e["action"] for e in combined] == ["auth.logout", "auth.signup"]
    assert await audit_page(admin, actorUserId=bob.user_id, until=bob_signed_up) == []


async def test_audit_events_are_paginated(accounts: Accounts) -> None:
    admin = await accounts.admin()
    for _ in range(3):
        await accounts.sign_up()
    seen: list[str] = []
    after = None
    while True:
        result = await admin.gql(AUDIT, {"first": 2, "after": after})
        connection = result["data"]["auditEvents"]
        seen.extend(edge["node"]["id"] for edge in connection["edges"])
        if not connection["pageInfo"]["hasNextPage"]:
            break
        after = connection["pageInfo"]["endCursor"]
    assert len(seen) == len(set(seen)) == 5  # the admin's sign-up and promotion, three sign-ups


async def test_audit_events_are_admin_only(accounts: Accounts, client: AsyncClient) -> None:
    user = await accounts.sign_up()
    denied = await user.gql(AUDIT)
    assert denied["data"] is None
    assert codes(denied) == ["FORBIDDEN"]
    token = await accounts.bearer(await user.token())
    response = await token.post("/graphql", json=body(AUDIT))
    assert codes(response.json()) == ["FORBIDDEN"]
    response = await client.post("/graphql", json=body(AUDIT))
    assert codes(response.json()) == ["UNAUTHENTICATED"]
    # Nor can a user fetch an audit event by node id.
    admin = await accounts.admin()
    event_id = (await audit_page(admin))[0]["id"]
    node = await user.gql("query($id: ID!) { node(id: $id) { id } }", {"id": event_id})
    assert codes(node) == ["FORBIDDEN"]


# --- append-only, hash-chained ---------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_events SET action = 'auth.nothing_happened'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
    ],
)
async def test_the_database_refuses_to_change_audit_rows(
    accounts: Accounts, engine: AsyncEngine, statement: str
) -> None:
    await accounts.sign_up()
    async with engine.connect() as conn:
        before = (await conn.execute(text("SELECT id, action, hash FROM audit_events"))).all()
    assert before
    with pytest.raises(DBAPIError, match="append-only"):
        async with engine.begin() as conn:
            await conn.execute(text(statement))
    async with engine.connect() as conn:
        after = (await conn.execute(text("SELECT id, action, hash FROM audit_events"))).all()
    assert after == before


async def test_the_hash_chain_verifies_and_catches_tampering(
    accounts: Accounts, engine: AsyncEngine, uow: Any
) -> None:
    admin = await accounts.admin()
    user = await accounts.sign_up()
    await user.token(["ACCOUNT_READ"])
    await call(
        await accounts.client(), LOG_IN, {"email": "ghost@example.com", "password": "x" * 12}
    )
    await call(admin.client, SUSPEND, {"id": user.user_id}, csrf=admin.csrf)
    await call(admin.client, REINSTATE, {"id": user.user_id}, csrf=admin.csrf)
    total = await audit_count(engine)
    assert total == 7

    verified = await verify_chain(uow)
    assert verified.broken_at is None
    assert verified.checked == total
    small_batches = await verify_chain(uow, batch=2)
    assert small_batches.broken_at is None and small_batches.checked == total

    # A superuser who bypasses the trigger can still edit a row; the chain names it.
    async with engine.connect() as conn:
        victim = (
            await conn.execute(
                text("SELECT id FROM audit_events WHERE action = 'admin.user.suspended'")
            )
        ).scalar_one()
    async with engine.begin() as conn:
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        await conn.execute(
            text('UPDATE audit_events SET after = \'{"status": "active"}\' WHERE id = :i'),
            {"i": victim},
        )
    tampered = await verify_chain(uow)
    assert tampered.broken_at == victim
