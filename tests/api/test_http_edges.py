"""Requests that are not GraphQL over HTTP as /graphql serves it get the standard error shape,
`{"errors": [{"message", "extensions": {"code"}}]}` with a 4xx status: not plain text, not an
INTERNAL error with a traceback in the log, and nothing runs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from httpx import AsyncClient, Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.logging import configure_logging
from tests.support.identity import PASSWORD

SIGN_UP = (
    'mutation { signUp(input: {email: "edge@example.com", password: "%s"}) { __typename } }'
    % PASSWORD
)
JSON = {"content-type": "application/json"}


def refusal(response: Response, status: int, code: str) -> str:
    """The refusal's message, once its shape, status and code are as documented."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json", response.headers
    body = response.json()
    assert list(body) == ["errors"], body
    [error] = body["errors"]
    assert error["extensions"] == {"code": code}, error
    assert error["message"] and "Traceback" not in response.text
    return str(error["message"])


async def users(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM users"))).scalar_one())


def logged(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    lines = capsys.readouterr().err.splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


async def test_a_subscription_over_http_is_a_client_error_not_an_internal_one(
    client: AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("info", "json")
    for query in (
        "subscription { catalogChanged { kind } }",
        "subscription Mine { notifications { cursor } }",  # needs sign-in: refused before that
    ):
        # Nor as a stream over HTTP (multipart or SSE): subscriptions have the websocket's
        # limits, heartbeat and revocation.
        for accept in (
            "application/json",
            'multipart/mixed;subscriptionSpec="1.0"',
            "text/event-stream",
        ):
            response = await client.post(
                "/graphql", json={"query": query}, headers={"accept": accept}
            )
            message = refusal(response, 400, "SUBSCRIPTION_REQUIRES_WEBSOCKET")
            assert "websocket" in message and "graphql-transport-ws" in message
    entries = logged(capsys)
    assert not [e for e in entries if e["level"] in ("error", "critical")], entries
    assert not [e for e in entries if "exception" in e], entries


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b'{"query": "{ skus { edges { cursor } } }"', "INVALID_JSON"),  # cut short
        (b"query { skus { edges { cursor } } }", "INVALID_JSON"),  # GraphQL, not JSON
        (b'{"query": "\xff\xfe"}', "INVALID_JSON"),  # not UTF-8
        (b"", "INVALID_JSON"),
        (b'"{ skus { edges { cursor } } }"', "BAD_REQUEST"),  # JSON, not an object
        (b"42", "BAD_REQUEST"),
        (b"null", "BAD_REQUEST"),
        (b'[{"query": "{ __typename }"}]', "BAD_REQUEST"),  # batches are not served
        (b"{}", "BAD_REQUEST"),  # no query
        (b'{"query": null}', "BAD_REQUEST"),
        (b'{"query": 5}', "BAD_REQUEST"),
        (b'{"query": "{ __typename }", "variables": [1]}', "BAD_REQUEST"),
        (b'{"query": "{ __typename }", "variables": "x"}', "BAD_REQUEST"),
        (b'{"query": "{ __typename }", "extensions": 3}', "BAD_REQUEST"),
        (b'{"query": "query A { __typename }", "operationName": "B"}', "BAD_REQUEST"),
    ],
)
async def test_a_body_that_is_not_a_graphql_request_gets_a_coded_400(
    client: AsyncClient, content: bytes, code: str
) -> None:
    refusal(await client.post("/graphql", content=content, headers=JSON), 400, code)


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "application/jsonx"]
)
async def test_a_body_that_is_not_json_by_content_type_changes_nothing(
    client: AsyncClient, engine: AsyncEngine, content_type: str | None
) -> None:
    """A form or a `text/plain` fetch from another site is a "simple" request a browser sends
    without asking: it must not run, even a public mutation."""
    headers = {} if content_type is None else {"content-type": content_type}
    body = json.dumps({"query": SIGN_UP})
    response = await client.post("/graphql", content=body, headers=headers)
    refusal(response, 400, "UNSUPPORTED_MEDIA_TYPE")
    assert await users(engine) == 0
    assert "set-cookie" not in response.headers


async def test_json_with_a_charset_is_served(client: AsyncClient, engine: AsyncEngine) -> None:
    body = json.dumps({"query": SIGN_UP})
    charset = {"content-type": "application/json; charset=utf-8"}
    response = await client.post("/graphql", content=body, headers=charset)
    assert response.json()["data"]["signUp"]["__typename"] == "SessionPayload", response.text
    assert await users(engine) == 1


async def test_get_executes_nothing_and_says_so(client: AsyncClient, engine: AsyncEngine) -> None:
    for params in ({"query": SIGN_UP}, {"query": "{ skus { edges { cursor } } }"}):
        response = await client.get("/graphql", params=params)
        assert "data" not in response.json()
        refusal(response, 405, "METHOD_NOT_ALLOWED")
        assert response.headers["allow"] == "POST"
    assert await users(engine) == 0
