"""Account types: users, API tokens, roles, scopes and the account area's errors.

A user's money hangs off User (wallet, ledgerEntries, payments, refunds, statements): those
fields ask for `billing:read` and the owner or an administrator (`owned`), and read through the
request's loaders, which the billing resolvers fill.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import strawberry

from domain.identity.accounts import AccountStatus as DomainAccountStatus
from domain.identity.accounts import User as DomainUser
from domain.identity.errors import AccountErrorCode as DomainAccountErrorCode
from domain.identity.principal import Requirement
from domain.identity.scopes import Role as DomainRole
from domain.identity.scopes import Scope as DomainScope
from domain.identity.tokens import ApiToken as DomainApiToken
from domain.identity.tokens import TokenStatus as DomainTokenStatus
from domain.pagination import PageRequest
from schema.billing import (
    LedgerEntry,
    LedgerEntryConnection,
    Payment,
    PaymentConnection,
    Refund,
    RefundConnection,
    Statement,
    Wallet,
)
from schema.errors import Error
from schema.permissions import owned
from schema.relay import After, Before, Connection, First, Last, Node, to_global_id

Scope = strawberry.enum(DomainScope, description="Read or write access to one area.")
Role = strawberry.enum(DomainRole, description="What an account may do beyond its own objects.")
AccountStatus = strawberry.enum(DomainAccountStatus, description="Whether an account may sign in.")
TokenStatus = strawberry.enum(DomainTokenStatus, description="Whether a token still works.")
AccountErrorCode = strawberry.enum(
    DomainAccountErrorCode, description="Why an account request was refused."
)


BILLING_READ = Requirement(DomainScope.BILLING_READ)


def _billing(resolver: Any, description: str) -> Any:
    return strawberry.field(
        resolver=resolver, **owned(BILLING_READ, lambda user: user.key, description)
    )


# The billing fields of User: each reads through the request's loaders (filled by
# resolvers.billing) and maps to billing types.


async def _wallet(root: User, info: strawberry.Info, currency: str = "USD") -> Wallet | None:
    return Wallet.from_domain(await info.context.loaders.wallet.load((root.key, currency)))


async def _wallets(root: User, info: strawberry.Info) -> list[Wallet] | None:
    return [Wallet.from_domain(w) for w in await info.context.loaders.wallets.load(root.key)]


async def _ledger_entries(
    root: User,
    info: strawberry.Info,
    first: First = None,
    after: After = None,
    last: Last = None,
    before: Before = None,
) -> LedgerEntryConnection | None:
    key = (root.key, PageRequest.parse(first, after, last, before))
    page = await info.context.loaders.ledger_entries.load(key)
    return LedgerEntryConnection.from_page(page, LedgerEntry.from_domain)


async def _payments(
    root: User,
    info: strawberry.Info,
    first: First = None,
    after: After = None,
    last: Last = None,
    before: Before = None,
) -> PaymentConnection | None:
    page = await info.context.loaders.payments_of.load(
        (root.key, PageRequest.parse(first, after, last, before))
    )
    return PaymentConnection.from_page(page, Payment.from_domain)


async def _refunds(
    root: User,
    info: strawberry.Info,
    first: First = None,
    after: After = None,
    last: Last = None,
    before: Before = None,
) -> RefundConnection | None:
    page = await info.context.loaders.refunds_of.load(
        (root.key, PageRequest.parse(first, after, last, before))
    )
    return RefundConnection.from_page(page, Refund.from_domain)


async def _statements(
    root: User, info: strawberry.Info, months: int = 12
) -> list[Statement] | None:
    found = await info.context.loaders.statements.load((root.key, months))
    return [Statement.from_domain(s) for s in found]


@strawberry.type(description="A person's account.")
class User(Node):
    email: str
    role: Role  # type: ignore[valid-type]
    status: AccountStatus  # type: ignore[valid-type]
    created_at: datetime
    has_password: bool = strawberry.field(
        description="False for accounts that only sign in through OIDC."
    )
    key: strawberry.Private[int]  # the database id, for the billing fields; not exposed
    wallet: Wallet | None = _billing(_wallet, "The wallet in one currency; zero when never used.")
    wallets: list[Wallet] | None = _billing(_wallets, "Every wallet in use, one per currency.")
    ledger_entries: LedgerEntryConnection | None = _billing(
        _ledger_entries, "Every movement on the wallets, newest first."
    )
    payments: PaymentConnection | None = _billing(_payments, "Top-up payments, newest first.")
    refunds: RefundConnection | None = _billing(_refunds, "Refunds of the payments, newest first.")
    statements: list[Statement] | None = _billing(
        _statements, "Monthly statements, newest month first."
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
            key=user.id,
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
