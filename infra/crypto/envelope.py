"""AES-256-GCM for one secret under a fresh random data key (the `SecretCipher` port)."""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from domain.secrets import SealedData, decrypt_failed

DATA_KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # 96 bits, the size GCM is specified for


class AesGcmCipher:
    """Each secret gets its own random 256-bit key and 96-bit nonce, so a (key, nonce) pair is
    never used twice; the associated data binds the ciphertext to the secret it belongs to."""

    def seal(self, plaintext: bytes, aad: bytes) -> SealedData:
        data_key = AESGCM.generate_key(bit_length=8 * DATA_KEY_BYTES)
        nonce = os.urandom(NONCE_BYTES)
        return SealedData(data_key, nonce, AESGCM(data_key).encrypt(nonce, plaintext, aad))

    def open(self, data_key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        if len(data_key) != DATA_KEY_BYTES or len(nonce) != NONCE_BYTES:
            raise decrypt_failed("secret")
        try:
            return AESGCM(data_key).decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            raise decrypt_failed("secret") from None

    def __repr__(self) -> str:
        return "AesGcmCipher()"
