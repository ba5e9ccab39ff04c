"""Each distinct document is parsed and validated once (bounded LRU caches keyed by its text),
and the limits (depth, aliases, tokens) still refuse a document however often it is sent."""

from __future__ import annotations

import dataclasses
import uuid

from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient
from strawberry.extensions.parser_cache import _get_parse_cache
from strawberry.extensions.validation_cache import _get_validate_cache

from resolvers.root import DOCUMENT_CACHE_SIZE
from tests.api.helpers import add_skus, codes, gql


async def test_a_repeated_document_is_parsed_and_validated_once(client, uow) -> None:
    await add_skus(uow, 2)
    parsed, validated = (
        _get_parse_cache(DOCUMENT_CACHE_SIZE),
        _get_validate_cache(DOCUMENT_CACHE_SIZE),
    )
    # A name no other test sends: a document these caches have not seen.
    query = "query Once%s { skus(first: 1) { edges { cursor } } }" % uuid.uuid4().hex
    parses, validations = parsed.cache_info(), validated.cache_info()
    for _ in range(3):
        assert len((await gql(client, query))["data"]["skus"]["edges"]) == 1
    assert parsed.cache_info().misses - parses.misses == 1
    assert parsed.cache_info().hits - parses.hits == 2
    assert validated.cache_info().misses - validations.misses == 1
    assert validated.cache_info().hits - validations.hits == 2


async def test_limits_refuse_a_cached_document_every_time(client, settings, engine) -> None:
    from gpucloud.app import create_app

    aliases = "{ %s }" % " ".join(f"a{i}: __typename" for i in range(16))
    tokens = "{ %s }" % " ".join("__typename" for _ in range(2100))
    unknown = "{ skus { edges { node { colour } } } }"
    for _ in range(2):  # the second time, parse and validation results come from the caches
        assert "aliases" in (await gql(client, aliases))["errors"][0]["message"].lower()
        assert "token" in (await gql(client, tokens))["errors"][0]["message"].lower()
        assert codes(await gql(client, unknown)) == ["GRAPHQL_VALIDATION_FAILED"]

    # Another app with a lower depth limit: the shared caches are keyed by its own rules.
    deep = "{ skus { edges { node { hourlyPrice { amount } } } } }"
    assert "errors" not in await gql(client, deep)  # allowed at the default depth
    shallow_app = create_app(dataclasses.replace(settings, max_query_depth=3))
    async with (
        LifespanManager(shallow_app),
        AsyncClient(transport=ASGITransport(app=shallow_app), base_url="http://t") as c,
    ):
        for _ in range(2):
            refused = await gql(c, deep)
            assert "exceeds maximum operation depth" in refused["errors"][0]["message"]
    assert "errors" not in await gql(client, deep)  # and still allowed here
