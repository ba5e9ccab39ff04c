"""Signing in through an OpenID Connect provider, once the ID token has been verified.

An identity is found by (issuer, subject). The first time, it is linked to an existing account
only when the provider vouches for the email (`email_verified`); otherwise a new account is
made. An unverified email never links, or anyone could claim someone else's account.
"""

from __future__ import annotations

from datetime import UTC, datetime

from domain.audit.records import RequestMeta, audit
from domain.identity.accounts import normalize_email
from domain.identity.auth import _as, _start_session
from domain.identity.errors import OidcError, OidcErrorCode
from domain.identity.kit import AuthKit, SignedIn
from domain.identity.principal import ANONYMOUS
from domain.identity.scopes import Role
from domain.ports import UnitOfWork


async def sign_in_with_oidc(uow: UnitOfWork, kit: AuthKit, *, issuer: str, subject: str,
                            email: str | None, email_verified: bool,
                            meta: RequestMeta) -> SignedIn:  # fmt: skip
    now = datetime.now(UTC)
    clean = None if email is None else normalize_email(email)
    async with uow:
        user = await uow.users.find_by_identity(issuer, subject)
        identity = {"issuer": issuer, "subject": subject}
        if user is None:
            if clean is None or not email_verified:
                await uow.audit.append(
                    audit(
                        ANONYMOUS,
                        meta,
                        "auth.login.failed",
                        after={**identity, "reason": "email_unverified"},
                        now=now,
                    )
                )
                await uow.commit()
                raise OidcError(
                    OidcErrorCode.OIDC_EMAIL_UNVERIFIED,
                    "The provider did not confirm your email address.",
                )
            user = await uow.users.get_by_email(clean)
            if user is None:
                user = await uow.users.add(clean, None, Role.USER)
                await uow.audit.append(
                    audit(
                        _as(user),
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
                    _as(user), meta, "auth.oidc.linked", ("user", user.id), after=identity, now=now
                )
            )
        if not user.active:
            await uow.audit.append(
                audit(
                    ANONYMOUS,
                    meta,
                    "auth.login.failed",
                    ("user", user.id),
                    after={**identity, "reason": "suspended"},
                    now=now,
                )
            )
            await uow.commit()
            raise OidcError(OidcErrorCode.OIDC_ACCOUNT_SUSPENDED, "This account is suspended.")
        signed_in = await _start_session(uow, kit, user, meta, now)
        await uow.audit.append(
            audit(
                _as(user),
                meta,
                "auth.login.succeeded",
                ("user", user.id),
                after={"method": "oidc", "sessionId": signed_in.session_id, **identity},
                now=now,
            )
        )
        await uow.commit()
        return signed_in


async def oidc_refused(uow: UnitOfWork, meta: RequestMeta, code: OidcErrorCode) -> None:
    """Audit a sign-in that failed before any account was known (bad state, a provider error,
    a forged or tampered ID token)."""
    async with uow:
        await uow.audit.append(
            audit(ANONYMOUS, meta, "auth.login.failed", after={"method": "oidc",
                                                                "reason": str(code)})
        )  # fmt: skip
        await uow.commit()
