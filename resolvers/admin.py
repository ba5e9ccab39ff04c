"""Administration resolvers: users, roles, suspension, and the audit log."""

from __future__ import annotations

import strawberry
from strawberry import Info

from domain.audit import services as audit_services
from domain.audit.records import AuditFilter
from domain.compute.operator import stop_user_work
from domain.errors import DomainError
from domain.identity import admin
from domain.identity.accounts import AccountStatus
from domain.pagination import PageRequest
from domain.ports import UserFilter as DomainUserFilter
from resolvers.account import account_error
from schema.account import (
    AccountError,
    SetUserRoleInput,
    SuspendUserInput,
    User,
    UserConnection,
    UserFilter,
    UserPayload,
)
from schema.audit import AuditEvent, AuditEventConnection, AuditEventFilter
from schema.context import AppContext
from schema.references import domain_reference
from schema.relay import After, Before, First, Last, expect_global_id


async def users(
    info: Info[AppContext, None],
    first: First = None,
    after: After = None,
    last: Last = None,
    before: Before = None,
    filter: UserFilter | None = None,  # noqa: A002
) -> UserConnection:
    wanted = filter or UserFilter()
    domain_filter = DomainUserFilter(wanted.email_contains, wanted.role, wanted.status)
    page = await admin.list_users(
        info.context.uow(), domain_filter, PageRequest.parse(first, after, last, before)
    )
    return UserConnection.from_page(page, User.from_domain)


async def set_user_role(
    info: Info[AppContext, None],
    input: SetUserRoleInput,  # noqa: A002
) -> UserPayload | AccountError:
    ctx = info.context
    try:
        user_id = expect_global_id(input.user_id, "User", "userId")
        user = await admin.set_role(ctx.uow(), ctx.principal, user_id, input.role, ctx.meta)
    except DomainError as exc:
        return account_error(exc)
    return UserPayload(user=User.from_domain(user))


async def _set_status(
    info: Info[AppContext, None], user_gid: str, status: AccountStatus, reason: str | None
) -> UserPayload | AccountError:
    ctx = info.context
    try:
        user_id = expect_global_id(user_gid, "User", "userId")
        user = await admin.set_status(ctx.uow(), ctx.principal, user_id, status, reason, ctx.meta)
    except DomainError as exc:
        return account_error(exc)
    return UserPayload(user=User.from_domain(user))


async def suspend_user(
    info: Info[AppContext, None],
    input: SuspendUserInput,  # noqa: A002
) -> UserPayload | AccountError:
    """Suspend, then stop the user's live allocations (without the compute kit, the worker's
    sweep stops them)."""
    ctx = info.context
    result = await _set_status(info, input.user_id, AccountStatus.SUSPENDED, input.reason)
    if isinstance(result, UserPayload) and ctx.compute is not None:
        user_id = expect_global_id(input.user_id, "User", "userId")
        await stop_user_work(ctx.compute, user_id, ctx.principal, ctx.meta)
    return result


async def reinstate_user(
    info: Info[AppContext, None], user_id: strawberry.ID
) -> UserPayload | AccountError:
    return await _set_status(info, user_id, AccountStatus.ACTIVE, None)


async def audit_events(
    info: Info[AppContext, None],
    first: First = None,
    after: After = None,
    last: Last = None,
    before: Before = None,
    filter: AuditEventFilter | None = None,  # noqa: A002
) -> AuditEventConnection:
    wanted = filter or AuditEventFilter()
    target_type, target_id = wanted.target_type, wanted.target_id
    if target_id is not None:
        target_type, target_id = domain_reference(target_type, target_id)
    domain_filter = AuditFilter(
        actor_user_id=None
        if wanted.actor_user_id is None
        else expect_global_id(wanted.actor_user_id, "User", "filter.actorUserId"),
        action=wanted.action,
        target_type=target_type,
        target_id=target_id,
        since=wanted.since,
        until=wanted.until,
    )
    page = await audit_services.list_events(
        info.context.uow(), domain_filter, PageRequest.parse(first, after, last, before)
    )
    return AuditEventConnection.from_page(page, AuditEvent.from_domain)
