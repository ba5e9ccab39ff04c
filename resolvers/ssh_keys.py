"""SSH key resolvers: add, list and remove the caller's public keys."""

from __future__ import annotations

import strawberry
from strawberry import Info

from domain.compute import ssh_key_services
from domain.errors import DomainError, ServiceUnavailable
from domain.pagination import PageRequest
from domain.ports import SshKeyCodec
from resolvers.access import visible
from schema.context import AppContext
from schema.errors import typed_error
from schema.relay import After, Before, First, Last, expect_global_id
from schema.ssh_keys import (
    AddSshKeyInput,
    SshKey,
    SshKeyConnection,
    SshKeyError,
    SshKeyPayload,
    SshKeyProblem,
)


def _codec(info: Info[AppContext, None]) -> SshKeyCodec:
    if info.context.key_codec is None:
        raise ServiceUnavailable("key parser")
    return info.context.key_codec


def ssh_key_error(exc: DomainError) -> SshKeyError:
    return typed_error(exc, SshKeyError, SshKeyProblem)


async def ssh_keys(
    info: Info[AppContext, None],
    first: First = None,
    after: After = None,
    last: Last = None,
    before: Before = None,
) -> SshKeyConnection:
    ctx = info.context
    page = await ssh_key_services.list_ssh_keys(
        ctx.uow(), ctx.principal, PageRequest.parse(first, after, last, before)
    )
    page.items[:] = [(k, key) for k, key in page.items if visible(ctx.principal, "SshKey", key)]
    return SshKeyConnection.from_page(page, SshKey.from_domain)


async def add_ssh_key(
    info: Info[AppContext, None],
    input: AddSshKeyInput,  # noqa: A002
) -> SshKeyPayload | SshKeyError:
    ctx = info.context
    try:
        key = await ssh_key_services.add_ssh_key(
            ctx.uow(), _codec(info), ctx.principal, input.name, input.public_key, ctx.meta
        )
    except DomainError as exc:
        return ssh_key_error(exc)
    return SshKeyPayload(ssh_key=SshKey.from_domain(key))


async def remove_ssh_key(
    info: Info[AppContext, None],
    id: strawberry.ID,  # noqa: A002
) -> SshKeyPayload | SshKeyError:
    ctx = info.context
    try:
        key_id = expect_global_id(id, "SshKey")
        key = await ssh_key_services.remove_ssh_key(ctx.uow(), ctx.principal, key_id, ctx.meta)
    except DomainError as exc:
        return ssh_key_error(exc)
    return SshKeyPayload(ssh_key=SshKey.from_domain(key))
