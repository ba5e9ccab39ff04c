"""Bad GraphQL, limits, masking, request ids, GET, health and metrics over HTTP."""

from __future__ import annotations

import dataclasses
import json

import pytest
from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient

from infra.logging import configure_logging
from tests.api.helpers import add_skus, codes, gql


async def test_malformed_and_unknown_field_give_clear_errors(client) -> None:
    syntax = await gql(client, "{ skus(first: 2 { edges }")
    assert syntax["errors"][0]["message"].startswith("Syntax Error")
    assert codes(syntax) == ["GRAPHQL_PARSE_FAILED"]
    unknown = await gql(client, "{ skus { edges { node { colour } } } }")
    assert "Cannot query field 'colour'" in unknown["errors"][0]["message"]
    assert codes(unknown) == ["GRAPHQL_VALIDATION_FAILED"]


async def test_alias_and_token_limits(client) -> None:
    aliases = " ".join(f"a{i}: __typename" for i in range(16))
    too_wide = await gql(client, "{ %s }" % aliases)
    assert "aliases" in too_wide["errors"][0]["message"].lower()
    tokens = " ".join("__typename" for _ in range(2100))
    too_long = await gql(client, "{ %s }" % tokens)
    assert "token" in too_long["errors"][0]["message"].lower()
    assert too_long.get("data") is None


async def test_depth_limit(settings, engine) -> None:
    from gpucloud.app import create_app

    app = create_app(dataclasses.replace(settings, max_query_depth=3))
    async with (
        LifespanManager(app),
        AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as c,
    ):
        deep = await gql(c, "{ skus { edges { node { hourlyPrice { amount } } } } }")
        assert "exceeds maximum operation depth" in deep["errors"][0]["message"]
        shallow = await gql(c, "{ skus { edges { cursor } } }")
        assert "errors" not in shallow


async def test_unexpected_error_is_masked_and_logged_with_request_id(
    client, monkeypatch, capsys
) -> None:
    from domain.catalog import services

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("connection string password=hunter2")

    monkeypatch.setattr(services, "list_skus", broken)
    configure_logging("info", "json")
    response = await client.post("/graphql", json={"query": "{ skus { edges { cursor } } }"})
    request_id = response.headers["x-request-id"]
    error = response.json()["errors"][0]
    assert "hunter2" not in response.text and "Traceback" not in response.text
    assert error["extensions"] == {"code": "INTERNAL", "requestId": request_id}
    logged = [
        json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")
    ]
    failure = [e for e in logged if e["event"] == "graphql.unexpected_error"]
    assert failure and failure[0]["request_id"] == request_id
    assert "hunter2" in failure[0]["exception"]  # the operator sees what the client may not
    assert all(
        e.get("request_id") == request_id for e in logged if e["logger"].startswith("gpucloud")
    )


async def test_request_id_is_returned_and_a_good_incoming_one_kept(client) -> None:
    fresh = await client.get("/healthz")
    assert len(fresh.headers["x-request-id"]) == 32
    kept = await client.get("/healthz", headers={"x-request-id": "edge-proxy-1234"})
    assert kept.headers["x-request-id"] == "edge-proxy-1234"
    replaced = await client.get("/healthz", headers={"x-request-id": "bad id\nwith newline"})
    assert replaced.headers["x-request-id"] != "bad id\nwith newline"


async def test_get_serves_the_ide_and_never_executes(client) -> None:
    page = await client.get("/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200 and "graphiql" in page.text.lower()
    attempt = await client.get("/graphql", params={"query": "{ skus { edges { cursor } } }"})
    assert "data" not in attempt.text


async def test_health_ready_and_metrics(client, uow) -> None:
    await add_skus(uow, 1)
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"postgres": "ok", "redis": "ok"}
    await gql(client, "query CatalogPage { skus { edges { cursor } } }", operation="CatalogPage")
    text = (await client.get("/metrics")).text
    assert 'gpucloud_graphql_operations_total{operation="CatalogPage",outcome="ok"} 1.0' in text
    assert 'gpucloud_graphql_operation_duration_seconds_count{operation="CatalogPage"} 1.0' in text
    assert 'gpucloud_db_pool_connections{state="size"}' in text
    assert "gpucloud_outbox_unpublished 1.0" in text
    assert 'gpucloud_dependency_up{dependency="redis"} 1.0' in text
    assert 'gpucloud_http_requests_total{method="POST",route="/graphql",status="200"}' in text


@pytest.mark.parametrize("down", ["postgres", "redis"])
async def test_readyz_names_the_part_that_is_down(settings, engine, down) -> None:
    from gpucloud.app import create_app

    dead = {"postgres": {"database_url": "postgresql://postgres@127.0.0.1:9/none"},
            "redis": {"redis_url": "redis://127.0.0.1:9/0"}}[down]  # fmt: skip
    app = create_app(dataclasses.replace(settings, **dead))
    async with (
        LifespanManager(app),
        AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as c,
    ):
        ready = await c.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["failing"] == [down]
        assert (await c.get("/healthz")).status_code == 200  # alive, just not ready
        result = await gql(c, "{ skus { edges { cursor } } }")
        if down == "postgres":
            assert codes(result) == ["SERVICE_UNAVAILABLE"]
            assert "database is unavailable" in result["errors"][0]["message"]
        else:
            assert "errors" not in result  # reads do not need Redis
