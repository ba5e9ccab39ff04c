"""The SSH CA key repository."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import case, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.errors import Conflict, Problem
from domain.fleet.ca import CaErrorCode, CaKeyStatus, SshCaKey
from infra.db.ssh_ca_tables import ssh_ca_keys

# pg_advisory_xact_lock key of the CA lock: "gpc-sshca" as a number.
CA_LOCK = 0x6770632D737368


def _to_key(row: Any) -> SshCaKey:
    return SshCaKey(id=row.id, secret_id=row.secret_id, public_key=row.public_key,
                    status=CaKeyStatus(row.status), created_at=row.created_at,
                    retired_at=row.retired_at)  # fmt: skip


class SqlSshCaRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def lock(self) -> None:
        await self._conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CA_LOCK})

    async def current(self) -> SshCaKey | None:
        stmt = select(ssh_ca_keys).where(ssh_ca_keys.c.status == CaKeyStatus.CURRENT.value)
        row = (await self._conn.execute(stmt)).first()
        return None if row is None else _to_key(row)

    async def trusted(self) -> Sequence[SshCaKey]:
        current_first = case((ssh_ca_keys.c.status == CaKeyStatus.CURRENT.value, 0), else_=1)
        stmt = (
            select(ssh_ca_keys)
            .where(ssh_ca_keys.c.status != CaKeyStatus.RETIRED.value)
            .order_by(current_first, ssh_ca_keys.c.id.desc())
        )
        return [_to_key(row) for row in await self._conn.execute(stmt)]

    async def get(self, key_id: int) -> SshCaKey | None:
        row = (
            await self._conn.execute(select(ssh_ca_keys).where(ssh_ca_keys.c.id == key_id))
        ).first()
        return None if row is None else _to_key(row)

    async def add(self, secret_id: int, public_key: str, status: CaKeyStatus) -> SshCaKey:
        stmt = (
            insert(ssh_ca_keys)
            .values(secret_id=secret_id, public_key=public_key, status=status.value)
            .returning(ssh_ca_keys)
        )
        try:
            return _to_key((await self._conn.execute(stmt)).one())
        except IntegrityError as exc:
            if "uq_ssh_ca_keys_one_current" in str(exc.orig):
                raise Conflict(Problem(CaErrorCode.CA_EXISTS,
                                       "Another SSH CA key is current already.")) from exc  # fmt: skip
            raise

    async def set_status(self, key_id: int, status: CaKeyStatus) -> SshCaKey:
        retired = status is CaKeyStatus.RETIRED
        stmt = (
            update(ssh_ca_keys)
            .where(ssh_ca_keys.c.id == key_id)
            .values(status=status.value, retired_at=func.now() if retired else None)
            .returning(ssh_ca_keys)
        )
        return _to_key((await self._conn.execute(stmt)).one())
