"""Administration over GraphQL: listing users, roles, suspension and reinstatement, and how
each change reaches credentials that already exist."""

from __future__ import annotations

from typing import Any

from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.identity import ALL_USER_SCOPES, LOG_IN, Account, Accounts, body

USERS = """query Users($first: Int, $after: String, $filter: UserFilter) {
  users(first: $first, after: $after, filter: $filter) {
    edges { node { id email role status } }
    pageInfo { hasNextPage endCursor } } }"""
SET_ROLE = """mutation SetRole($id: ID!, $role: Role!) {
  setUserRole(input: {userId: $id, role: $role}) { __typename
    ... on UserPayload { user { id role status } }
    ... on AccountError { code message field } } }"""
SUSPEND = """mutation Suspend($id: ID!, $reason: String) {
  suspendUser(input: {userId: $id, reason: $reason}) { __typename
    ... on UserPayload { user { id role status } }
    ... on AccountError { code message field } } }"""
REINSTATE = """mutation Reinstate($id: ID!) { reinstateUser(userId: $id) { __typename
    ... on UserPayload { user { id role status } }
    ... on AccountError { code message field } } }"""
VIEWER = "{ viewer { id role status } }"
ADMIN_SCOPES = [*ALL_USER_SCOPES, "ADMIN_READ", "ADMIN_WRITE"]


def codes(result: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in result.get("errors", [])]


def user_key(global_id: str) -> int:
    import base64

    raw = base64.urlsafe_b64decode(global_id + "=" * (-len(global_id) % 4)).decode()
    kind, _, key = raw.partition(":")
    assert kind == "User"
    return int(key)


async def post(client: AsyncClient, query: str, variables: dict[str, Any] | None = None) -> Any:
    response = await client.post("/graphql", json=body(query, variables))
    assert response.status_code == 200, response.text
    assert "Traceback" not in response.text
    return response.json()


async def users(caller: Account, **variables: Any) -> dict[str, Any]:
    result = await caller.gql(USERS, variables)
    assert "errors" not in result, result
    return result["data"]["users"]  # type: ignore[no-any-return]


def emails(connection: dict[str, Any]) -> list[str]:
    return [edge["node"]["email"] for edge in connection["edges"]]


async def log_in(accounts: Accounts, account: Account, ip: str = "127.0.0.1") -> dict[str, Any]:
    client = await accounts.client(ip)
    result = await post(client, LOG_IN, {"email": account.email, "password": account.password})
    return result["data"]["logIn"]  # type: ignore[no-any-return]


# --- listing ---------------------------------------------------------------------------------


async def test_admin_lists_and_filters_users(accounts: Accounts) -> None:
    admin = await accounts.admin()
    alice = await accounts.sign_up("alice@Example.com")
    bob = await accounts.sign_up("bob@example.org")
    carol = await accounts.sign_up("carol_x@example.com")
    suspended = await admin.gql(SUSPEND, {"id": bob.user_id, "reason": "spam"})
    assert suspended["data"]["suspendUser"]["user"]["status"] == "SUSPENDED"

    everyone = await users(admin)
    assert sorted(emails(everyone)) == sorted(
        [admin.email.lower(), "alice@example.com", "bob@example.org", "carol_x@example.com"]
    )
    assert emails(await users(admin, filter={"emailContains": "ALICE"})) == ["alice@example.com"]
    assert emails(await users(admin, filter={"emailContains": "example.org"})) == [
        "bob@example.org"
    ]
    # LIKE wildcards in the filter are literal characters.
    assert emails(await users(admin, filter={"emailContains": "_x"})) == ["carol_x@example.com"]
    assert emails(await users(admin, filter={"emailContains": "%"})) == []
    assert emails(await users(admin, filter={"role": "ADMIN"})) == [admin.email.lower()]
    assert emails(await users(admin, filter={"status": "SUSPENDED"})) == ["bob@example.org"]
    assert emails(await users(admin, filter={"status": "ACTIVE", "role": "USER"})) == [
        "alice@example.com",
        "carol_x@example.com",
    ]
    assert emails(
        await users(admin, filter={"emailContains": "EXAMPLE", "status": "SUSPENDED"})
    ) == ["bob@example.org"]
    assert {alice.user_id, carol.user_id} <= {e["node"]["id"] for e in everyone["edges"]}


async def test_users_are_paginated(accounts: Accounts) -> None:
    admin = await accounts.admin()
    for _ in range(4):
        await accounts.sign_up()
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        page = await users(admin, first=2, after=after)
        pages += 1
        assert len(page["edges"]) <= 2
        seen.extend(edge["node"]["id"] for edge in page["edges"])
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
        assert pages < 10
    assert pages == 3
    assert len(seen) == len(set(seen)) == 5
    assert sorted(seen) == sorted(e["node"]["id"] for e in (await users(admin))["edges"])
    too_many = await admin.gql(USERS, {"first": 101})
    assert too_many["data"] is None and too_many["errors"]


async def test_users_is_admin_only(accounts: Accounts, client: AsyncClient) -> None:
    user = await accounts.sign_up()
    denied = await user.gql(USERS)
    assert denied["data"] is None
    assert codes(denied) == ["FORBIDDEN"]
    assert codes(await post(client, USERS)) == ["UNAUTHENTICATED"]

    user_token = await accounts.bearer(await user.token(ALL_USER_SCOPES))
    assert codes(await post(user_token, USERS)) == ["FORBIDDEN"]

    admin = await accounts.admin()
    no_admin_scope = await accounts.bearer(await admin.token(ALL_USER_SCOPES))
    assert codes(await post(no_admin_scope, USERS)) == ["MISSING_SCOPE"]
    read_only = await accounts.bearer(await admin.token(["ADMIN_READ"]))
    listed = await post(read_only, USERS)
    assert "errors" not in listed
    assert len(listed["data"]["users"]["edges"]) == 2
    # Reading is not writing.
    cannot_write = await post(read_only, SET_ROLE, {"id": user.user_id, "role": "ADMIN"})
    assert codes(cannot_write) == ["MISSING_SCOPE"]
    assert codes(await user.gql(SET_ROLE, {"id": user.user_id, "role": "ADMIN"})) == ["FORBIDDEN"]
    assert codes(await user.gql(SUSPEND, {"id": admin.user_id})) == ["FORBIDDEN"]


# --- roles -----------------------------------------------------------------------------------


async def test_set_user_role_is_audited_with_before_and_after(
    accounts: Accounts, engine: AsyncEngine
) -> None:
    admin = await accounts.admin()
    user = await accounts.sign_up()
    assert codes(await user.gql(USERS)) == ["FORBIDDEN"]

    result = await admin.gql(SET_ROLE, {"id": user.user_id, "role": "ADMIN"})
    assert result["data"]["setUserRole"] == {
        "__typename": "UserPayload",
        "user": {"id": user.user_id, "role": "ADMIN", "status": "ACTIVE"},
    }
    # The promoted user's existing session has the role at once.
    assert "errors" not in await user.gql(USERS)
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT * FROM audit_events WHERE action = 'admin.user.role_changed' "
                    "AND target_id = :t ORDER BY id"
                ),
                {"t": str(user_key(user.user_id))},
            )
        ).all()
    assert len(rows) == 1
    row = rows[0]
    assert row.actor_type == "user"
    assert row.actor_user_id == user_key(admin.user_id)
    assert row.target_type == "user"
    assert row.before == {"role": "user"}
    assert row.after == {"role": "admin"}

    # Setting the role it already has changes nothing and writes nothing.
    same = await admin.gql(SET_ROLE, {"id": user.user_id, "role": "ADMIN"})
    assert same["data"]["setUserRole"]["user"]["role"] == "ADMIN"
    async with engine.connect() as conn:
        total = (
            await conn.execute(
                text("SELECT count(*) FROM audit_events WHERE action = 'admin.user.role_changed'")
            )
        ).scalar_one()
    assert total == 2  # the fixture's own promotion of `admin`, and this one


async def test_admin_cannot_change_their_own_account(accounts: Accounts) -> None:
    admin = await accounts.admin()
    for query, variables in (
        (SET_ROLE, {"id": admin.user_id, "role": "USER"}),
        (SUSPEND, {"id": admin.user_id}),
        (REINSTATE, {"id": admin.user_id}),
    ):
        result = await admin.gql(query, variables)
        payload = next(iter(result["data"].values()))
        assert payload["__typename"] == "AccountError"
        assert payload["code"] == "CANNOT_CHANGE_SELF"
        assert payload["field"] == "userId"
    viewer = await admin.gql(VIEWER)
    assert viewer["data"]["viewer"] == {"id": admin.user_id, "role": "ADMIN", "status": "ACTIVE"}


async def test_unknown_or_malformed_user_ids(accounts: Accounts) -> None:
    admin = await accounts.admin()
    missing = await admin.gql(SET_ROLE, {"id": "VXNlcjo5OTk5OTk=", "role": "ADMIN"})  # User:999999
    assert missing["data"]["setUserRole"]["code"] == "NOT_FOUND"
    bad = await admin.gql(SUSPEND, {"id": "not-an-id"})
    assert bad["data"]["suspendUser"]["code"] == "INVALID_ID"
    wrong_type = await admin.gql(REINSTATE, {"id": "QXBpVG9rZW46MQ"})  # ApiToken:1
    assert wrong_type["data"]["reinstateUser"]["code"] == "INVALID_ID"


async def test_demoted_admin_loses_admin_scopes_on_existing_tokens(accounts: Accounts) -> None:
    boss = await accounts.admin()
    deputy = await accounts.admin()
    token = await accounts.bearer(await deputy.token(ADMIN_SCOPES))
    assert "errors" not in await post(token, USERS)  # used, and so known to this process
    assert "errors" not in await deputy.gql(USERS)

    result = await boss.gql(SET_ROLE, {"id": deputy.user_id, "role": "USER"})
    assert result["data"]["setUserRole"]["user"]["role"] == "USER"

    assert codes(await post(token, USERS)) == ["FORBIDDEN"]
    assert codes(await deputy.gql(USERS)) == ["FORBIDDEN"]
    assert codes(await post(token, SUSPEND, {"id": boss.user_id})) == ["FORBIDDEN"]
    # The token itself still works for what a user may do.
    assert (await post(token, VIEWER))["data"]["viewer"]["role"] == "USER"


# --- suspension ------------------------------------------------------------------------------


async def test_suspension_ends_sessions_and_tokens_at_once(
    accounts: Accounts, engine: AsyncEngine
) -> None:
    admin = await accounts.admin()
    user = await accounts.sign_up()
    token = await accounts.bearer(await user.token(["ACCOUNT_READ"]))
    # Both credentials used, so this process has them cached.
    assert (await user.gql(VIEWER))["data"]["viewer"]["status"] == "ACTIVE"
    assert (await post(token, VIEWER))["data"]["viewer"]["id"] == user.user_id

    result = await admin.gql(SUSPEND, {"id": user.user_id, "reason": "chargeback"})
    assert result["data"]["suspendUser"]["user"] == {
        "id": user.user_id,
        "role": "USER",
        "status": "SUSPENDED",
    }
    for refused in (await user.gql(VIEWER), await post(token, VIEWER)):
        assert refused["data"] is None
        assert codes(refused) == ["UNAUTHENTICATED"]
    async with engine.connect() as conn:
        live = (
            await conn.execute(
                text("SELECT count(*) FROM sessions WHERE user_id = :u AND revoked_at IS NULL"),
                {"u": user_key(user.user_id)},
            )
        ).scalar_one()
        row = (
            await conn.execute(
                text("SELECT * FROM audit_events WHERE action = 'admin.user.suspended'")
            )
        ).one()
    assert live == 0
    assert row.before == {"status": "active"}
    assert row.after == {"status": "suspended", "reason": "chargeback", "sessionsRevoked": 1}

    login = await log_in(accounts, user)
    assert login["__typename"] == "AccountError"
    assert login["code"] == "ACCOUNT_SUSPENDED"
    # The right password is needed to learn that an account is suspended.
    client = await accounts.client()
    wrong = await post(client, LOG_IN, {"email": user.email, "password": "wrong password 123"})
    assert wrong["data"]["logIn"]["code"] == "INVALID_CREDENTIALS"
    # Suspending again changes nothing.
    again = await admin.gql(SUSPEND, {"id": user.user_id})
    assert again["data"]["suspendUser"]["user"]["status"] == "SUSPENDED"


async def test_reinstated_user_can_log_in_again(accounts: Accounts) -> None:
    admin = await accounts.admin()
    user = await accounts.sign_up()
    token = await accounts.bearer(await user.token(["ACCOUNT_READ"]))
    await admin.gql(SUSPEND, {"id": user.user_id})
    assert (await log_in(accounts, user))["code"] == "ACCOUNT_SUSPENDED"
    assert codes(await post(token, VIEWER)) == ["UNAUTHENTICATED"]

    result = await admin.gql(REINSTATE, {"id": user.user_id})
    assert result["data"]["reinstateUser"]["user"]["status"] == "ACTIVE"
    login = await log_in(accounts, user)
    assert login["__typename"] == "SessionPayload"
    assert login["user"]["status"] == "ACTIVE"
    # Tokens were only paused; sessions ended for good.
    assert (await post(token, VIEWER))["data"]["viewer"]["id"] == user.user_id
    assert codes(await user.gql(VIEWER)) == ["UNAUTHENTICATED"]
    assert emails(await users(admin, filter={"status": "SUSPENDED"})) == []
