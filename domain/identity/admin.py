"""What administrators do to accounts: list them, change roles, suspend and reinstate."""

from __future__ import annotations

from datetime import UTC, datetime

from domain.audit.records import RequestMeta, audit
from domain.errors import Conflict, NotFound, Problem
from domain.identity.accounts import AccountStatus, User
from domain.identity.errors import AccountErrorCode
from domain.identity.kit import credentials_changed
from domain.identity.principal import Principal
from domain.identity.scopes import Role
from domain.pagination import Page, PageRequest
from domain.ports import UnitOfWork, UserFilter


async def list_users(uow: UnitOfWork, user_filter: UserFilter, page: PageRequest) -> Page[User]:
    async with uow:
        return await uow.users.list(user_filter, page)


async def _target(uow: UnitOfWork, principal: Principal, user_id: int) -> User:
    if user_id == principal.user_id:
        # An admin who demotes or suspends themselves may leave nobody able to undo it.
        raise Conflict(
            Problem(
                AccountErrorCode.CANNOT_CHANGE_SELF,
                "You cannot change your own account this way; ask another administrator.",
                "userId",
            )
        )
    user = await uow.users.get(user_id, for_update=True)
    if user is None:
        raise NotFound(Problem(AccountErrorCode.NOT_FOUND, "No such user.", "userId"))
    return user


async def set_role(uow: UnitOfWork, principal: Principal, user_id: int, role: Role,
                   meta: RequestMeta) -> User:  # fmt: skip
    async with uow:
        user = await _target(uow, principal, user_id)
        if user.role is role:
            return user  # already so: nothing changed, nothing to audit
        changed = await uow.users.update(user_id, role=role)
        await uow.audit.append(
            audit(
                principal,
                meta,
                "admin.user.role_changed",
                ("user", user_id),
                before={"role": str(user.role)},
                after={"role": str(role)},
            )
        )
        uow.record(credentials_changed(user_id, "role_changed"))
        await uow.commit()
        return changed


async def set_status(uow: UnitOfWork, principal: Principal, user_id: int, status: AccountStatus,
                     reason: str | None, meta: RequestMeta) -> User:  # fmt: skip
    """Suspend (every session ends, tokens stop working while suspended) or reinstate."""
    now = datetime.now(UTC)
    async with uow:
        user = await _target(uow, principal, user_id)
        if user.status is status:
            return user
        if status is AccountStatus.SUSPENDED and user.role is Role.ADMIN:
            # An administrator's access is taken away by demoting them, on the record, first.
            raise Conflict(
                Problem(
                    AccountErrorCode.CANNOT_SUSPEND_ADMIN,
                    "Administrators cannot be suspended; change their role to user first.",
                    "userId",
                )
            )
        changed = await uow.users.update(user_id, status=status)
        ended = 0
        if status is AccountStatus.SUSPENDED:
            ended = await uow.sessions.revoke_all(user_id, now)
        action = "suspended" if status is AccountStatus.SUSPENDED else "reinstated"
        await uow.audit.append(
            audit(
                principal,
                meta,
                f"admin.user.{action}",
                ("user", user_id),
                before={"status": str(user.status)},
                after={"status": str(status), "reason": reason, "sessionsRevoked": ended},
                now=now,
            )
        )
        uow.record(credentials_changed(user_id, action))
        await uow.commit()
        return changed
