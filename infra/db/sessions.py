"""The session repository: hashed session secrets and their lifetimes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.identity.accounts import User
from domain.identity.sessions import Session
from infra.db.tables import sessions, users
from infra.db.users import JOINED_USER, joined_user

_USER_AGENT_MAX = 512


def _to_session(row: Any) -> Session:
    return Session(
        id=row.id,
        user_id=row.user_id,
        created_at=row.created_at,
        last_seen_at=row.last_seen_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


class SqlSessionRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, user_id: int, secret_hash: bytes, expires_at: datetime,
                  client_ip: str | None, user_agent: str | None) -> Session:  # fmt: skip
        stmt = (
            insert(sessions)
            .values(
                user_id=user_id,
                secret_hash=secret_hash,
                expires_at=expires_at,
                client_ip=client_ip,
                user_agent=None if user_agent is None else user_agent[:_USER_AGENT_MAX],
            )
            .returning(sessions)
        )
        return _to_session((await self._conn.execute(stmt)).one())

    async def find(self, secret_hash: bytes) -> tuple[Session, User] | None:
        # One round trip: the session and its account's current role and status together.
        stmt = (
            select(sessions, *JOINED_USER)
            .join(users, users.c.id == sessions.c.user_id)
            .where(sessions.c.secret_hash == secret_hash)
        )
        row = (await self._conn.execute(stmt)).first()
        if row is None:
            return None
        return _to_session(row), joined_user(row)

    async def get(self, session_id: int) -> Session | None:
        row = (
            await self._conn.execute(select(sessions).where(sessions.c.id == session_id))
        ).first()
        return None if row is None else _to_session(row)

    async def touch(self, session_id: int, now: datetime) -> None:
        await self._conn.execute(
            update(sessions).where(sessions.c.id == session_id).values(last_seen_at=now)
        )

    async def revoke(self, session_id: int, now: datetime) -> None:
        await self._conn.execute(
            update(sessions)
            .where(sessions.c.id == session_id, sessions.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )

    async def revoke_all(self, user_id: int, now: datetime, *, keep: int | None = None) -> int:
        stmt = update(sessions).where(
            sessions.c.user_id == user_id, sessions.c.revoked_at.is_(None)
        )
        if keep is not None:
            stmt = stmt.where(sessions.c.id != keep)
        result = await self._conn.execute(stmt.values(revoked_at=now))
        return int(result.rowcount)
