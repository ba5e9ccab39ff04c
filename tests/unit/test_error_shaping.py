"""`shape_error`: domain errors become coded client errors; anything else is masked."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import structlog
from graphql import GraphQLError

from domain.errors import Conflict, InvalidInput, NotFound, Problem, ServiceUnavailable
from resolvers.errors import shape_error


@pytest.fixture(autouse=True)
def request_id() -> Iterator[str]:
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id="abc12345")
    yield "abc12345"
    structlog.contextvars.clear_contextvars()


def wrapped(original: Exception | None, message: str = "raw") -> GraphQLError:
    return GraphQLError(message, path=["addSku"], original_error=original)


@pytest.mark.parametrize("kind", [InvalidInput, NotFound, Conflict])
def test_domain_error_gets_its_problem(kind: type[InvalidInput]) -> None:
    shaped = shape_error(wrapped(kind(Problem("NAME_TAKEN", "Name is taken.", "name"))))
    assert shaped.message == "Name is taken."
    assert shaped.extensions == {"code": "NAME_TAKEN", "field": "name"}
    assert shaped.path == ["addSku"]
    assert shaped.original_error is None


def test_domain_error_with_several_problems_leads_with_the_first() -> None:
    error = InvalidInput([Problem("INVALID_NAME", "Bad name.", "name"), Problem("X", "Y", "z")])
    shaped = shape_error(wrapped(error))
    assert shaped.message == "Bad name."
    assert shaped.extensions == {"code": "INVALID_NAME", "field": "name"}


def test_service_unavailable_carries_the_request_id() -> None:
    shaped = shape_error(wrapped(ServiceUnavailable("database")))
    assert shaped.extensions == {
        "code": "SERVICE_UNAVAILABLE",
        "field": None,
        "requestId": "abc12345",
    }
    assert "database" in shaped.message


def test_unexpected_error_is_masked() -> None:
    shaped = shape_error(wrapped(RuntimeError("secret detail"), message="secret detail"))
    assert shaped.message.startswith("Internal error")
    assert shaped.extensions == {"code": "INTERNAL", "requestId": "abc12345"}
    assert shaped.original_error is None
    assert shaped.path == ["addSku"]
    assert "secret detail" not in json.dumps(shaped.formatted)
    assert "secret detail" not in str(shaped)


def test_unexpected_error_without_bound_request_id() -> None:
    structlog.contextvars.clear_contextvars()
    shaped = shape_error(wrapped(KeyError("secret detail")))
    assert shaped.extensions == {"code": "INTERNAL", "requestId": None}


def test_validation_error_gets_its_code() -> None:
    shaped = shape_error(GraphQLError("Cannot query field 'nope' on type 'Query'."))
    assert shaped.message == "Cannot query field 'nope' on type 'Query'."
    assert shaped.extensions == {"code": "GRAPHQL_VALIDATION_FAILED"}


def test_error_that_already_has_a_code_is_left_alone() -> None:
    error = GraphQLError("Too deep.", extensions={"code": "QUERY_TOO_DEEP"})
    assert shape_error(error) is error


def test_wrapped_graphql_error_is_left_alone() -> None:
    error = wrapped(GraphQLError("inner"))
    assert shape_error(error) is error


def test_syntax_error_gets_the_parse_code() -> None:
    shaped = shape_error(GraphQLError("Syntax Error: Expected Name, found <EOF>."))
    assert shaped.extensions == {"code": "GRAPHQL_PARSE_FAILED"}
    assert shape_error(shaped) is shaped  # shaping twice changes nothing


@pytest.mark.parametrize(
    "message",
    [
        "Variable '$input' has invalid value: Expected value of type 'RegisterNodeInput' not to "
        "include unknown field 'x', found: {'privateKey': '-----BEGIN OPENSSH PRIVATE KEY-----\\n"
        "b3BlbnNzaC1rZXktdjE'}.",
        "Variable '$input' has invalid value at 'input.port': Int cannot represent non-integer "
        "value: '-----BEGIN OPENSSH PRIVATE KEY-----'",
    ],
)
def test_values_quoted_by_graphql_core_are_dropped(message: str) -> None:
    """The client knows what it sent; an echoed value may be a secret (a node's private key)."""
    shaped = shape_error(GraphQLError(message))
    assert "PRIVATE KEY" not in shaped.message and "b3BlbnNzaC1" not in shaped.message
    assert shaped.message.startswith("Variable '$input' has invalid value")
    assert shaped.extensions == {"code": "GRAPHQL_VALIDATION_FAILED"}
