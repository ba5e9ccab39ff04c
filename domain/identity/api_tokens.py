"""API token use cases: create (the secret is shown once), list, revoke."""

from __future__ import annotations

from datetime import UTC, datetime

from domain.audit.records import RequestMeta, audit
from domain.errors import Conflict, NotFound, Problem
from domain.identity import secrets
from domain.identity.errors import AccessCode, AccessDenied, AccountErrorCode
from domain.identity.kit import credentials_changed
from domain.identity.principal import Principal, may_change, owns_or_admin
from domain.identity.scopes import Scope
from domain.identity.tokens import SHOWN_PREFIX, ApiToken, TokenSpec
from domain.pagination import Page, PageRequest
from domain.ports import UnitOfWork


async def create_api_token(uow: UnitOfWork, principal: Principal, name: str, scopes: list[Scope],
                           expires_at: datetime,
                           meta: RequestMeta) -> tuple[ApiToken, str]:  # fmt: skip
    assert principal.user_id is not None and principal.role is not None
    now = datetime.now(UTC)
    spec = TokenSpec.create(name, scopes, expires_at, principal.role, now)
    secret = secrets.new_secret(secrets.TOKEN_PREFIX)
    prefix = secret[: len(secrets.TOKEN_PREFIX) + SHOWN_PREFIX]
    async with uow:
        token = await uow.api_tokens.add(principal.user_id, spec, secrets.hash_secret(secret),
                                         prefix)  # fmt: skip
        await uow.audit.append(
            audit(
                principal,
                meta,
                "token.created",
                ("api_token", token.id),
                after=token.audit_view(),
                now=now,
            )
        )
        await uow.commit()
    return token, secret


async def list_api_tokens(uow: UnitOfWork, principal: Principal,
                          page: PageRequest) -> Page[ApiToken]:  # fmt: skip
    assert principal.user_id is not None
    async with uow:
        return await uow.api_tokens.list_for(principal.user_id, page)


async def revoke_api_token(uow: UnitOfWork, principal: Principal, token_id: int,
                           meta: RequestMeta) -> ApiToken:  # fmt: skip
    now = datetime.now(UTC)
    async with uow:
        token = await uow.api_tokens.get(token_id)
        if token is None or not owns_or_admin(principal, token.user_id):
            raise NotFound(Problem(AccountErrorCode.NOT_FOUND, "No such API token.", "id"))
        if not may_change(principal, token.user_id):
            raise AccessDenied(AccessCode.FORBIDDEN, "Revoking others' tokens takes admin:write.")
        # Only a live token is revoked: of two revocations racing, one finds nothing to do.
        revoked = await uow.api_tokens.revoke(token_id, now)
        if revoked is None:
            raise Conflict(
                Problem(AccountErrorCode.ALREADY_REVOKED, "This token is already revoked.", "id")
            )
        await uow.audit.append(
            audit(
                principal,
                meta,
                "token.revoked",
                ("api_token", token_id),
                before={"revokedAt": None},
                after={"revokedAt": now.isoformat()},
                now=now,
            )
        )
        uow.record(credentials_changed(token.user_id, "token_revoked"))
        await uow.commit()
        return revoked
