"""Typed errors: how every mutation reports a problem the client can act on.

Mutations return a union of their payload and an area's error type, e.g.
`union CreateSkuResult = CreateSkuPayload | SkuError`; each error carries a `code` from the area's
own enum, a human `message`, and the input `field` at fault. Queries that get bad arguments answer
with a GraphQL error carrying the same `code` and `field` in `extensions` (see resolvers.errors).
"""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

import strawberry

from domain.catalog.sku import SkuErrorCode as DomainSkuErrorCode
from domain.errors import DomainError

E = TypeVar("E")


@strawberry.interface(description="A problem with the request that the client can act on.")
class Error:
    message: str
    field: str | None = strawberry.field(description="The input field at fault, when there is one.")


# The domain's enum itself, exposed as-is: one list of codes, no copy to drift.
SkuErrorCode = strawberry.enum(DomainSkuErrorCode, description="Why a catalog request was refused.")


@strawberry.type(description="A catalog request was refused.")
class SkuError(Error):
    code: SkuErrorCode  # type: ignore[valid-type]


def typed_errors(exc: DomainError, error_type: type[E], codes: type[Enum]) -> list[E]:
    """Map a domain error to the area's GraphQL error objects (one per problem)."""
    return [
        error_type(code=codes(p.code), message=p.message, field=p.field)  # type: ignore[call-arg]
        for p in exc.problems
    ]
