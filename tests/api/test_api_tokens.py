"""API tokens over GraphQL: creation (secret once, hash only), limits on scopes and expiry,
Bearer authentication, scopes, session-only fields, last use, revocation and expiry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from asgi_lifespan import LifespanManager
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.settings import Settings
from tests.support.identity import ALL_USER_SCOPES, CREATE_TOKEN, Account, Accounts, body

VIEWER = "{ viewer { id email } }"
TOKENS = """{ apiTokens { edges { node {
  id name scopes prefix status createdAt expiresAt lastUsedAt revokedAt } } } }"""
REVOKE = """mutation Revoke($id: ID!) { revokeApiToken(id: $id) { __typename
  ... on ApiTokenPayload { token { id status revokedAt } }
  ... on AccountError { code message field } } }"""
INVALID_CREDENTIAL = "The credential sent is invalid, expired or revoked; sign in again."


@asynccontextmanager
async def app_with(settings: Settings, **changes: Any) -> AsyncIterator[Accounts]:
    from gpucloud.app import create_app

    application = create_app(replace(settings, **changes))
    async with LifespanManager(application), AsyncExitStack() as stack:
        yield Accounts(application, stack)


def codes(result: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in result.get("errors", [])]


async def post(client: AsyncClient, query: str, variables: dict[str, Any] | None = None) -> Any:
    response = await client.post("/graphql", json=body(query, variables))
    assert response.status_code == 200, response.text
    assert "Traceback" not in response.text
    return response.json()


async def create(
    account: Account,
    scopes: list[str] | None = None,
    *,
    name: str = "ci",
    expires_at: datetime | str | None = None,
) -> dict[str, Any]:
    when = expires_at or datetime.now(UTC) + timedelta(days=30)
    result = await account.gql(
        CREATE_TOKEN,
        {
            "name": name,
            "scopes": ALL_USER_SCOPES if scopes is None else scopes,
            "expiresAt": when if isinstance(when, str) else when.isoformat(),
        },
    )
    assert "errors" not in result, result
    return result["data"]["createApiToken"]  # type: ignore[no-any-return]


async def listed(account: Account) -> list[dict[str, Any]]:
    result = await account.gql(TOKENS)
    assert "errors" not in result, result
    return [edge["node"] for edge in result["data"]["apiTokens"]["edges"]]


# --- creation --------------------------------------------------------------------------------


async def test_create_returns_the_secret_once(accounts: Accounts) -> None:
    account = await accounts.sign_up()
    expires = (datetime.now(UTC) + timedelta(days=10)).replace(microsecond=0)
    made = await create(
        account, ["COMPUTE_READ", "ACCOUNT_READ"], name=" deploy bot ", expires_at=expires
    )
    assert made["__typename"] == "CreateApiTokenPayload"
    secret = made["secret"]
    assert secret.startswith("gpc_")
    assert len(secret) >= 4 + 43  # 256 bits, url-safe base64
    token = made["token"]
    assert token["name"] == "deploy bot"
    assert sorted(token["scopes"]) == ["ACCOUNT_READ", "COMPUTE_READ"]
    assert token["status"] == "ACTIVE"
    assert token["prefix"] == secret[:12]
    assert datetime.fromisoformat(token["expiresAt"]) == expires

    # Listing never shows the secret again, in any field.
    response = await account.client.post("/graphql", json=body(TOKENS))
    assert secret not in response.text
    assert secret[12:] not in response.text
    nodes = response.json()["data"]["apiTokens"]["edges"]
    assert [n["node"]["id"] for n in nodes] == [token["id"]]
    assert nodes[0]["node"]["prefix"] == secret[:12]


async def test_the_api_token_type_has_no_secret_field(client: AsyncClient) -> None:
    result = await post(client, '{ __type(name: "ApiToken") { fields { name } } }')
    names = {f["name"] for f in result["data"]["__type"]["fields"]}
    assert "secret" not in names and "secretHash" not in names
    assert {"id", "name", "scopes", "prefix", "status", "lastUsedAt"} <= names


async def test_the_database_keeps_only_a_hash(accounts: Accounts, engine: AsyncEngine) -> None:
    account = await accounts.sign_up()
    secret = (await create(account))["secret"]
    async with engine.connect() as conn:
        row = (await conn.execute(text("SELECT * FROM api_tokens"))).one()
    stored = bytes(row.secret_hash)
    assert stored != secret.encode()
    assert len(stored) == 32
    assert secret.encode() not in stored
    for column, value in row._mapping.items():
        as_bytes = bytes(value) if isinstance(value, (bytes, memoryview)) else str(value).encode()
        assert secret.encode() not in as_bytes, column
        assert secret[12:].encode() not in as_bytes, column


async def test_expiry_is_required_and_at_most_a_year(
    accounts: Accounts, engine: AsyncEngine
) -> None:
    account = await accounts.sign_up()
    now = datetime.now(UTC)
    for when in (now + timedelta(days=400), now - timedelta(days=1), now + timedelta(seconds=30)):
        payload = await create(account, expires_at=when)
        assert payload["__typename"] == "AccountError", when
        assert payload["code"] == "INVALID_EXPIRY"
        assert payload["field"] == "expiresAt"
    naive = await create(account, expires_at=(now + timedelta(days=3)).replace(tzinfo=None))
    assert naive["code"] == "INVALID_EXPIRY"
    missing = await account.gql(
        'mutation { createApiToken(input: {name: "x", scopes: [ACCOUNT_READ]}) { __typename } }'
    )
    assert missing["data"] is None
    assert codes(missing) == ["GRAPHQL_VALIDATION_FAILED"]
    # Just under a year is fine.
    ok = await create(account, expires_at=now + timedelta(days=364))
    assert ok["__typename"] == "CreateApiTokenPayload"
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM api_tokens"))).scalar_one() == 1


async def test_scopes_are_required_and_bounded_by_the_role(
    accounts: Accounts, engine: AsyncEngine
) -> None:
    account = await accounts.sign_up()
    empty = await create(account, [])
    assert empty["code"] == "INVALID_SCOPES"
    assert empty["field"] == "scopes"
    for beyond in (["ADMIN_READ"], ["ACCOUNT_READ", "ADMIN_WRITE"]):
        payload = await create(account, beyond)
        assert payload["__typename"] == "AccountError"
        assert payload["code"] == "INVALID_SCOPES"
        assert "admin:" in payload["message"]
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM api_tokens"))).scalar_one() == 0


async def test_all_problems_of_a_token_request_are_listed(accounts: Accounts) -> None:
    account = await accounts.sign_up()
    payload = await create(
        account, [], name="   ", expires_at=datetime.now(UTC) - timedelta(hours=1)
    )
    assert {p["code"] for p in payload["problems"]} == {
        "INVALID_NAME",
        "INVALID_SCOPES",
        "INVALID_EXPIRY",
    }


# --- using tokens ----------------------------------------------------------------------------


async def test_bearer_token_authenticates(accounts: Accounts) -> None:
    account = await accounts.sign_up()
    bearer = await accounts.bearer(await account.token(["ACCOUNT_READ"]))
    result = await post(bearer, VIEWER)
    assert "errors" not in result
    assert result["data"]["viewer"]["id"] == account.user_id


async def test_bearer_wins_over_the_cookie(accounts: Accounts) -> None:
    """An explicit credential is the one used, even when a session cookie is sent too."""
    owner, other = await accounts.sign_up(), await accounts.sign_up()
    secret = await owner.token(["ACCOUNT_READ"])
    response = await other.client.post(
        "/graphql", json=body(VIEWER), headers={"authorization": f"Bearer {secret}"}
    )
    assert response.json()["data"]["viewer"]["id"] == owner.user_id


async def test_token_lacking_a_scope_is_refused(accounts: Accounts) -> None:
    account = await accounts.sign_up()
    bearer = await accounts.bearer(await account.token(["COMPUTE_READ"]))
    result = await post(bearer, VIEWER)
    assert result["data"] is None
    assert codes(result) == ["MISSING_SCOPE"]
    assert "account:read" in result["errors"][0]["message"]

    read_only = await accounts.bearer(await account.token(["ACCOUNT_READ"]))
    token_id = (await listed(account))[0]["id"]
    refused = await post(read_only, REVOKE, {"id": token_id})
    assert codes(refused) == ["MISSING_SCOPE"]
    assert (await listed(account))[0]["status"] == "ACTIVE"


async def test_tokens_are_refused_for_session_only_mutations(
    accounts: Accounts, engine: AsyncEngine
) -> None:
    account = await accounts.sign_up()
    bearer = await accounts.bearer(await account.token())
    expires = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    attempts = [
        (CREATE_TOKEN, {"name": "more", "scopes": ["ACCOUNT_READ"], "expiresAt": expires}),
        ("mutation { logOut { __typename } }", None),
        ("mutation { logOutEverywhere { __typename } }", None),
        (
            'mutation { changePassword(input: {currentPassword: "%s", newPassword: "%s"}) '
            "{ __typename } }" % (account.password, "another long password"),
            None,
        ),
    ]
    for query, variables in attempts:
        result = await post(bearer, query, variables)
        assert result["data"] is None, query
        assert codes(result) == ["SESSION_REQUIRED"], query
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM api_tokens"))).scalar_one() == 1
        assert (
            await conn.execute(text("SELECT count(*) FROM sessions WHERE revoked_at IS NULL"))
        ).scalar_one() == 1
    # The password did not change.
    assert (await account.gql(VIEWER))["data"]["viewer"]["id"] == account.user_id


async def test_unknown_or_wrong_kind_of_bearer_is_refused(accounts: Accounts) -> None:
    account = await accounts.sign_up()
    session_secret = account.client.cookies.get("gpucloud_session")
    for value in ("gpc_" + "A" * 43, "not-a-token", str(session_secret)):
        bearer = await accounts.bearer(value)
        result = await post(bearer, VIEWER)
        assert codes(result) == ["UNAUTHENTICATED"], value
        assert result["errors"][0]["message"] == INVALID_CREDENTIAL
    basic = await accounts.client()
    response = await basic.post(
        "/graphql", json=body(VIEWER), headers={"authorization": "Basic dXNlcjpwYXNz"}
    )
    assert codes(response.json()) == ["UNAUTHENTICATED"]


async def test_last_used_at_is_recorded(accounts: Accounts) -> None:
    account = await accounts.sign_up()
    secret = await account.token(["ACCOUNT_READ"])
    assert (await listed(account))[0]["lastUsedAt"] is None
    before = datetime.now(UTC) - timedelta(seconds=1)
    assert "errors" not in await post(await accounts.bearer(secret), VIEWER)
    used = (await listed(account))[0]["lastUsedAt"]
    assert used is not None
    assert before <= datetime.fromisoformat(used) <= datetime.now(UTC) + timedelta(seconds=1)


# --- revocation and expiry -------------------------------------------------------------------


async def test_revoked_token_stops_working_at_once(accounts: Accounts) -> None:
    account = await accounts.sign_up()
    made = await create(account, ["ACCOUNT_READ"])
    bearer = await accounts.bearer(made["secret"])
    # Used once, so this process knows (and may cache) the principal.
    assert (await post(bearer, VIEWER))["data"]["viewer"]["id"] == account.user_id

    result = await account.gql(REVOKE, {"id": made["token"]["id"]})
    payload = result["data"]["revokeApiToken"]
    assert payload["__typename"] == "ApiTokenPayload"
    assert payload["token"]["status"] == "REVOKED"
    assert payload["token"]["revokedAt"] is not None

    refused = await post(bearer, VIEWER)
    assert refused["data"] is None
    assert codes(refused) == ["UNAUTHENTICATED"]
    assert refused["errors"][0]["message"] == INVALID_CREDENTIAL
    assert (await listed(account))[0]["status"] == "REVOKED"

    again = await account.gql(REVOKE, {"id": made["token"]["id"]})
    assert again["data"]["revokeApiToken"]["code"] == "ALREADY_REVOKED"


async def test_a_token_may_revoke_itself(accounts: Accounts) -> None:
    account = await accounts.sign_up()
    made = await create(account, ["ACCOUNT_READ", "ACCOUNT_WRITE"])
    bearer = await accounts.bearer(made["secret"])
    result = await post(bearer, REVOKE, {"id": made["token"]["id"]})
    assert result["data"]["revokeApiToken"]["token"]["status"] == "REVOKED"
    assert codes(await post(bearer, VIEWER)) == ["UNAUTHENTICATED"]


async def test_another_users_token_is_not_found(accounts: Accounts) -> None:
    owner, stranger = await accounts.sign_up(), await accounts.sign_up()
    made = await create(owner, ["ACCOUNT_READ"])
    token_id = made["token"]["id"]
    result = await stranger.gql(REVOKE, {"id": token_id})
    payload = result["data"]["revokeApiToken"]
    assert payload["__typename"] == "AccountError"
    assert payload["code"] == "NOT_FOUND"
    missing = await stranger.gql(REVOKE, {"id": "QXBpVG9rZW46OTk5OTk5"})  # ApiToken:999999
    assert missing["data"]["revokeApiToken"]["code"] == "NOT_FOUND"
    assert missing["data"]["revokeApiToken"]["message"] == payload["message"]
    # Nor can the stranger see it, by node or in their list.
    node = await stranger.gql("query($id: ID!) { node(id: $id) { id } }", {"id": token_id})
    assert codes(node) == ["NOT_FOUND"]
    assert await listed(stranger) == []
    # And it still works for its owner.
    assert (await post(await accounts.bearer(made["secret"]), VIEWER))["data"]["viewer"]
    assert (await listed(owner))[0]["status"] == "ACTIVE"


async def test_expired_token_is_refused(settings: Settings, engine: AsyncEngine) -> None:
    async with app_with(settings, auth_cache_seconds=0) as accounts:
        account = await accounts.sign_up()
        made = await create(account, ["ACCOUNT_READ"])
        bearer = await accounts.bearer(made["secret"])
        assert (await post(bearer, VIEWER))["data"]["viewer"]["id"] == account.user_id
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE api_tokens SET expires_at = now() - interval '1 second'")
            )
        result = await post(bearer, VIEWER)
        assert result["data"] is None
        assert codes(result) == ["UNAUTHENTICATED"]
        assert result["errors"][0]["message"] == INVALID_CREDENTIAL
        assert (await listed(account))[0]["status"] == "EXPIRED"


async def test_revoking_someone_elses_token_takes_admin_write(accounts: Accounts) -> None:
    owner = await accounts.sign_up()
    await owner.token(["ACCOUNT_READ"])
    listed = await owner.gql("{ apiTokens { edges { node { id } } } }")
    token_id = listed["data"]["apiTokens"]["edges"][0]["node"]["id"]
    admin = await accounts.admin()
    read_only = await accounts.bearer(await admin.token(["ACCOUNT_WRITE", "ADMIN_READ"]))
    mutation = 'mutation { revokeApiToken(id: "%s") { __typename } }' % token_id
    refused = (await read_only.post("/graphql", json={"query": mutation})).json()
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    writer = await accounts.bearer(
        await admin.token(["ACCOUNT_WRITE", "ADMIN_READ", "ADMIN_WRITE"])
    )
    done = (await writer.post("/graphql", json={"query": mutation})).json()
    assert done["data"]["revokeApiToken"]["__typename"] == "ApiTokenPayload"
