"""Client idempotency keys: a repeat returns the first result; the same key with a different
request is refused, so a retried mutation can never move money twice."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from domain.errors import Conflict, InvalidInput, Problem

if TYPE_CHECKING:
    from domain.ports import UnitOfWork

MAX_KEY = 255


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    owner_id: int
    key: str
    operation: str
    request_hash: bytes
    result_type: str
    result_id: int


def request_hash(operation: str, request: dict[str, Any]) -> bytes:
    body = json.dumps({"op": operation, "request": request}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).digest()


def check_key(key: str) -> str:
    if not 1 <= len(key) <= MAX_KEY or not key.isprintable() or key != key.strip():
        raise InvalidInput(Problem("INVALID_IDEMPOTENCY_KEY",
                                   f"An idempotency key is 1 to {MAX_KEY} printable characters "
                                   "without surrounding spaces.", "idempotencyKey"))  # fmt: skip
    return key


def replayed(record: IdempotencyRecord, operation: str, digest: bytes) -> int:
    """The first result's id, if this is the same request again; else a refusal."""
    if record.operation != operation or record.request_hash != digest:
        raise Conflict(Problem("IDEMPOTENCY_KEY_REUSED",
                               "This idempotency key was used for a different request.",
                               "idempotencyKey"))  # fmt: skip
    return record.result_id


@dataclass(frozen=True, slots=True)
class Keyed:
    """One client request under its idempotency key."""

    owner_id: int
    key: str
    operation: str
    digest: bytes
    result_type: str


class _Stored(Protocol):
    @property
    def id(self) -> int: ...


R = TypeVar("R", bound=_Stored)


async def once(
    uow: UnitOfWork, request: Keyed, create: Callable[[], Awaitable[R]],
    load: Callable[[int], Awaitable[R | None]],
) -> tuple[R, bool]:  # fmt: skip
    """Inside the caller's open transaction: `create` the result unless this key already has
    one, which `load` reads. Returns the result and whether it was made now (then the caller
    commits). When a concurrent twin stored its result first, our work is rolled back and
    theirs is the answer."""
    earlier = await uow.idempotency.recall(request.owner_id, request.key)
    if earlier is None:
        made = await create()
        earlier = await uow.idempotency.remember(IdempotencyRecord(
            request.owner_id, request.key, request.operation, request.digest,
            request.result_type, made.id,
        ))  # fmt: skip
        if earlier.result_id == made.id:
            return made, True
        await uow.rollback()
    found = await load(replayed(earlier, request.operation, request.digest))
    assert found is not None, "an idempotency record points at a missing result"
    return found, False
