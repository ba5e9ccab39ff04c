"""Secrets at rest: seal, open, rotate the key-encryption key, retire an old key version."""

from __future__ import annotations

from collections.abc import Callable
from uuid import uuid4

from domain.audit.records import CLI, RequestMeta, audit
from domain.identity.principal import SYSTEM, Principal
from domain.ports import KeyAdmin, KeyService, SecretCipher, UnitOfWork
from domain.secrets import (
    KeyStatus,
    KeyVersionInUse,
    NewSecret,
    Rotation,
    SecretError,
    SecretErrorCode,
    SecretPurpose,
    SecretRef,
    StoredSecret,
    data_aad,
    unknown_version,
    wrap_context,
)


async def seal(
    uow: UnitOfWork, kms: KeyService, cipher: SecretCipher, purpose: SecretPurpose,
    plaintext: bytes,
) -> SecretRef:  # fmt: skip
    """Encrypt `plaintext` under a fresh data key, wrap that key with the KMS's current version
    and store both, in the caller's transaction (inside `async with uow`; the caller commits)."""
    secret_uuid = uuid4()
    sealed = cipher.seal(plaintext, data_aad(purpose, secret_uuid))
    # Taken before wrapping, so a retirement waits for this row (see `hold_versions`).
    await uow.secrets.hold_versions()
    wrapped = await kms.wrap(sealed.data_key, context=wrap_context(purpose, secret_uuid))
    stored = await uow.secrets.add(
        NewSecret(secret_uuid, purpose, wrapped, sealed.nonce, sealed.ciphertext)
    )
    return stored.ref


async def open_secret(
    uow: UnitOfWork, kms: KeyService, cipher: SecretCipher, secret_id: int,
    *, purpose: SecretPurpose | None = None,
) -> bytes:  # fmt: skip
    """The plaintext of a secret, read in the caller's transaction. With `purpose`, a secret of
    another purpose is not found, so an id mixed up between tables cannot leak the wrong key."""
    stored = await _get(uow, secret_id, purpose)
    try:
        data_key = await _unwrap(kms, stored)
    except SecretError as exc:
        if exc.code is not SecretErrorCode.KEY_VERSION_UNKNOWN:
            raise
        # A rotation re-wrapped it and the old version was retired after we read the row:
        # read it again (a new statement sees the rotation's commit) and unwrap the new one.
        again = await _get(uow, secret_id, purpose)
        if again.wrapped.version == stored.wrapped.version:
            raise
        stored = again
        data_key = await _unwrap(kms, stored)
    return cipher.open(
        data_key, stored.nonce, stored.ciphertext, data_aad(stored.purpose, stored.uuid)
    )


async def _get(uow: UnitOfWork, secret_id: int, purpose: SecretPurpose | None) -> StoredSecret:
    stored = await uow.secrets.get(secret_id)
    if stored is None or (purpose is not None and stored.purpose is not purpose):
        raise SecretError(SecretErrorCode.SECRET_NOT_FOUND, f"No secret with id {secret_id}.")
    return stored


async def _unwrap(kms: KeyService, stored: StoredSecret) -> bytes:
    return await kms.unwrap(stored.wrapped, context=wrap_context(stored.purpose, stored.uuid))


async def rotate(
    uow: Callable[[], UnitOfWork], kms: KeyService, *, batch: int = 100,
    actor: Principal = SYSTEM, meta: RequestMeta = CLI,
) -> Rotation:  # fmt: skip
    """Re-wrap every data key not under the KMS's current version, `batch` per short
    transaction. Only the wrapped key and its version change, never the ciphertext, and each
    row is updated only if it still holds what was read, so readers are never blocked, a second
    rotation running at once does no harm, and a secret opens under either version meanwhile.

    A data key that does not unwrap (its row was altered) is reported in `failed` and left
    as it is; the others are still rotated. If the current version changes while this runs,
    another pass moves everything to the newer one.
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    rewrapped = skipped = 0
    failed: list[int] = []
    while True:
        current = await kms.current_version()
        after = 0
        while True:
            async with uow() as tx:
                await tx.secrets.hold_versions()
                rows = await tx.secrets.needing_rewrap(current, after, batch)
                if not rows:
                    break
                for row in rows:
                    context = wrap_context(row.purpose, row.uuid)
                    try:
                        data_key = await kms.unwrap(row.wrapped, context=context)
                    except SecretError:
                        failed.append(row.id)
                        continue
                    new = await kms.wrap(data_key, context=context)
                    if await tx.secrets.rewrap(row.id, row.wrapped, new):
                        rewrapped += 1
                    else:
                        skipped += 1
                await tx.commit()
            after = rows[-1].id
        if await kms.current_version() == current:
            break
    async with uow() as tx:
        await tx.audit.append(audit(actor, meta, "keys.rotated", ("key_version", current),
                                    after={"rewrapped": rewrapped, "skipped": skipped,
                                           "failed": failed}))  # fmt: skip
        await tx.commit()
    return Rotation(current, rewrapped, skipped, tuple(failed))


async def retire_version(
    uow: UnitOfWork, kms: KeyAdmin, version: str,
    actor: Principal = SYSTEM, meta: RequestMeta = CLI,
) -> None:  # fmt: skip
    """Remove a key version from the KMS for good. Refused (KEY_VERSION_IN_USE) while any
    secret is still wrapped under it, and for the current version (KEY_VERSION_CURRENT).

    The count is taken under the exclusive key-version lock, so a writer still wrapping with
    the old version (a process that has not seen the new one yet) is either counted or waits
    and then sees the version gone.
    """
    if version not in await kms.versions():
        raise unknown_version(version)
    if version == await kms.current_version():
        raise SecretError(SecretErrorCode.KEY_VERSION_CURRENT,
                          f"Key version {version} is the current one; add a new version and "
                          "rotate first.", "version")  # fmt: skip
    async with uow:
        await uow.secrets.hold_versions(exclusive=True)
        count = (await uow.secrets.count_by_version()).get(version, 0)
        if count:
            raise KeyVersionInUse(version, count)
        await uow.audit.append(audit(actor, meta, "keys.retired", ("key_version", version)))
        await kms.remove_version(version)
        await uow.commit()


async def key_status(uow: UnitOfWork, kms: KeyService) -> KeyStatus:
    async with uow:
        counts = await uow.secrets.count_by_version()
    return KeyStatus(
        current=await kms.current_version(),
        versions=tuple(await kms.versions()),
        secrets_by_version=counts,
    )
