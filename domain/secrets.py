"""Secrets at rest: envelope encryption, as the domain sees it.

Each secret (a node's admin key, the SSH CA key) is encrypted with a data key of its own; the
data key is stored only wrapped (encrypted) by a key-encryption key that lives in a KMS, under
a named version. Rotating the KMS key re-wraps data keys and never touches the secrets'
ciphertext, so readers are never blocked and a secret opens under either version meanwhile.

Both the secret's ciphertext and its wrapped data key are bound to the secret's purpose and
random uuid (the associated data), so bytes copied from one row onto another do not open.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from uuid import UUID

from domain.errors import DomainError, Problem


class SecretPurpose(StrEnum):
    NODE_ADMIN_KEY = "node_admin_key"
    SSH_CA_KEY = "ssh_ca_key"


class SecretErrorCode(StrEnum):
    SECRET_NOT_FOUND = "SECRET_NOT_FOUND"  # noqa: S105 - an error code, not a secret
    DECRYPT_FAILED = "DECRYPT_FAILED"
    KEY_VERSION_UNKNOWN = "KEY_VERSION_UNKNOWN"
    KEY_VERSION_CURRENT = "KEY_VERSION_CURRENT"
    KEY_VERSION_IN_USE = "KEY_VERSION_IN_USE"


class SecretError(DomainError):
    """A secret could not be sealed, opened, or its key version changed. Messages name versions
    and ids only, never key material or plaintext."""

    def __init__(self, code: SecretErrorCode, message: str, field: str | None = None) -> None:
        self.code = code
        super().__init__(Problem(code, message, field))


class KeyVersionInUse(SecretError):
    def __init__(self, version: str, count: int) -> None:
        self.version = version
        self.count = count
        super().__init__(
            SecretErrorCode.KEY_VERSION_IN_USE,
            f"Key version {version} still wraps {count} secret(s); run `gpucloud keys rotate` "
            "first.",
            "version",
        )


def decrypt_failed(what: str) -> SecretError:
    return SecretError(
        SecretErrorCode.DECRYPT_FAILED,
        f"The {what} did not decrypt: wrong key, or the stored bytes were altered.",
    )


def unknown_version(version: str) -> SecretError:
    return SecretError(
        SecretErrorCode.KEY_VERSION_UNKNOWN, f"No key version {version!r} in the KMS.", "version"
    )


@dataclass(frozen=True)
class WrappedKey:
    """A data key encrypted by the KMS under `version`; safe to store, useless without the KMS."""

    version: str
    ciphertext: bytes = field(repr=False)


@dataclass(frozen=True)
class SealedData:
    """What the cipher made of one plaintext. `data_key` is plaintext key material: wrap it at
    once and drop it; it is never stored or shown."""

    data_key: bytes = field(repr=False)
    nonce: bytes
    ciphertext: bytes = field(repr=False)


@dataclass(frozen=True)
class SecretRef:
    """How other rows point at a secret (a node's `admin_key_secret_id`, say)."""

    id: int
    uuid: UUID
    purpose: SecretPurpose
    key_version: str


@dataclass(frozen=True)
class NewSecret:
    uuid: UUID
    purpose: SecretPurpose
    wrapped: WrappedKey
    nonce: bytes
    ciphertext: bytes = field(repr=False)


@dataclass(frozen=True)
class StoredSecret:
    id: int
    uuid: UUID
    purpose: SecretPurpose
    wrapped: WrappedKey
    nonce: bytes
    ciphertext: bytes = field(repr=False)
    created_at: datetime
    rewrapped_at: datetime | None

    @property
    def ref(self) -> SecretRef:
        return SecretRef(self.id, self.uuid, self.purpose, self.wrapped.version)


def _bind(label: bytes, purpose: SecretPurpose, secret_uuid: UUID) -> bytes:
    return b"gpucloud/" + label + b"\x00" + purpose.value.encode() + b"\x00" + secret_uuid.bytes


def data_aad(purpose: SecretPurpose, secret_uuid: UUID) -> bytes:
    """Associated data of a secret's ciphertext: its purpose and uuid."""
    return _bind(b"secret", purpose, secret_uuid)


def wrap_context(purpose: SecretPurpose, secret_uuid: UUID) -> bytes:
    """Associated data of a secret's wrapped data key: its purpose and uuid."""
    return _bind(b"data-key", purpose, secret_uuid)


@dataclass(frozen=True)
class Rotation:
    """What `rotate` did: data keys re-wrapped, those another rotation moved first, and the ids
    of secrets whose data key did not unwrap (left as they were)."""

    current: str
    rewrapped: int
    skipped: int
    failed: tuple[int, ...] = ()


@dataclass(frozen=True)
class KeyStatus:
    current: str
    versions: tuple[str, ...]
    secrets_by_version: dict[str, int]
