"""Account types: users, API tokens, roles, scopes and the account area's errors."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from domain.identity.accounts import AccountStatus as DomainAccountStatus
from domain.identity.accounts import User as DomainUser
from domain.identity.errors import AccountErrorCode as DomainAccountErrorCode
from domain.identity.scopes import Role as DomainRole
from domain.identity.scopes import Scope as DomainScope
from domain.identity.tokens import ApiToken as DomainApiToken
from domain.identity.tokens import TokenStatus as DomainTokenStatus
from schema.errors import Error
from schema.relay import Connection, Node, to_global_id

Scope = strawberry.enum(DomainScope, description="Read or write access to one area.")
Role = strawberry.enum(DomainRole, description="What an account may do beyond its own objects.")
AccountStatus = strawberry.enum(DomainAccountStatus, description="Whether an account may sign in.")
TokenStatus = strawberry.enum(DomainTokenStatus, description="Whether a token still works.")
AccountErrorCode = strawberry.enum(
    DomainAccountErrorCode, description="Why an account request was refused."
)


@strawberry.type(description="A person's account.")
class User(Node):
    email: str
    role: Role  # type: ignore[valid-type]
    status: AccountStatus  # type: ignore[valid-type]
    created_at: datetime
    has_password: bool = strawberry.field(
        description="False for accounts that only sign in through OIDC."
    )

    @classmethod
    def from_domain(cls, user: DomainUser) -> User:
        return cls(
            id=to_global_id("User", user.id),
            email=user.email,
            role=user.role,
            status=user.status,
            created_at=user.created_at,
            has_password=user.password_hash is not None,
        )


@strawberry.type(description="A credential for third parties. The secret is shown only once.")
class ApiToken(Node):
    name: str
    scopes: list[Scope]  # type: ignore[valid-type]
    prefix: str = strawberry.field(description="The secret's first characters, to recognise it.")
    status: TokenStatus  # type: ignore[valid-type]
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None = strawberry.field(description="To the minute.")
    revoked_at: datetime | None

    @classmethod
    def from_domain(cls, token: DomainApiToken, now: datetime) -> ApiToken:
        return cls(
            id=to_global_id("ApiToken", token.id),
            name=token.name,
            scopes=sorted(token.scopes),
            prefix=token.prefix,
            status=token.status(now),
            created_at=token.created_at,
            expires_at=token.expires_at,
            last_used_at=token.last_used_at,
            revoked_at=token.revoked_at,
        )


UserConnection = Connection[User]
ApiTokenConnection = Connection[ApiToken]


@strawberry.type(description="One problem with an account request.")
class AccountProblem:
    code: AccountErrorCode  # type: ignore[valid-type]
    message: str
    field: str | None


@strawberry.type(description="An account request was refused; `problems` lists every reason.")
class AccountError(Error):
    code: AccountErrorCode  # type: ignore[valid-type]
    problems: list[AccountProblem]
    retry_after_seconds: int | None = strawberry.field(
        default=None, description="Set with RATE_LIMITED: when to try again."
    )


@strawberry.input
class SignUpInput:
    email: str
    password: str = strawberry.field(description="At least 12 characters.")


@strawberry.input
class LogInInput:
    email: str
    password: str


@strawberry.input
class ChangePasswordInput:
    current_password: str = strawberry.field(description="Empty for OIDC-only accounts.")
    new_password: str


@strawberry.input
class CreateApiTokenInput:
    name: str
    scopes: list[Scope]  # type: ignore[valid-type]
    expires_at: datetime = strawberry.field(description="Required; at most one year ahead.")


@strawberry.type(description="Signed in: the session cookie is set on this response.")
class SessionPayload:
    user: User
    csrf_token: str = strawberry.field(
        description="Send it as the X-CSRF-Token header with every mutation (it is also in the "
        "readable CSRF cookie)."
    )
    expires_at: datetime


@strawberry.type
class LogOutPayload:
    sessions_ended: int


@strawberry.type
class CreateApiTokenPayload:
    token: ApiToken
    secret: str = strawberry.field(description="Shown once; store it now. We keep only a hash.")


@strawberry.type
class ApiTokenPayload:
    token: ApiToken


@strawberry.type
class UserPayload:
    user: User


@strawberry.input
class UserFilter:
    email_contains: str | None = None
    role: Role | None = None  # type: ignore[valid-type]
    status: AccountStatus | None = None  # type: ignore[valid-type]


@strawberry.input
class SetUserRoleInput:
    user_id: strawberry.ID
    role: Role  # type: ignore[valid-type]


@strawberry.input
class SuspendUserInput:
    user_id: strawberry.ID
    reason: str | None = None


SessionResult = Annotated[SessionPayload | AccountError, strawberry.union("SessionResult")]
LogOutResult = Annotated[LogOutPayload | AccountError, strawberry.union("LogOutResult")]
CreateApiTokenResult = Annotated[
    CreateApiTokenPayload | AccountError, strawberry.union("CreateApiTokenResult")
]
ApiTokenResult = Annotated[ApiTokenPayload | AccountError, strawberry.union("ApiTokenResult")]
UserResult = Annotated[UserPayload | AccountError, strawberry.union("UserResult")]
