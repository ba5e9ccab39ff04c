"""CORS for an SPA served from another origin: the platform's origins (GPUCLOUD_PUBLIC_URL and
GPUCLOUD_ALLOWED_ORIGINS) get their preflight answered and responses they may read with
credentials; any other origin gets no Access-Control-* header at all. It composes with the CSRF
scheme: a cookie mutation from a listed origin works with the CSRF header, from another origin
it is refused even with it."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient, Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.settings import Settings
from tests.support.identity import CREATE_TOKEN, PASSWORD, SIGN_UP, body, unique_email

SPA = "https://app.example"  # listed in GPUCLOUD_ALLOWED_ORIGINS
PUBLIC = "https://gpu.example"  # GPUCLOUD_PUBLIC_URL: the API's own origin
UNLISTED = [
    "https://evil.example",
    "null",
    "https://app.example.evil.example",
    "http://app.example",
    "https://app.example:8443",
]


def cors_headers(response: Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


@pytest.fixture
async def client(settings: Settings, engine: AsyncEngine) -> AsyncIterator[AsyncClient]:
    from gpucloud.app import create_app

    app = create_app(dataclasses.replace(settings, public_url=PUBLIC, allowed_origins=(SPA,)))
    async with (
        LifespanManager(app),
        AsyncClient(transport=ASGITransport(app=app), base_url="http://testserver") as c,
    ):
        yield c


def preflight(origin: str, headers: str = "content-type, x-csrf-token") -> dict[str, str]:
    return {
        "origin": origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": headers,
    }


@pytest.mark.parametrize("origin", [SPA, PUBLIC, "HTTPS://APP.EXAMPLE:443"])
async def test_a_listed_origin_gets_its_preflight_answered(client: AsyncClient, origin) -> None:
    response = await client.options("/graphql", headers=preflight(origin))
    assert response.status_code == 204
    got = cors_headers(response)
    assert got["access-control-allow-origin"] == origin  # echoed, never "*"
    assert got["access-control-allow-credentials"] == "true"
    assert {m.strip() for m in got["access-control-allow-methods"].split(",")} == {"GET", "POST"}
    allowed = {h.strip() for h in got["access-control-allow-headers"].split(",")}
    assert {"content-type", "authorization", "x-csrf-token"} <= allowed
    assert int(got["access-control-max-age"]) > 0
    assert "Origin" in response.headers["vary"]


@pytest.mark.parametrize("origin", UNLISTED)
async def test_another_origin_gets_no_cors_header(client: AsyncClient, origin) -> None:
    response = await client.options("/graphql", headers=preflight(origin))
    assert response.status_code == 403
    assert cors_headers(response) == {}
    assert response.json()["errors"][0]["extensions"]["code"] == "ORIGIN_NOT_ALLOWED"
    read = await client.post(
        "/graphql", json=body("{ skus(first: 1) { edges { cursor } } }"), headers={"origin": origin}
    )
    assert read.status_code == 200 and "errors" not in read.json()  # served: only not readable
    assert cors_headers(read) == {}
    assert "Origin" in read.headers["vary"]  # a shared cache keeps the answers apart


async def test_a_listed_origin_may_read_responses_with_credentials(client: AsyncClient) -> None:
    read = await client.post(
        "/graphql", json=body("{ skus(first: 1) { edges { cursor } } }"), headers={"origin": SPA}
    )
    got = cors_headers(read)
    assert got["access-control-allow-origin"] == SPA
    assert got["access-control-allow-credentials"] == "true"
    assert "x-request-id" in got["access-control-expose-headers"]
    assert "Origin" in read.headers["vary"]
    same_origin = await client.get("/healthz")  # no Origin: not a cross-origin request
    assert cors_headers(same_origin) == {}


async def _tokens(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM api_tokens"))).scalar_one())


async def test_cookie_mutations_compose_with_csrf(client: AsyncClient, engine: AsyncEngine) -> None:
    signed = await client.post(
        "/graphql",
        json=body(SIGN_UP, {"email": unique_email("cors"), "password": PASSWORD}),
        headers={"origin": SPA},
    )
    assert cors_headers(signed)["access-control-allow-origin"] == SPA
    csrf = signed.json()["data"]["signUp"]["csrfToken"]  # what the SPA keeps to echo
    expires = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    create = body(CREATE_TOKEN, {"name": "spa", "scopes": ["COMPUTE_READ"], "expiresAt": expires})

    # A listed origin, with the cookie and the CSRF header: the mutation runs.
    made = await client.post("/graphql", json=create, headers={"origin": SPA, "x-csrf-token": csrf})
    assert made.json()["data"]["createApiToken"]["__typename"] == "CreateApiTokenPayload", made.text
    assert cors_headers(made)["access-control-allow-credentials"] == "true"
    assert await _tokens(engine) == 1

    # The listed origin without the header: refused, as for the API's own page.
    bare = await client.post("/graphql", json=create, headers={"origin": SPA})
    assert bare.json()["errors"][0]["extensions"]["code"] == "CSRF_FAILED"

    # Another origin, even holding the token (its script could not send the header past the
    # preflight; a tool could): refused, and it may not read the answer.
    for origin in UNLISTED:
        refused = await client.post(
            "/graphql", json=create, headers={"origin": origin, "x-csrf-token": csrf}
        )
        assert refused.json()["errors"][0]["extensions"]["code"] == "CSRF_FAILED", origin
        assert refused.json().get("data") is None
        assert cors_headers(refused) == {}
    assert await _tokens(engine) == 1

    # No Origin at all is not a browser: the cookie and the header are enough.
    scripted = await client.post("/graphql", json=create, headers={"x-csrf-token": csrf})
    assert scripted.json()["data"]["createApiToken"]["__typename"] == "CreateApiTokenPayload"
    assert await _tokens(engine) == 2
