"""The API token repository: hashed secrets, scopes, expiry and last use."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.identity.accounts import User
from domain.identity.scopes import Scope
from domain.identity.tokens import ApiToken, TokenSpec
from domain.pagination import Page, PageRequest
from infra.db.paging import keyset_page
from infra.db.tables import api_tokens, users
from infra.db.users import JOINED_USER, joined_user

# Every column but the secret hash: it never leaves the database.
_COLUMNS = [c for c in api_tokens.c if c.name != "secret_hash"]


def _to_token(row: Any) -> ApiToken:
    return ApiToken(
        id=row.id,
        user_id=row.user_id,
        name=row.name,
        scopes=frozenset(Scope(s) for s in row.scopes if s in Scope._value2member_map_),
        prefix=row.prefix,
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


class SqlApiTokenRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, user_id: int, spec: TokenSpec, secret_hash: bytes,
                  prefix: str) -> ApiToken:  # fmt: skip
        stmt = (
            insert(api_tokens)
            .values(
                user_id=user_id,
                name=spec.name,
                scopes=sorted(s.value for s in spec.scopes),
                prefix=prefix,
                secret_hash=secret_hash,
                expires_at=spec.expires_at,
            )
            .returning(*_COLUMNS)
        )
        return _to_token((await self._conn.execute(stmt)).one())

    async def find(self, secret_hash: bytes) -> tuple[ApiToken, User] | None:
        stmt = (
            select(*_COLUMNS, *JOINED_USER)
            .join(users, users.c.id == api_tokens.c.user_id)
            .where(api_tokens.c.secret_hash == secret_hash)
        )
        row = (await self._conn.execute(stmt)).first()
        return None if row is None else (_to_token(row), joined_user(row))

    async def get(self, token_id: int) -> ApiToken | None:
        row = (
            await self._conn.execute(select(*_COLUMNS).where(api_tokens.c.id == token_id))
        ).first()
        return None if row is None else _to_token(row)

    async def get_many(self, token_ids: Sequence[int]) -> dict[int, ApiToken]:
        if not token_ids:
            return {}
        stmt = select(*_COLUMNS).where(api_tokens.c.id.in_(list(token_ids)))
        return {row.id: _to_token(row) for row in await self._conn.execute(stmt)}

    async def list_for(self, user_id: int, page: PageRequest) -> Page[ApiToken]:
        stmt = select(*_COLUMNS).where(api_tokens.c.user_id == user_id)
        return await keyset_page(self._conn, stmt, api_tokens.c.id, page, _to_token)

    async def touch(self, token_id: int, now: datetime) -> None:
        await self._conn.execute(
            update(api_tokens).where(api_tokens.c.id == token_id).values(last_used_at=now)
        )

    async def revoke(self, token_id: int, now: datetime) -> ApiToken | None:
        stmt = (
            update(api_tokens)
            .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
            .values(revoked_at=now)
            .returning(*_COLUMNS)
        )
        row = (await self._conn.execute(stmt)).first()
        return None if row is None else _to_token(row)
