"""The root schema: Query and Subscription assembled from the areas, with limits and masking."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)
from strawberry.types import ExecutionContext

from resolvers import catalog, node
from resolvers.errors import ErrorShaping, log_errors
from schema.catalog import CatalogChange, Sku, SkuConnection
from schema.errors import SkuError
from schema.relay import Node


@strawberry.type
class Query:
    node: Node | None = strawberry.field(
        resolver=node.node, description="Any object by its global ID."
    )
    skus: SkuConnection = strawberry.field(resolver=catalog.skus, description="The SKU catalog.")
    sku: Sku | None = strawberry.field(
        resolver=catalog.sku, description="One SKU by ID, retired ones too."
    )


@strawberry.type
class Subscription:
    @strawberry.subscription(description="SKUs added or retired, as they happen.")  # type: ignore[untyped-decorator]
    async def catalog_changed(self, info: strawberry.Info) -> AsyncGenerator[CatalogChange, None]:
        async for change in catalog.catalog_changed(info):
            yield change


@dataclass(frozen=True)
class Limits:
    max_depth: int = 10
    max_aliases: int = 15
    max_tokens: int = 2000


class GpuCloudSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        log_errors(errors)


def build_schema(
    limits: Limits = Limits(), extra_extensions: Sequence[type[SchemaExtension]] = ()
) -> strawberry.Schema:
    # Extensions are given as factories so each request gets fresh extension state. The limit
    # rules are built once: the validation cache is keyed by the rule classes, and limiters made
    # per request would mint new classes and miss the cache every time.
    rules = [
        *QueryDepthLimiter(max_depth=limits.max_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=limits.max_aliases).validation_rules,
    ]
    extensions: list[Any] = [
        lambda: ParserCache(maxsize=512),
        lambda: AddValidationRules(rules),
        lambda: ValidationCache(maxsize=512),
        lambda: MaxTokensLimiter(max_token_count=limits.max_tokens),
        ErrorShaping,
        *extra_extensions,
    ]
    return GpuCloudSchema(
        query=Query,
        subscription=Subscription,
        types=[Sku, SkuError],
        extensions=extensions,
    )
