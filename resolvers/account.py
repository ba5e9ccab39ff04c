"""Account resolvers: sign-up, log-in and -out, password change, `viewer`."""

from __future__ import annotations

from strawberry import Info

from domain.errors import DomainError
from domain.identity import auth
from domain.identity.kit import AuthKit, SignedIn
from schema.account import (
    AccountError,
    AccountProblem,
    ChangePasswordInput,
    LogInInput,
    LogOutPayload,
    SessionPayload,
    SignUpInput,
    User,
)
from schema.context import AppContext
from schema.errors import typed_error


def account_error(exc: DomainError) -> AccountError:
    error = typed_error(exc, AccountError, AccountProblem)
    error.retry_after_seconds = getattr(exc, "retry_after", None)
    return error


def _kit(info: Info[AppContext, None]) -> AuthKit:
    assert info.context.auth is not None, "the app wires AuthKit into every context"
    return info.context.auth


def _signed_in(info: Info[AppContext, None], signed_in: SignedIn) -> SessionPayload:
    if info.context.cookies is not None:
        info.context.cookies.set(signed_in)
    return SessionPayload(
        user=User.from_domain(signed_in.user),
        csrf_token=signed_in.csrf_token,
        expires_at=signed_in.expires_at,
    )


async def viewer(info: Info[AppContext, None]) -> User:
    ctx = info.context
    assert ctx.principal.user_id is not None  # the field's requirement saw to that
    found = await ctx.loaders.user.load(ctx.principal.user_id)
    assert found is not None
    return User.from_domain(found)


async def sign_up(
    info: Info[AppContext, None],
    input: SignUpInput,  # noqa: A002
) -> SessionPayload | AccountError:
    ctx = info.context
    try:
        signed_in = await auth.sign_up(ctx.uow(), _kit(info), input.email, input.password, ctx.meta)
    except DomainError as exc:
        return account_error(exc)
    return _signed_in(info, signed_in)


async def log_in(info: Info[AppContext, None], input: LogInInput) -> SessionPayload | AccountError:  # noqa: A002
    ctx = info.context
    try:
        signed_in = await auth.log_in(
            ctx.uow(), _kit(info), input.email, input.password, ctx.meta,
            replacing_session=ctx.principal.session_id,  # rotate: the old session ends here
        )  # fmt: skip
    except DomainError as exc:
        return account_error(exc)
    return _signed_in(info, signed_in)


async def log_out(info: Info[AppContext, None]) -> LogOutPayload | AccountError:
    ctx = info.context
    await auth.log_out(ctx.uow(), ctx.principal, ctx.meta)
    if ctx.cookies is not None:
        ctx.cookies.clear()
    return LogOutPayload(sessions_ended=1)


async def log_out_everywhere(info: Info[AppContext, None]) -> LogOutPayload | AccountError:
    ctx = info.context
    count = await auth.log_out_everywhere(ctx.uow(), ctx.principal, ctx.meta)
    if ctx.cookies is not None:
        ctx.cookies.clear()
    return LogOutPayload(sessions_ended=count)


async def change_password(
    info: Info[AppContext, None],
    input: ChangePasswordInput,  # noqa: A002
) -> SessionPayload | AccountError:
    ctx = info.context
    try:
        signed_in = await auth.change_password(
            ctx.uow(), _kit(info), ctx.principal, input.current_password, input.new_password,
            ctx.meta,
        )  # fmt: skip
    except DomainError as exc:
        return account_error(exc)
    return _signed_in(info, signed_in)
