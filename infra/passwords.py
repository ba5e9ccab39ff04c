"""Argon2id password hashing (argon2-cffi), off the event loop."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


@dataclass(frozen=True)
class Argon2Params:
    """Defaults are argon2-cffi's, RFC 9106's second recommended profile: 3 passes over
    64 MiB with 4 lanes."""

    time_cost: int = 3
    memory_kib: int = 65536
    parallelism: int = 4


class Argon2Hasher:
    def __init__(self, params: Argon2Params = Argon2Params()) -> None:
        self.params = params
        self._hasher = PasswordHasher(
            time_cost=params.time_cost,
            memory_cost=params.memory_kib,
            parallelism=params.parallelism,
            type=Type.ID,
        )
        self._dummy: str | None = None

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        if password_hash is None:
            # Unknown account: verify against a hash of the same cost, so the answer takes as
            # long as a wrong password does.
            if self._dummy is None:
                self._dummy = await self.hash("not a password anyone has \x00")
            password_hash, password = self._dummy, password + "\x01"
        return await asyncio.to_thread(self._check, password_hash, password)

    def _check(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True
