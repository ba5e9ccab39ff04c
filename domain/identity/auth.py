"""Signing up, in and out, changing passwords, and turning a presented secret into a principal.

Each use case opens one unit of work and writes its audit row in the same transaction as the
change it records. Failed logins are audited too: the row is committed before the refusal.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from domain.audit.records import RequestMeta, audit
from domain.errors import Conflict, DomainError, InvalidInput, Problem, ProblemCollector
from domain.identity import secrets
from domain.identity.accounts import (
    MAX_PASSWORD,
    User,
    check_email,
    check_password,
    normalize_email,
)
from domain.identity.errors import AccountErrorCode, Refusal
from domain.identity.kit import AuthKit, SignedIn, credentials_changed
from domain.identity.principal import ANONYMOUS, Principal, PrincipalKind
from domain.identity.scopes import Role
from domain.ports import PasswordHasher, UnitOfWork

_BAD_CREDENTIALS = Problem(AccountErrorCode.INVALID_CREDENTIALS, "Email or password is wrong.")


class RateLimited(DomainError):
    def __init__(self, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(
            Problem(
                AccountErrorCode.RATE_LIMITED,
                f"Too many attempts; try again in {retry_after} seconds.",
            )
        )


def _now() -> datetime:
    return datetime.now(UTC)


async def _start_session(uow: UnitOfWork, kit: AuthKit, user: User, meta: RequestMeta,
                         now: datetime) -> SignedIn:  # fmt: skip
    secret = secrets.new_secret(secrets.SESSION_PREFIX)
    expires = now + kit.sessions.absolute
    session = await uow.sessions.add(user.id, secrets.hash_secret(secret), expires,
                                     meta.client_ip, meta.user_agent)  # fmt: skip
    return SignedIn(user, session.id, secret, secrets.csrf_token_for(secret), expires)


async def login_failed(uow: UnitOfWork, meta: RequestMeta, user: User | None, now: datetime,
                       **after: object) -> None:  # fmt: skip
    """Audit a refused login in the caller's transaction and commit it: the refusal is raised
    afterwards, and its row must stay."""
    target = None if user is None else ("user", user.id)
    await uow.audit.append(audit(ANONYMOUS, meta, "auth.login.failed", target, after=after,
                                 now=now))  # fmt: skip
    await uow.commit()


async def open_session(uow: UnitOfWork, kit: AuthKit, user: User, meta: RequestMeta,
                       now: datetime, *, replacing_session: int | None,
                       **detail: object) -> SignedIn:  # fmt: skip
    """A successful login, in the caller's transaction: end the browser's previous session
    (rotation), start a new one, audit it. The caller commits."""
    if replacing_session is not None:
        await uow.sessions.revoke(replacing_session, now)
        # Cached principals of the rotated-away session must go, as on logout.
        uow.record(credentials_changed(user.id, "session_rotated"))
    signed_in = await _start_session(uow, kit, user, meta, now)
    await uow.audit.append(
        audit(
            acting_as(user),
            meta,
            "auth.login.succeeded",
            ("user", user.id),
            after={**detail, "sessionId": signed_in.session_id},
            now=now,
        )
    )
    return signed_in


def acting_as(user: User) -> Principal:
    """The actor of an audit row written while a user signs in (no session exists yet)."""
    return Principal(PrincipalKind.SESSION, user.id, user.role)


async def create_user(
    uow: UnitOfWork,
    hasher: PasswordHasher,
    email: str,
    password: str,
    role: Role,
    actor: Principal,
    meta: RequestMeta,
) -> User:
    """Create an account without signing in (the `gpucloud admin create` path)."""
    problems = ProblemCollector()
    clean = check_email(email, problems)
    check_password(password, problems)
    problems.raise_if_any()
    hashed = await hasher.hash(password)
    async with uow:
        user = await uow.users.add(clean, hashed, role)
        await uow.audit.append(
            audit(actor, meta, "account.created", ("user", user.id), after=user.public_view())
        )
        await uow.commit()
        return user


async def sign_up(uow: UnitOfWork, kit: AuthKit, email: str, password: str,
                  meta: RequestMeta) -> SignedIn:  # fmt: skip
    problems = ProblemCollector()
    clean = check_email(email, problems)
    check_password(password, problems)
    problems.raise_if_any()
    retry = await kit.limiter.hit(
        f"signup:ip:{meta.client_ip}", kit.limits.signup_per_ip, kit.limits.signup_window
    )
    if retry is not None:
        raise RateLimited(retry)
    hashed = await kit.hasher.hash(password)  # slow: before the transaction, not inside it
    now = _now()
    async with uow:
        user = await uow.users.add(clean, hashed, Role.USER)  # unique index decides races
        signed_in = await _start_session(uow, kit, user, meta, now)
        await uow.audit.append(
            audit(
                acting_as(user),
                meta,
                "auth.signup",
                ("user", user.id),
                after=user.public_view(),
                now=now,
            )
        )
        await uow.commit()
        return signed_in


async def _claim_attempt(kit: AuthKit, email: str, meta: RequestMeta | None) -> None:
    """Count the attempt before the password is checked, and forgive it on success: counted
    afterwards, many guesses sent at once would all pass a check that none had yet failed."""
    limits = kit.limits
    retry = None
    if meta is not None:
        retry = await kit.limiter.hit(
            f"login:ip:{meta.client_ip}", limits.login_per_ip, limits.login_ip_window
        )
    if retry is None:
        retry = await kit.limiter.hit(
            f"login:fail:{email}", limits.login_failures_per_account, limits.login_account_window
        )
    if retry is not None:
        raise RateLimited(retry)


async def _forgive(kit: AuthKit, email: str) -> None:
    await kit.limiter.forgive(f"login:fail:{email}")


async def log_in(uow: UnitOfWork, kit: AuthKit, email: str, password: str, meta: RequestMeta,
                 replacing_session: int | None = None) -> SignedIn:  # fmt: skip
    """Check the password and open a new session (rotating away `replacing_session`).

    An unknown email, an account without a password and a wrong password take the same path
    (one Argon2 verification, one failure count, one audit row) and the same answer.
    """
    clean = normalize_email(email)
    await _claim_attempt(kit, clean, meta)
    async with uow:
        user = await uow.users.get_by_email(clean)
    # An over-long password cannot be right (sign-up refuses them); it still costs one Argon2
    # verification of bounded input, like any other failure.
    too_long = len(password) > MAX_PASSWORD
    stored = None if user is None or too_long else user.password_hash
    ok = await kit.hasher.verify(stored, password[:MAX_PASSWORD]) and not too_long
    now = _now()
    if not ok or user is None:
        async with uow:
            await login_failed(uow, meta, user, now, email=clean, reason="credentials")
        raise InvalidInput(_BAD_CREDENTIALS)
    await _forgive(kit, clean)
    if not user.active:
        async with uow:
            await login_failed(uow, meta, user, now, email=clean, reason="suspended")
        raise Conflict(Problem(AccountErrorCode.ACCOUNT_SUSPENDED, "This account is suspended."))
    rehashed = None
    if user.password_hash and kit.hasher.needs_rehash(user.password_hash):
        rehashed = await kit.hasher.hash(password)  # slow: before the transaction
    async with uow:
        if rehashed is not None:
            user = await uow.users.update(user.id, password_hash=rehashed)
        signed_in = await open_session(uow, kit, user, meta, now,
                                       replacing_session=replacing_session, method="password")  # fmt: skip
        await uow.commit()
        return signed_in


async def log_out(uow: UnitOfWork, principal: Principal, meta: RequestMeta) -> None:
    assert principal.user_id is not None and principal.session_id is not None
    now = _now()
    async with uow:
        await uow.sessions.revoke(principal.session_id, now)
        await uow.audit.append(
            audit(principal, meta, "auth.logout", ("session", principal.session_id), now=now)
        )
        uow.record(credentials_changed(principal.user_id, "logout"))
        await uow.commit()


async def log_out_everywhere(uow: UnitOfWork, principal: Principal, meta: RequestMeta) -> int:
    """Revoke every session of the caller, this one included. API tokens are separate
    credentials with their own revocation, so they keep working."""
    assert principal.user_id is not None
    now = _now()
    async with uow:
        count = await uow.sessions.revoke_all(principal.user_id, now)
        await uow.audit.append(
            audit(
                principal,
                meta,
                "auth.logout_everywhere",
                ("user", principal.user_id),
                after={"sessionsRevoked": count},
                now=now,
            )
        )
        uow.record(credentials_changed(principal.user_id, "logout_everywhere"))
        await uow.commit()
        return count


async def change_password(uow: UnitOfWork, kit: AuthKit, principal: Principal, current: str,
                          new: str, meta: RequestMeta) -> SignedIn:  # fmt: skip
    """Set a new password, end every other session and rotate this one."""
    assert principal.user_id is not None and principal.session_id is not None
    problems = ProblemCollector()
    check_password(new, problems, "newPassword")
    problems.raise_if_any()
    async with uow:
        user = await uow.users.get(principal.user_id)
    assert user is not None
    await _claim_attempt(kit, user.email, None)
    # An account made through OIDC has no password yet and may set one with its session.
    if user.password_hash is not None and (
        len(current) > MAX_PASSWORD or not await kit.hasher.verify(user.password_hash, current)
    ):
        async with uow:
            await uow.audit.append(
                audit(principal, meta, "auth.password_change.failed", ("user", user.id))
            )
            await uow.commit()
        raise InvalidInput(
            Problem(
                AccountErrorCode.WRONG_PASSWORD, "The current password is wrong.", "currentPassword"
            )
        )
    await _forgive(kit, user.email)
    hashed = await kit.hasher.hash(new)
    now = _now()
    async with uow:
        user = await uow.users.update(user.id, password_hash=hashed)
        await uow.sessions.revoke_all(user.id, now)
        signed_in = await _start_session(uow, kit, user, meta, now)
        await uow.audit.append(
            audit(
                principal,
                meta,
                "auth.password_changed",
                ("user", user.id),
                after={"sessionId": signed_in.session_id},
                now=now,
            )
        )
        uow.record(credentials_changed(user.id, "password_changed"))
        await uow.commit()
        return signed_in


async def authenticate_session(uow: UnitOfWork, kit: AuthKit, secret: str,
                               now: datetime | None = None) -> Principal | Refusal:  # fmt: skip
    """The principal a session cookie stands for, or why not: unknown, revoked (logged out),
    expired (idle too long or past its absolute expiry), or its account is suspended."""
    if not secret.startswith(secrets.SESSION_PREFIX):
        return Refusal.INVALID
    now = now or _now()
    async with uow:
        found = await uow.sessions.find(secrets.hash_secret(secret))
        if found is None:
            return Refusal.INVALID
        session, user = found
        if session.revoked_at is not None:
            return Refusal.REVOKED
        if not session.live(now, kit.sessions):
            return Refusal.EXPIRED
        if not user.active:
            return Refusal.SUSPENDED
        if now - session.last_seen_at >= kit.sessions.touch_every:
            await uow.sessions.touch(session.id, now)
            session = replace(session, last_seen_at=now)
            await uow.commit()
        return Principal.for_session(user.id, user.role, session.id,
                                     session.valid_until(kit.sessions))  # fmt: skip


async def authenticate_token(uow: UnitOfWork, secret: str, now: datetime | None = None,
                             touch_every_seconds: float = 60.0) -> Principal | Refusal:  # fmt: skip
    """The principal an API token stands for, or why not; records when it was last used (to
    the minute)."""
    if not secret.startswith(secrets.TOKEN_PREFIX):
        return Refusal.INVALID
    now = now or _now()
    async with uow:
        found = await uow.api_tokens.find(secrets.hash_secret(secret))
        if found is None:
            return Refusal.INVALID
        token, user = found
        if token.revoked_at is not None:
            return Refusal.REVOKED
        if now >= token.expires_at:
            return Refusal.EXPIRED
        if not user.active:
            return Refusal.SUSPENDED
        last = token.last_used_at
        if last is None or (now - last).total_seconds() >= touch_every_seconds:
            await uow.api_tokens.touch(token.id, now)
            await uow.commit()
        return Principal.for_token(user.id, user.role, token.id, token.scopes, token.expires_at)
