"""Accounts for tests: sign up over GraphQL, keep the cookie jar, mint API tokens, promote."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from httpx import ASGITransport, AsyncClient, Client

PASSWORD = "correct horse battery staple"

SESSION_FIELDS = """
  __typename
  ... on SessionPayload { csrfToken expiresAt user { id email role status } }
  ... on AccountError { code message field retryAfterSeconds problems { code field } }
"""
SIGN_UP = f"""mutation SignUp($email: String!, $password: String!) {{
  signUp(input: {{email: $email, password: $password}}) {{ {SESSION_FIELDS} }} }}"""
LOG_IN = f"""mutation LogIn($email: String!, $password: String!) {{
  logIn(input: {{email: $email, password: $password}}) {{ {SESSION_FIELDS} }} }}"""
CREATE_TOKEN = """mutation Create($name: String!, $scopes: [Scope!]!, $expiresAt: DateTime!) {
  createApiToken(input: {name: $name, scopes: $scopes, expiresAt: $expiresAt}) {
    __typename
    ... on CreateApiTokenPayload { secret token { id name scopes prefix status expiresAt } }
    ... on AccountError { code message field problems { code field } }
  } }"""
ALL_USER_SCOPES = ["ACCOUNT_READ", "ACCOUNT_WRITE", "BILLING_READ", "BILLING_WRITE",
                   "COMPUTE_READ", "COMPUTE_WRITE"]  # fmt: skip


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}@Example.com"


def body(query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"query": query, "variables": variables or {}}


@dataclass
class Account:
    """A signed-in browser: its own cookie jar, and the CSRF token the SPA would echo."""

    client: AsyncClient
    email: str
    password: str
    user_id: str
    csrf: str
    tokens: list[str] = field(default_factory=list)

    async def gql(self, query: str, variables: dict[str, Any] | None = None, *,
                  csrf: bool = True) -> dict[str, Any]:  # fmt: skip
        headers = {"x-csrf-token": self.csrf} if csrf else {}
        response = await self.client.post("/graphql", json=body(query, variables), headers=headers)
        assert "Traceback" not in response.text
        return response.json()  # type: ignore[no-any-return]

    async def token(self, scopes: Sequence[str] = ALL_USER_SCOPES, *, name: str = "ci",
                    expires_in: timedelta = timedelta(days=30)) -> str:  # fmt: skip
        expires = (datetime.now(UTC) + expires_in).isoformat()
        result = await self.gql(CREATE_TOKEN, {"name": name, "scopes": list(scopes),
                                               "expiresAt": expires})  # fmt: skip
        payload = result["data"]["createApiToken"]
        assert payload["__typename"] == "CreateApiTokenPayload", payload
        self.tokens.append(payload["secret"])
        return payload["secret"]  # type: ignore[no-any-return]


class Accounts:
    """Makes signed-in accounts against one ASGI app; closes their clients at the end."""

    def __init__(self, app: Any, stack: AsyncExitStack) -> None:
        self.app, self.stack = app, stack

    async def client(self, ip: str = "127.0.0.1") -> AsyncClient:
        transport = ASGITransport(app=self.app, client=(ip, 50000))
        return await self.stack.enter_async_context(
            AsyncClient(transport=transport, base_url="http://testserver")
        )

    async def sign_up(self, email: str | None = None, password: str = PASSWORD) -> Account:
        client = await self.client()
        email = email or unique_email()
        response = await client.post("/graphql", json=body(SIGN_UP, {"email": email,
                                                                     "password": password}))  # fmt: skip
        payload = response.json()["data"]["signUp"]
        assert payload["__typename"] == "SessionPayload", payload
        return Account(client, email, password, payload["user"]["id"], payload["csrfToken"])

    async def admin(self) -> Account:
        """An administrator, promoted the way an operator does it (the domain service, as the
        CLI calls it), then signed in again so the session carries the role."""
        account = await self.sign_up(unique_email("admin"))
        await promote(self.app, account.email)
        return account

    async def bearer(self, secret: str) -> AsyncClient:
        client = await self.client()
        client.headers["authorization"] = f"Bearer {secret}"
        return client


async def promote(app: Any, email: str) -> None:
    from domain.audit.records import RequestMeta
    from domain.identity import admin
    from domain.identity.principal import SYSTEM
    from domain.identity.scopes import Role

    res = app.state.resources
    async with res.uow() as tx:
        user = await tx.users.get_by_email(email.lower())
    assert user is not None
    await admin.set_role(res.uow(), SYSTEM, user.id, Role.ADMIN, RequestMeta(request_id="test"))


def sync_sign_up_with_token(base_url: str, scopes: Sequence[str] = ALL_USER_SCOPES) -> str:
    """Against a running server: sign up, then mint a token with `scopes`; returns the secret."""
    with Client(base_url=base_url) as client:
        email = unique_email()
        signed = client.post("/graphql", json=body(SIGN_UP, {"email": email, "password": PASSWORD}))
        csrf = signed.json()["data"]["signUp"]["csrfToken"]
        expires = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        made = client.post(
            "/graphql",
            json=body(
                CREATE_TOKEN, {"name": "stack", "scopes": list(scopes), "expiresAt": expires}
            ),
            headers={"x-csrf-token": csrf},
        )
        return made.json()["data"]["createApiToken"]["secret"]  # type: ignore[no-any-return]


async def expire_token(database_url: str, token_id: int) -> None:
    """Backdate an API token's expiry, as time would (no event is emitted for expiry)."""
    import asyncpg

    conn = await asyncpg.connect(database_url.replace("+asyncpg", "", 1))
    try:
        await conn.execute(
            "UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE id = $1",
            token_id,
        )
    finally:
        await conn.close()
