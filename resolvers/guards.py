"""Request-level guards that look at the whole operation rather than one field."""

from __future__ import annotations

from collections.abc import Iterator

import structlog
from graphql import ExecutionResult, GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from domain.identity.errors import AccessCode

log = structlog.get_logger(__name__)


class CsrfGuard(SchemaExtension):
    """A mutation authenticated by the session cookie must carry the CSRF token (the
    `X-CSRF-Token` header matching the CSRF cookie and the session). Without it nothing runs:
    a form or script on another site can make the browser send the cookie, not the header."""

    def on_execute(self) -> Iterator[None]:
        ctx = self.execution_context
        context = ctx.context
        if (
            ctx.operation_type is OperationType.MUTATION
            and context.via_cookie
            and not context.csrf_ok
        ):
            log.warning("auth.csrf_refused", operation=ctx.operation_name)
            ctx.result = ExecutionResult(
                data=None,
                errors=[
                    GraphQLError(
                        "Missing or wrong CSRF token: send the X-CSRF-Token header.",
                        extensions={"code": str(AccessCode.CSRF_FAILED)},
                    )
                ],
            )
        yield
