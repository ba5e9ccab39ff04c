"""How errors leave the API: domain errors become coded client errors, anything else is masked.

A client never sees a stack trace or an internal message; it gets `extensions.code` and, for
unexpected failures, the request id to quote. The full error is logged with that id.
"""

from __future__ import annotations

import structlog
from graphql import GraphQLError
from strawberry.extensions import MaskErrors

from domain.errors import DomainError, ServiceUnavailable
from domain.identity.errors import AccessDenied

log = structlog.get_logger("gpucloud.graphql")


def is_unexpected(error: GraphQLError) -> bool:
    original = error.original_error
    return original is not None and not isinstance(original, (GraphQLError, DomainError))


def _request_id() -> str | None:
    value = structlog.contextvars.get_contextvars().get("request_id")
    return None if value is None else str(value)


def shape_error(error: GraphQLError) -> GraphQLError:
    original = error.original_error
    if isinstance(original, DomainError):
        problem = original.problems[0]
        extensions: dict[str, object] = {"code": str(problem.code), "field": problem.field}
        if isinstance(original, AccessDenied) and original.reason is not None:
            extensions["reason"] = str(original.reason)
        if isinstance(original, ServiceUnavailable):
            extensions["requestId"] = _request_id()
        return _copy(error, problem.message, extensions)
    if is_unexpected(error):
        return _copy(
            error,
            "Internal error. Quote the request id when reporting it.",
            {"code": "INTERNAL", "requestId": _request_id()},
        )
    if error.original_error is None and not (error.extensions or {}).get("code"):
        syntax = error.message.startswith("Syntax Error")
        code = "GRAPHQL_PARSE_FAILED" if syntax else "GRAPHQL_VALIDATION_FAILED"
        return _copy(error, error.message, {"code": code})
    return error


def _copy(error: GraphQLError, message: str, extensions: dict[str, object]) -> GraphQLError:
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=None,
        extensions=extensions,
    )


class ErrorShaping(MaskErrors):
    """MaskErrors' plumbing (including streamed results), with our shaping rules."""

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        return [shape_error(error) for error in errors]


def log_errors(errors: list[GraphQLError]) -> None:
    """Log each error once, with the traceback for unexpected ones; context carries request id."""
    for error in errors:
        if is_unexpected(error):
            log.error("graphql.unexpected_error", path=error.path, exc_info=error.original_error)
        elif isinstance(error.original_error, ServiceUnavailable):
            log.warning(
                "graphql.service_unavailable", message=str(error.original_error), path=error.path
            )
        else:
            log.info("graphql.client_error", message=error.message, path=error.path)
