"""Secrets at rest on real PostgreSQL: sealing, key rotation under load, and retiring the old
key version only once nothing is wrapped under it."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.ports import KeyService, UnitOfWork
from domain.secret_services import key_status, open_secret, retire_version, rotate, seal
from domain.secrets import (
    KeyVersionInUse,
    SecretError,
    SecretErrorCode,
    SecretPurpose,
    SecretRef,
    WrappedKey,
)
from infra.crypto.envelope import AesGcmCipher
from infra.crypto.local_kms import LocalKms

CIPHER = AesGcmCipher()
Uow = Callable[[], UnitOfWork]


def plaintext(i: int) -> bytes:
    return f"-----BEGIN OPENSSH PRIVATE KEY-----\nsecret number {i:04d}\n".encode()


@pytest.fixture
def kms(tmp_path: Path) -> LocalKms:
    return LocalKms.create(tmp_path / "keys.json")


async def seal_many(uow: Uow, kms: KeyService, count: int) -> list[SecretRef]:
    refs = []
    async with uow() as tx:
        for i in range(count):
            purpose = SecretPurpose.SSH_CA_KEY if i % 3 == 0 else SecretPurpose.NODE_ADMIN_KEY
            refs.append(await seal(tx, kms, CIPHER, purpose, plaintext(i)))
        await tx.commit()
    return refs


async def open_all(uow: Uow, kms: KeyService, refs: Sequence[SecretRef]) -> list[bytes]:
    async with uow() as tx:
        return [await open_secret(tx, kms, CIPHER, ref.id, purpose=ref.purpose) for ref in refs]


async def rows(engine: AsyncEngine) -> dict[int, Any]:
    async with engine.connect() as conn:
        found = await conn.execute(text("SELECT * FROM secrets ORDER BY id"))
        return {row.id: row for row in found}


async def test_rotation_rewraps_every_secret_then_the_old_version_retires(
    uow: Uow, engine: AsyncEngine, kms: LocalKms
) -> None:
    refs = await seal_many(uow, kms, 7)
    assert {ref.key_version for ref in refs} == {"v1"}
    before = await rows(engine)
    assert await kms.add_version() == "v2"

    with pytest.raises(KeyVersionInUse) as in_use:
        await retire_version(uow(), kms, "v1")
    assert in_use.value.code is SecretErrorCode.KEY_VERSION_IN_USE and in_use.value.count == 7
    assert list(await kms.versions()) == ["v1", "v2"]  # nothing removed
    # Before rotation every secret opens with v1.
    assert await open_all(uow, kms, refs) == [plaintext(i) for i in range(7)]

    done = await rotate(uow, kms, batch=3)
    assert (done.current, done.rewrapped, done.skipped, done.failed) == ("v2", 7, 0, ())

    after = await rows(engine)
    for secret_id, row in after.items():
        old = before[secret_id]
        assert row.key_version == "v2" and row.rewrapped_at is not None
        assert row.wrapped_key != old.wrapped_key
        # Only the wrapping changed: the secret's own ciphertext and nonce are untouched.
        assert (row.ciphertext, row.nonce, row.uuid, row.purpose) == (
            old.ciphertext, old.nonce, old.uuid, old.purpose,
        )  # fmt: skip
    assert await open_all(uow, kms, refs) == [plaintext(i) for i in range(7)]

    await retire_version(uow(), kms, "v1")
    assert list(await kms.versions()) == ["v2"]
    assert "v1" not in json.loads(kms.path.read_text())["keys"]
    # Every secret still decrypts with the old version gone for good.
    assert await open_all(uow, kms, refs) == [plaintext(i) for i in range(7)]

    again = await rotate(uow, kms)
    assert (again.rewrapped, again.skipped) == (0, 0)
    status = await key_status(uow(), kms)
    assert (status.current, status.versions, status.secrets_by_version) == (
        "v2",
        ("v2",),
        {"v2": 7},
    )
    async with engine.connect() as conn:
        actions = (
            await conn.execute(text("SELECT action FROM audit_events ORDER BY id"))
        ).scalars()
        assert list(actions) == ["keys.rotated", "keys.retired", "keys.rotated"]


async def test_the_current_and_unknown_versions_cannot_be_retired(uow: Uow, kms: LocalKms) -> None:
    with pytest.raises(SecretError) as current:
        await retire_version(uow(), kms, "v1")
    assert current.value.code is SecretErrorCode.KEY_VERSION_CURRENT
    with pytest.raises(SecretError) as unknown:
        await retire_version(uow(), kms, "v7")
    assert unknown.value.code is SecretErrorCode.KEY_VERSION_UNKNOWN


class PausingKms:
    """Delegates to a KMS, pausing the `pause_at`-th wrap until released."""

    def __init__(self, inner: LocalKms, pause_at: int) -> None:
        self.inner = inner
        self.pause_at = pause_at
        self.wraps = 0
        self.paused = asyncio.Event()
        self.release = asyncio.Event()

    async def current_version(self) -> str:
        return await self.inner.current_version()

    async def versions(self) -> Sequence[str]:
        return await self.inner.versions()

    async def wrap(self, data_key: bytes, *, context: bytes) -> WrappedKey:
        self.wraps += 1
        if self.wraps == self.pause_at:
            self.paused.set()
            await self.release.wait()
        return await self.inner.wrap(data_key, context=context)

    async def unwrap(self, wrapped: WrappedKey, *, context: bytes) -> bytes:
        return await self.inner.unwrap(wrapped, context=context)


async def test_reads_during_a_rotation_work_under_either_version(
    uow: Uow, engine: AsyncEngine, kms: LocalKms
) -> None:
    refs = await seal_many(uow, kms, 4)
    await kms.add_version()
    # Batches of two: the first commits, then the rotation stops mid-way through the second,
    # having updated (not committed) the third row and holding its row lock.
    pausing = PausingKms(kms, pause_at=4)
    rotation = asyncio.create_task(rotate(uow, pausing, batch=2))
    await asyncio.wait_for(pausing.paused.wait(), 10)

    mid = await rows(engine)
    assert [row.key_version for row in mid.values()] == ["v2", "v2", "v1", "v1"]
    # Readers are not blocked by the rotation's locks and open secrets under both versions.
    assert await asyncio.wait_for(open_all(uow, kms, refs), 10) == [plaintext(i) for i in range(4)]
    # New secrets are sealed meanwhile, under the new version.
    (late,) = await asyncio.wait_for(seal_many(uow, kms, 1), 10)
    assert late.key_version == "v2"

    pausing.release.set()
    done = await asyncio.wait_for(rotation, 10)
    assert (done.rewrapped, done.skipped) == (4, 0)
    assert [row.key_version for row in (await rows(engine)).values()] == ["v2"] * 5
    assert await open_all(uow, kms, [*refs, late]) == [*(plaintext(i) for i in range(4)),
                                                       plaintext(0)]  # fmt: skip


async def test_two_rotations_at_once_rewrap_each_key_once(
    uow: Uow, engine: AsyncEngine, kms: LocalKms
) -> None:
    refs = await seal_many(uow, kms, 9)
    await kms.add_version()
    first, second = await asyncio.gather(rotate(uow, kms, batch=2), rotate(uow, kms, batch=2))
    # Each key was re-wrapped by exactly one of them; the other skipped it or never saw it.
    assert first.rewrapped + second.rewrapped == 9
    assert {row.key_version for row in (await rows(engine)).values()} == {"v2"}
    assert await open_all(uow, kms, refs) == [plaintext(i) for i in range(9)]


async def test_a_read_that_raced_rotation_and_retirement_reads_again(
    uow: Uow, kms: LocalKms
) -> None:
    (ref,) = await seal_many(uow, kms, 1)
    await kms.add_version()

    class RacingKms(PausingKms):
        """The reader's first unwrap happens just after a rotation and a retirement."""

        async def unwrap(self, wrapped: WrappedKey, *, context: bytes) -> bytes:
            if wrapped.version == "v1":
                await rotate(uow, kms)
                await retire_version(uow(), kms, "v1")
            return await self.inner.unwrap(wrapped, context=context)

    async with uow() as tx:
        opened = await open_secret(tx, RacingKms(kms, 0), CIPHER, ref.id)
    assert opened == plaintext(0)
    assert list(await kms.versions()) == ["v2"]


async def _lock_waiters(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        found = await conn.execute(
            text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        )
        return int(found.scalar_one())


async def test_retirement_counts_a_secret_wrapped_by_a_writer_with_a_stale_view(
    uow: Uow, engine: AsyncEngine, kms: LocalKms, tmp_path: Path
) -> None:
    """A process that has not seen the new version yet still wraps with v1. Retiring v1 while
    it writes must wait for its commit and then refuse, not strand its secret."""
    stale_copy = tmp_path / "stale.json"
    shutil.copy2(kms.path, stale_copy)  # v1 only, v1 current: the same v1 key material
    stale = LocalKms(stale_copy)
    await kms.add_version()
    await rotate(uow, kms)

    async with uow() as writer:
        ref = await seal(writer, stale, CIPHER, SecretPurpose.NODE_ADMIN_KEY, plaintext(1))
        assert ref.key_version == "v1"
        retiring = asyncio.create_task(retire_version(uow(), kms, "v1"))
        deadline = time.monotonic() + 10
        while await _lock_waiters(engine) == 0:
            assert not retiring.done(), retiring
            assert time.monotonic() < deadline, "retire never waited for the writer"
            await asyncio.sleep(0.01)
        await writer.commit()
    with pytest.raises(KeyVersionInUse) as caught:
        await asyncio.wait_for(retiring, 10)
    assert caught.value.count == 1
    assert await open_all(uow, kms, [ref]) == [plaintext(1)]
    # Rotated, it may go.
    assert (await rotate(uow, kms)).rewrapped == 1
    await retire_version(uow(), kms, "v1")
    assert await open_all(uow, kms, [ref]) == [plaintext(1)]


async def test_no_plaintext_or_key_material_is_stored(
    uow: Uow, engine: AsyncEngine, kms: LocalKms
) -> None:
    secret = b"ssh-ed25519-private AAAAC3NzaC1lZDI1NTE5AAAAIHVuaXF1ZS1zZWNyZXQtbWFya2Vy"
    async with uow() as tx:
        ref = await seal(tx, kms, CIPHER, SecretPurpose.SSH_CA_KEY, secret)
        await tx.commit()
    async with uow() as tx:
        stored = await tx.secrets.get(ref.id)
    assert stored is not None
    data_key = await kms.unwrap(stored.wrapped, context=_context(stored))
    kek = [base64.b64decode(k) for k in json.loads(kms.path.read_text())["keys"].values()]

    async with engine.connect() as conn:
        row = (
            await conn.execute(text("SELECT * FROM secrets WHERE id = :id"), {"id": ref.id})
        ).one()
        as_text = (await conn.execute(text("SELECT s::text FROM secrets s"))).scalar_one()
    raw = b"".join(v if isinstance(v, bytes) else str(v).encode() for v in row)
    for needle in (secret, secret[8:40], data_key, *kek):
        assert needle not in raw
        assert needle.hex() not in as_text and needle.decode(errors="replace") not in as_text
    assert secret.decode() not in as_text


def _context(stored: Any) -> bytes:
    from domain.secrets import wrap_context

    return wrap_context(stored.purpose, stored.uuid)


async def test_rows_altered_in_the_database_do_not_open(
    uow: Uow, engine: AsyncEngine, kms: LocalKms
) -> None:
    a, b, c = await seal_many(uow, kms, 3)
    async with engine.begin() as conn:
        # A flipped ciphertext byte; a wrapped key copied from another row.
        await conn.execute(text("UPDATE secrets SET ciphertext = set_byte(ciphertext, 0, "
                                "get_byte(ciphertext, 0) # 1) WHERE id = :id"), {"id": a.id})  # fmt: skip
        await conn.execute(text("UPDATE secrets SET wrapped_key = (SELECT wrapped_key FROM "
                                "secrets WHERE id = :c) WHERE id = :b"), {"b": b.id, "c": c.id})  # fmt: skip
    for ref in (a, b):
        with pytest.raises(SecretError) as caught:
            await open_all(uow, kms, [ref])
        assert caught.value.code is SecretErrorCode.DECRYPT_FAILED
        assert "secret number" not in str(caught.value)
    with pytest.raises(SecretError) as wrong_purpose:
        async with uow() as tx:
            await open_secret(tx, kms, CIPHER, c.id, purpose=SecretPurpose.SSH_CA_KEY)
    assert wrong_purpose.value.code is SecretErrorCode.SECRET_NOT_FOUND
    with pytest.raises(SecretError) as missing:
        async with uow() as tx:
            await open_secret(tx, kms, CIPHER, 10**9)
    assert missing.value.code is SecretErrorCode.SECRET_NOT_FOUND

    # Rotation moves what it can and names the row whose data key does not unwrap.
    await kms.add_version()
    done = await rotate(uow, kms)
    assert (done.rewrapped, done.failed) == (2, (b.id,))
    with pytest.raises(KeyVersionInUse):
        await retire_version(uow(), kms, "v1")
    assert await open_all(uow, kms, [c]) == [plaintext(2)]
