"""How errors leave the API: domain errors become coded client errors, anything else is masked.

A client never sees a stack trace or an internal message; it gets `extensions.code` and, for
unexpected failures, the request id to quote. The full error is logged with that id.
"""

from __future__ import annotations

import re
from typing import Any

import structlog
from graphql import GraphQLError
from strawberry.extensions import MaskErrors

from domain.errors import DomainError, ServiceUnavailable
from domain.identity.errors import AccessDenied
from schema.stream_results import ResultWatcher

log = structlog.get_logger("gpucloud.graphql")

# graphql-core quotes the value it refused: "..., found: {...}." (for an input object, the whole
# object) or "Int cannot represent non-integer value: '...'". That value may be a secret (a
# node's private key sent in an input with a typo in another field): the client knows what it
# sent, so the value is dropped from every message we return or log, and the rest kept.
_QUOTED_VALUE = (
    re.compile(r"[,;.]?\s*\bfound: .*\Z", re.IGNORECASE | re.DOTALL),
    re.compile(r"(cannot represent[^:\n]*): .*\Z", re.IGNORECASE | re.DOTALL),
)


def without_values(message: str) -> str:
    """`message` without the input value graphql-core quoted in it."""
    found = _QUOTED_VALUE[0].sub(".", message)
    return _QUOTED_VALUE[1].sub(r"\1.", found)


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
    message = without_values(error.message)
    if error.original_error is None and not (error.extensions or {}).get("code"):
        syntax = error.message.startswith("Syntax Error")
        code = "GRAPHQL_PARSE_FAILED" if syntax else "GRAPHQL_VALIDATION_FAILED"
        return _copy(error, message, {"code": code})
    if message != error.message:
        return _copy(error, message, dict(error.extensions or {}))
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

    def _process_result(self, result: Any) -> None:
        # MaskErrors first tests a runtime-checkable Protocol, which is slow enough to show in a
        # 5,000-socket fan-out profile; an error-free result, the usual case, needs no look.
        _shape_result(result)


class StreamedErrorShaping(ResultWatcher):
    """ErrorShaping for operations streamed over the websocket, where every result, the first
    error included, is seen here before it is sent. MaskErrors' `on_operation` would wait for a
    final result that a stream does not have, held open for a subscription's life: part of
    every idle subscriber's memory (bench/fanout.py)."""

    def result_streamed(self, result: Any) -> None:
        _shape_result(result)


def _shape_result(result: Any) -> None:
    errors = getattr(result, "errors", None)
    if errors:
        result.errors = [shape_error(error) for error in errors]


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
            log.info("graphql.client_error", message=without_values(error.message),
                     path=error.path)  # fmt: skip
