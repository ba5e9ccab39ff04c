"""Typed errors: how every mutation reports a problem the client can act on.

Mutations return a union of their payload and an area's error type, e.g.
`union CreateSkuResult = CreateSkuPayload | SkuError`; the error carries a `code` from the area's
own enum, a human `message` and the input `field` at fault, and `problems` lists every problem
found (the domain validates a whole input at once). Queries that get bad arguments answer
with a GraphQL error carrying the same `code` and `field` in `extensions` (see resolvers.errors).
"""

from __future__ import annotations

from typing import TypeVar

import strawberry

from domain.catalog.sku import SkuErrorCode as DomainSkuErrorCode
from domain.errors import DomainError, ServiceUnavailable
from domain.identity.errors import AccessDenied

E = TypeVar("E")
P = TypeVar("P")


@strawberry.interface(description="A problem with the request that the client can act on.")
class Error:
    message: str
    field: str | None = strawberry.field(description="The input field at fault, when there is one.")


# The domain's enum itself, exposed as-is: one list of codes, no copy to drift.
SkuErrorCode = strawberry.enum(DomainSkuErrorCode, description="Why a catalog request was refused.")


@strawberry.type(description="One problem with a catalog request.")
class SkuProblem:
    code: SkuErrorCode  # type: ignore[valid-type]
    message: str
    field: str | None


@strawberry.type(description="A catalog request was refused; `problems` lists every reason.")
class SkuError(Error):
    code: SkuErrorCode  # type: ignore[valid-type]
    problems: list[SkuProblem]


def typed_error(exc: DomainError, error_type: type[E], problem_type: type[P]) -> E:
    """Map a domain error to the area's union member: the first problem on top, all of them in
    `problems`, so a client can show every mistake of a form at once. An access refusal, or a
    backing service that is down, is not a problem with the input: it stays a GraphQL error with
    its own code (and, for SERVICE_UNAVAILABLE, the request id), not a value of the area's enum."""
    if isinstance(exc, (AccessDenied, ServiceUnavailable)):
        raise exc
    problems = [problem_type(code=p.code, message=p.message, field=p.field) for p in exc.problems]  # type: ignore[call-arg]
    first = exc.problems[0]
    return error_type(code=first.code, message=first.message, field=first.field, problems=problems)  # type: ignore[call-arg]
