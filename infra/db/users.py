"""The user repository: accounts and their linked OIDC identities."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.errors import Conflict, NotFound, Problem
from domain.identity.accounts import AccountStatus, User
from domain.identity.errors import AccountErrorCode
from domain.identity.scopes import Role
from domain.pagination import Page, PageRequest
from domain.ports import UserFilter
from infra.db.paging import keyset_page
from infra.db.tables import user_identities, users


def to_user(row: Any, prefix: str = "") -> User:
    m = row._mapping
    return User(
        id=m[prefix + "id"],
        email=m[prefix + "email"],
        role=Role(m[prefix + "role"]),
        status=AccountStatus(m[prefix + "status"]),
        created_at=m[prefix + "created_at"],
        password_hash=m[prefix + "password_hash"],
    )


# The user's columns under a prefix, for queries that join a credential to its account.
JOINED_USER = [c.label(f"u_{c.name}") for c in users.c]


def joined_user(row: Any) -> User:
    return to_user(row, "u_")


class SqlUserRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, email: str, password_hash: str | None, role: Role) -> User:
        stmt = (
            insert(users)
            .values(email=email, password_hash=password_hash, role=role.value)
            .returning(users)
        )
        try:
            row = (await self._conn.execute(stmt)).one()
        except IntegrityError as exc:
            if "uq_users_email" in str(exc.orig):
                raise Conflict(
                    Problem(
                        AccountErrorCode.EMAIL_TAKEN, "An account with this email exists.", "email"
                    )
                ) from exc
            raise
        return to_user(row)

    async def get(self, user_id: int, *, for_update: bool = False) -> User | None:
        stmt = select(users).where(users.c.id == user_id)
        if for_update:
            stmt = stmt.with_for_update()
        row = (await self._conn.execute(stmt)).first()
        return None if row is None else to_user(row)

    async def get_many(self, user_ids: Sequence[int]) -> dict[int, User]:
        if not user_ids:
            return {}
        rows = await self._conn.execute(select(users).where(users.c.id.in_(list(user_ids))))
        return {row.id: to_user(row) for row in rows}

    async def get_by_email(self, email: str) -> User | None:
        row = (await self._conn.execute(select(users).where(users.c.email == email))).first()
        return None if row is None else to_user(row)

    async def list(self, user_filter: UserFilter, page: PageRequest) -> Page[User]:
        stmt = select(users)
        if user_filter.email_contains:
            pattern = user_filter.email_contains.lower().replace("\\", "\\\\")
            pattern = pattern.replace("%", "\\%").replace("_", "\\_")
            stmt = stmt.where(users.c.email.like(f"%{pattern}%", escape="\\"))
        if user_filter.role is not None:
            stmt = stmt.where(users.c.role == user_filter.role.value)
        if user_filter.status is not None:
            stmt = stmt.where(users.c.status == user_filter.status.value)
        return await keyset_page(self._conn, stmt, users.c.id, page, to_user)

    async def update(
        self,
        user_id: int,
        *,
        role: Role | None = None,
        status: AccountStatus | None = None,
        password_hash: str | None = None,
    ) -> User:
        values: dict[str, Any] = {"updated_at": func.now()}
        if role is not None:
            values["role"] = role.value
        if status is not None:
            values["status"] = status.value
        if password_hash is not None:
            values["password_hash"] = password_hash
        stmt = update(users).where(users.c.id == user_id).values(**values).returning(users)
        row = (await self._conn.execute(stmt)).first()
        if row is None:
            raise NotFound(Problem(AccountErrorCode.NOT_FOUND, "No such user.", "userId"))
        return to_user(row)

    async def count_admins(self) -> int:
        stmt = select(func.count()).select_from(users).where(users.c.role == Role.ADMIN.value)
        return int((await self._conn.execute(stmt)).scalar_one())

    async def find_by_identity(self, issuer: str, subject: str) -> User | None:
        stmt = (
            select(users)
            .join(user_identities, user_identities.c.user_id == users.c.id)
            .where(user_identities.c.issuer == issuer, user_identities.c.subject == subject)
        )
        row = (await self._conn.execute(stmt)).first()
        return None if row is None else to_user(row)

    async def link_identity(self, user_id: int, issuer: str, subject: str) -> None:
        stmt = (
            pg_insert(user_identities)
            .values(user_id=user_id, issuer=issuer, subject=subject)
            .on_conflict_do_nothing(constraint="uq_user_identities_issuer_subject")
        )
        await self._conn.execute(stmt)
