"""API token resolvers: create (secret shown once), list, revoke."""

from __future__ import annotations

from datetime import UTC, datetime

import strawberry
from strawberry import Info

from domain.errors import DomainError
from domain.identity import api_tokens
from domain.pagination import PageRequest
from resolvers.access import visible
from resolvers.account import account_error
from schema.account import (
    AccountError,
    ApiToken,
    ApiTokenConnection,
    ApiTokenPayload,
    CreateApiTokenInput,
    CreateApiTokenPayload,
)
from schema.context import AppContext
from schema.relay import After, Before, First, Last, expect_global_id


async def api_tokens_list(
    info: Info[AppContext, None],
    first: First = None,
    after: After = None,
    last: Last = None,
    before: Before = None,
) -> ApiTokenConnection:
    ctx = info.context
    page = await api_tokens.list_api_tokens(
        ctx.uow(), ctx.principal, PageRequest.parse(first, after, last, before)
    )
    now = datetime.now(UTC)
    page.items[:] = [(k, t) for k, t in page.items if visible(ctx.principal, "ApiToken", t)]
    return ApiTokenConnection.from_page(page, lambda t: ApiToken.from_domain(t, now))


async def create_api_token(
    info: Info[AppContext, None],
    input: CreateApiTokenInput,  # noqa: A002
) -> CreateApiTokenPayload | AccountError:
    ctx = info.context
    try:
        token, secret = await api_tokens.create_api_token(
            ctx.uow(), ctx.principal, input.name, list(input.scopes), input.expires_at, ctx.meta
        )
    except DomainError as exc:
        return account_error(exc)
    return CreateApiTokenPayload(
        token=ApiToken.from_domain(token, datetime.now(UTC)), secret=secret
    )


async def revoke_api_token(
    info: Info[AppContext, None],
    id: strawberry.ID,  # noqa: A002
) -> ApiTokenPayload | AccountError:
    ctx = info.context
    try:
        token_id = expect_global_id(id, "ApiToken")
        token = await api_tokens.revoke_api_token(ctx.uow(), ctx.principal, token_id, ctx.meta)
    except DomainError as exc:
        return account_error(exc)
    return ApiTokenPayload(token=ApiToken.from_domain(token, datetime.now(UTC)))
