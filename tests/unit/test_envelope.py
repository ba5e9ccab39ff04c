"""Envelope encryption: AES-256-GCM per secret under its own data key, wrapped by the KMS."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.secrets import (
    SecretError,
    SecretErrorCode,
    SecretPurpose,
    WrappedKey,
    data_aad,
    wrap_context,
)
from infra.crypto.envelope import AesGcmCipher
from infra.crypto.local_kms import LocalKms

CIPHER = AesGcmCipher()
PURPOSE = SecretPurpose.NODE_ADMIN_KEY
SECRET = b"-----BEGIN OPENSSH PRIVATE KEY-----\nnot really\n-----END OPENSSH PRIVATE KEY-----\n"


def _flip(data: bytes, at: int = 0) -> bytes:
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]


def _decrypt_fails(call: object) -> None:
    with pytest.raises(SecretError) as caught:
        if asyncio.iscoroutine(call):
            asyncio.run(call)
        else:
            assert callable(call)
            call()
    assert caught.value.code is SecretErrorCode.DECRYPT_FAILED


@pytest.fixture
def kms(tmp_path: Path) -> LocalKms:
    return LocalKms.create(tmp_path / "keys.json")


def test_seal_open_round_trip_through_the_kms(kms: LocalKms) -> None:
    secret_uuid = uuid.uuid4()
    aad, context = data_aad(PURPOSE, secret_uuid), wrap_context(PURPOSE, secret_uuid)
    sealed = CIPHER.seal(SECRET, aad)
    wrapped = asyncio.run(kms.wrap(sealed.data_key, context=context))
    assert wrapped.version == "v1"
    assert SECRET not in sealed.ciphertext and sealed.data_key not in wrapped.ciphertext

    data_key = asyncio.run(kms.unwrap(wrapped, context=context))
    assert data_key == sealed.data_key
    assert CIPHER.open(data_key, sealed.nonce, sealed.ciphertext, aad) == SECRET


def test_tampering_with_any_part_fails_to_decrypt(kms: LocalKms) -> None:
    secret_uuid = uuid.uuid4()
    aad, context = data_aad(PURPOSE, secret_uuid), wrap_context(PURPOSE, secret_uuid)
    sealed = CIPHER.seal(SECRET, aad)
    wrapped = asyncio.run(kms.wrap(sealed.data_key, context=context))
    key, nonce, ct = sealed.data_key, sealed.nonce, sealed.ciphertext

    _decrypt_fails(lambda: CIPHER.open(key, nonce, _flip(ct), aad))
    _decrypt_fails(lambda: CIPHER.open(key, nonce, _flip(ct, len(ct) - 1), aad))  # the tag
    _decrypt_fails(lambda: CIPHER.open(key, _flip(nonce), ct, aad))
    _decrypt_fails(lambda: CIPHER.open(key, nonce[:8], ct, aad))
    _decrypt_fails(lambda: CIPHER.open(_flip(key), nonce, ct, aad))
    # The same bytes claimed by another secret, or by another purpose, do not open.
    _decrypt_fails(lambda: CIPHER.open(key, nonce, ct, data_aad(PURPOSE, uuid.uuid4())))
    _decrypt_fails(
        lambda: CIPHER.open(key, nonce, ct, data_aad(SecretPurpose.SSH_CA_KEY, secret_uuid))
    )

    for at in (0, 12, len(wrapped.ciphertext) - 1):  # nonce, body, tag
        bad = WrappedKey(wrapped.version, _flip(wrapped.ciphertext, at))
        _decrypt_fails(kms.unwrap(bad, context=context))
    _decrypt_fails(kms.unwrap(WrappedKey("v1", wrapped.ciphertext[:20]), context=context))
    # A wrapped key copied onto another row (another uuid) does not unwrap there.
    _decrypt_fails(kms.unwrap(wrapped, context=wrap_context(PURPOSE, uuid.uuid4())))
    # The untouched parts still open.
    assert asyncio.run(kms.unwrap(wrapped, context=context)) == key
    assert CIPHER.open(key, nonce, ct, aad) == SECRET


def test_every_secret_gets_its_own_data_key_and_nonce() -> None:
    sealed = [CIPHER.seal(SECRET, b"aad") for _ in range(200)]
    assert len({s.data_key for s in sealed}) == 200
    assert len({s.nonce for s in sealed}) == 200
    assert len({s.ciphertext for s in sealed}) == 200
    assert all(len(s.data_key) == 32 and len(s.nonce) == 12 for s in sealed)


def test_reprs_show_no_key_material() -> None:
    # Each repr is checked for its own secrets: the nonce is shown (it is not secret) and, being
    # random, may contain any byte, so a marker byte is only meaningful in a repr without one.
    sealed = CIPHER.seal(SECRET, b"aad")
    shown = repr(sealed)
    assert repr(sealed.data_key) not in shown and repr(sealed.ciphertext) not in shown
    assert "data_key" not in shown and "ciphertext" not in shown
    assert repr(sealed.nonce) in shown
    wrapped = repr(WrappedKey("v1", b"\x01" * 60))
    assert "\\x01" not in wrapped and "ciphertext" not in wrapped and "v1" in wrapped


@settings(max_examples=200, deadline=None)
@given(plaintext=st.binary(max_size=4096), aad=st.binary(max_size=64))
def test_round_trip_over_random_bytes(plaintext: bytes, aad: bytes) -> None:
    sealed = CIPHER.seal(plaintext, aad)
    assert CIPHER.open(sealed.data_key, sealed.nonce, sealed.ciphertext, aad) == plaintext
    assert len(sealed.ciphertext) == len(plaintext) + 16


@settings(max_examples=50, deadline=None)
@given(data_key=st.binary(min_size=32, max_size=32), context=st.binary(max_size=64))
def test_wrap_round_trip_over_random_keys(tmp_path_factory: pytest.TempPathFactory,
                                          data_key: bytes, context: bytes) -> None:  # fmt: skip
    kms = _shared_kms(tmp_path_factory)
    wrapped = asyncio.run(kms.wrap(data_key, context=context))
    assert asyncio.run(kms.unwrap(wrapped, context=context)) == data_key


_KMS: dict[str, LocalKms] = {}


def _shared_kms(factory: pytest.TempPathFactory) -> LocalKms:
    # Hypothesis runs the body many times per fixture; one key file serves them all.
    if "kms" not in _KMS:
        _KMS["kms"] = LocalKms.create(factory.mktemp("kms") / "keys.json")
    return _KMS["kms"]
