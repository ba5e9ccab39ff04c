"""The secret repository: sealed secrets and the key-version lock."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.secrets import NewSecret, SecretPurpose, StoredSecret, WrappedKey
from infra.db.secret_tables import secrets

# pg_advisory_xact_lock key of the key-version lock: "gpc-kms" as a number.
KEY_VERSION_LOCK = 0x6770632D6B6D73


def _to_secret(row: Any) -> StoredSecret:
    return StoredSecret(
        id=row.id,
        uuid=row.uuid,
        purpose=SecretPurpose(row.purpose),
        wrapped=WrappedKey(row.key_version, bytes(row.wrapped_key)),
        nonce=bytes(row.nonce),
        ciphertext=bytes(row.ciphertext),
        created_at=row.created_at,
        rewrapped_at=row.rewrapped_at,
    )


class SqlSecretRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, secret: NewSecret) -> StoredSecret:
        stmt = (
            insert(secrets)
            .values(
                uuid=secret.uuid,
                purpose=secret.purpose.value,
                key_version=secret.wrapped.version,
                wrapped_key=secret.wrapped.ciphertext,
                nonce=secret.nonce,
                ciphertext=secret.ciphertext,
            )
            .returning(secrets)
        )
        return _to_secret((await self._conn.execute(stmt)).one())

    async def get(self, secret_id: int) -> StoredSecret | None:
        row = (await self._conn.execute(select(secrets).where(secrets.c.id == secret_id))).first()
        return None if row is None else _to_secret(row)

    async def needing_rewrap(
        self, current: str, after_id: int, limit: int
    ) -> Sequence[StoredSecret]:
        stmt = (
            select(secrets)
            .where(secrets.c.key_version != current, secrets.c.id > after_id)
            .order_by(secrets.c.id)
            .limit(limit)
        )
        return [_to_secret(row) for row in await self._conn.execute(stmt)]

    async def rewrap(self, secret_id: int, old: WrappedKey, new: WrappedKey) -> bool:
        stmt = (
            update(secrets)
            .where(
                secrets.c.id == secret_id,
                secrets.c.key_version == old.version,
                secrets.c.wrapped_key == old.ciphertext,
            )
            .values(key_version=new.version, wrapped_key=new.ciphertext, rewrapped_at=func.now())
        )
        return (await self._conn.execute(stmt)).rowcount == 1

    async def count_by_version(self) -> dict[str, int]:
        stmt = select(secrets.c.key_version, func.count()).group_by(secrets.c.key_version)
        return {version: int(n) for version, n in await self._conn.execute(stmt)}

    async def hold_versions(self, *, exclusive: bool = False) -> None:
        fn = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        await self._conn.execute(text(f"SELECT {fn}(:key)"), {"key": KEY_VERSION_LOCK})
