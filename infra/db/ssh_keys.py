"""The SSH key repository: users' public keys, one copy and one name per user."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.compute.ssh_keys import NewSshKey, SshKey, duplicate_key, name_taken
from domain.errors import Conflict
from domain.pagination import Page, PageRequest
from infra.db.compute_tables import ssh_keys
from infra.db.paging import keyset_page
from infra.db.tables import users


def _to_key(row: Any) -> SshKey:
    return SshKey(
        id=row.id,
        user_id=row.user_id,
        name=row.name,
        public_key=row.public_key,
        fingerprint=row.fingerprint,
        key_type=row.key_type,
        bits=row.bits,
        created_at=row.created_at,
    )


class SqlSshKeyRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def lock_owner(self, user_id: int) -> bool:
        # NO KEY UPDATE: serialises this user's additions without blocking the inserts of other
        # tables that reference the user (they take KEY SHARE, which this lock allows).
        stmt = select(users.c.id).where(users.c.id == user_id).with_for_update(key_share=True)
        return (await self._conn.execute(stmt)).first() is not None

    async def add(self, user_id: int, key: NewSshKey) -> SshKey:
        stmt = (
            insert(ssh_keys)
            .values(
                user_id=user_id,
                name=key.name,
                public_key=key.public_key,
                fingerprint=key.fingerprint,
                key_type=key.key_type,
                bits=key.bits,
            )
            .returning(ssh_keys)
        )
        try:
            row = (await self._conn.execute(stmt)).one()
        except IntegrityError as exc:
            if "uq_ssh_keys_user_id_fingerprint" in str(exc.orig):
                raise Conflict(duplicate_key()) from None
            if "uq_ssh_keys_user_id_lower_name" in str(exc.orig):
                raise Conflict(name_taken()) from None
            raise
        return _to_key(row)

    async def get(self, key_id: int) -> SshKey | None:
        row = (await self._conn.execute(select(ssh_keys).where(ssh_keys.c.id == key_id))).first()
        return None if row is None else _to_key(row)

    async def get_many(self, key_ids: Sequence[int]) -> dict[int, SshKey]:
        if not key_ids:
            return {}
        stmt = select(ssh_keys).where(ssh_keys.c.id.in_(list(key_ids)))
        return {row.id: _to_key(row) for row in await self._conn.execute(stmt)}

    async def list_for(self, user_id: int, page: PageRequest) -> Page[SshKey]:
        stmt = select(ssh_keys).where(ssh_keys.c.user_id == user_id)
        return await keyset_page(self._conn, stmt, ssh_keys.c.id, page, _to_key)

    async def all_for(self, user_id: int) -> Sequence[SshKey]:
        stmt = select(ssh_keys).where(ssh_keys.c.user_id == user_id).order_by(ssh_keys.c.id)
        return [_to_key(row) for row in await self._conn.execute(stmt)]

    async def remove(self, key_id: int) -> SshKey | None:
        stmt = delete(ssh_keys).where(ssh_keys.c.id == key_id).returning(ssh_keys)
        row = (await self._conn.execute(stmt)).first()
        return None if row is None else _to_key(row)
