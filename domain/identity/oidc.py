"""Signing in through an OpenID Connect provider, once the ID token has been verified.

An identity is found by (issuer, subject). The first time, it is linked to an existing account
only when the provider vouches for the email (`email_verified`); otherwise a new account is
made. An unverified email never links, or anyone could claim someone else's account.
"""

from __future__ import annotations

from datetime import UTC, datetime

from domain.audit.records import RequestMeta, audit
from domain.errors import ProblemCollector
from domain.identity.accounts import User, check_email
from domain.identity.auth import acting_as, login_failed, open_session
from domain.identity.errors import OidcError, OidcErrorCode
from domain.identity.kit import AuthKit, SignedIn
from domain.identity.scopes import Role
from domain.ports import UnitOfWork

_MESSAGES = {
    OidcErrorCode.OIDC_EMAIL_UNVERIFIED: "The provider did not confirm your email address.",
    OidcErrorCode.OIDC_ACCOUNT_SUSPENDED: "This account is suspended.",
}


async def _refuse(uow: UnitOfWork, meta: RequestMeta, code: OidcErrorCode, user: User | None,
                  now: datetime, **detail: str) -> OidcError:  # fmt: skip
    await login_failed(uow, meta, user, now, method="oidc", reason=str(code), **detail)
    return OidcError(code, _MESSAGES.get(code, "The sign-in was refused."))


def _usable_email(email: str | None, verified: bool) -> str | None:
    """The provider's email when it vouches for it and it is a well-formed address."""
    if email is None or not verified:
        return None
    problems = ProblemCollector()
    clean = check_email(email, problems)
    return None if problems.problems else clean


async def sign_in_with_oidc(uow: UnitOfWork, kit: AuthKit, *, issuer: str, subject: str,
                            email: str | None, email_verified: bool, meta: RequestMeta,
                            replacing_session: int | None = None) -> SignedIn:  # fmt: skip
    now = datetime.now(UTC)
    identity = {"issuer": issuer, "subject": subject}
    async with uow:
        user = await uow.users.find_by_identity(issuer, subject)
        if user is None:
            clean = _usable_email(email, email_verified)
            if clean is None:
                raise await _refuse(uow, meta, OidcErrorCode.OIDC_EMAIL_UNVERIFIED, None, now,
                                    **identity)  # fmt: skip
            user = await uow.users.get_by_email(clean)
            if user is not None and not user.active:
                # No link to a suspended account: reinstating it must not bring along an
                # identity nobody approved while it was suspended.
                raise await _refuse(uow, meta, OidcErrorCode.OIDC_ACCOUNT_SUSPENDED, user, now,
                                    **identity)  # fmt: skip
            if user is None:
                user = await uow.users.add(clean, None, Role.USER)
                await uow.audit.append(
                    audit(
                        acting_as(user),
                        meta,
                        "auth.signup",
                        ("user", user.id),
                        after={**user.public_view(), "method": "oidc"},
                        now=now,
                    )
                )
            await uow.users.link_identity(user.id, issuer, subject)
            await uow.audit.append(
                audit(
                    acting_as(user),
                    meta,
                    "auth.oidc.linked",
                    ("user", user.id),
                    after=identity,
                    now=now,
                )
            )
        if not user.active:
            raise await _refuse(uow, meta, OidcErrorCode.OIDC_ACCOUNT_SUSPENDED, user, now,
                                **identity)  # fmt: skip
        signed_in = await open_session(uow, kit, user, meta, now,
                                       replacing_session=replacing_session, method="oidc",
                                       **identity)  # fmt: skip
        await uow.commit()
        return signed_in


async def oidc_refused(uow: UnitOfWork, meta: RequestMeta, code: OidcErrorCode) -> None:
    """Audit a sign-in that failed before any account was known (bad state, a provider error,
    a forged or tampered ID token)."""
    async with uow:
        await login_failed(uow, meta, None, datetime.now(UTC), method="oidc", reason=str(code))
