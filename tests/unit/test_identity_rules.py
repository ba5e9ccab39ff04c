"""Pure identity rules: the access check, scopes by role, token and account validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.errors import InvalidInput, ProblemCollector
from domain.identity.accounts import check_email, check_password
from domain.identity.errors import AccessCode, AccessDenied
from domain.identity.principal import (
    ANONYMOUS,
    PUBLIC,
    SYSTEM,
    Principal,
    Requirement,
    check_access,
    owns_or_admin,
)
from domain.identity.scopes import ROLE_SCOPES, Role, Scope
from domain.identity.secrets import csrf_token_for, hash_secret, new_secret
from domain.identity.sessions import Session, SessionPolicy
from domain.identity.tokens import ApiToken, TokenSpec, TokenStatus

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(days=1)


def session_principal(role: Role = Role.USER, user_id: int = 1) -> Principal:
    return Principal.for_session(user_id, role, 10, LATER)


def token_principal(scopes: set[Scope], role: Role = Role.USER, user_id: int = 1) -> Principal:
    return Principal.for_token(user_id, role, 20, frozenset(scopes), LATER)


def denied(principal: Principal, requirement: Requirement) -> AccessCode | None:
    try:
        check_access(principal, requirement)
    except AccessDenied as exc:
        return exc.code
    return None


def test_public_fields_admit_everyone() -> None:
    assert denied(ANONYMOUS, PUBLIC) is None


@pytest.mark.parametrize(
    ("principal", "requirement", "expected"),
    [
        (ANONYMOUS, Requirement(Scope.ACCOUNT_READ), AccessCode.UNAUTHENTICATED),
        (ANONYMOUS, Requirement(), AccessCode.UNAUTHENTICATED),
        (session_principal(), Requirement(Scope.ACCOUNT_READ), None),
        (session_principal(), Requirement(Scope.ADMIN_READ, admin=True), AccessCode.FORBIDDEN),
        (session_principal(Role.ADMIN), Requirement(Scope.ADMIN_WRITE, admin=True), None),
        (token_principal({Scope.ACCOUNT_READ}), Requirement(Scope.ACCOUNT_WRITE),
         AccessCode.MISSING_SCOPE),
        (token_principal(set(Scope)), Requirement(Scope.ACCOUNT_WRITE, session_only=True),
         AccessCode.SESSION_REQUIRED),
        (session_principal(), Requirement(Scope.ACCOUNT_WRITE, session_only=True), None),
        (SYSTEM, Requirement(Scope.ADMIN_WRITE, admin=True), None),
    ],
)  # fmt: skip
def test_access_check(principal: Principal, requirement: Requirement, expected: AccessCode | None) -> None:  # fmt: skip
    assert denied(principal, requirement) == expected


def test_a_token_never_holds_more_than_its_owners_role_allows() -> None:
    demoted = token_principal({Scope.ADMIN_READ, Scope.ACCOUNT_READ}, role=Role.USER)
    assert demoted.scopes == frozenset({Scope.ACCOUNT_READ})
    assert denied(demoted, Requirement(Scope.ADMIN_READ, admin=True)) is AccessCode.FORBIDDEN
    assert ROLE_SCOPES[Role.USER] < ROLE_SCOPES[Role.ADMIN]


def test_ownership_rule() -> None:
    assert owns_or_admin(session_principal(user_id=1), 1)
    assert not owns_or_admin(session_principal(user_id=2), 1)
    assert owns_or_admin(session_principal(Role.ADMIN, user_id=9), 1)
    # An admin's token without admin:read sees only its owner's objects.
    assert not owns_or_admin(token_principal({Scope.ACCOUNT_READ}, Role.ADMIN, 9), 1)
    assert not owns_or_admin(ANONYMOUS, 1)


def test_requirements_describe_themselves_for_introspection() -> None:
    assert PUBLIC.summary == "Public."
    text = Requirement(Scope.ACCOUNT_WRITE, session_only=True).summary
    assert "account:write" in text and "session" in text
    assert "admin role" in Requirement(Scope.ADMIN_READ, admin=True).summary


def test_email_and_password_rules_report_every_problem() -> None:
    problems = ProblemCollector()
    assert check_email("  Someone@Example.COM ", problems) == "someone@example.com"
    check_password("x" * 12, problems)
    assert problems.problems == []
    check_email("no-at-sign", problems)
    check_password("short", problems)
    check_password("y" * 1025, problems)
    assert [p.code for p in problems.problems] == [
        "INVALID_EMAIL", "PASSWORD_TOO_SHORT", "PASSWORD_TOO_LONG"]  # fmt: skip


def test_token_spec_validates_name_scopes_and_expiry_together() -> None:
    with pytest.raises(InvalidInput) as caught:
        TokenSpec.create(" ", [], NOW + timedelta(days=400), Role.USER, NOW)
    assert {p.code for p in caught.value.problems} == {
        "INVALID_NAME", "INVALID_SCOPES", "INVALID_EXPIRY"}  # fmt: skip
    with pytest.raises(InvalidInput) as caught:
        TokenSpec.create("ci", [Scope.ADMIN_READ], LATER, Role.USER, NOW)
    assert caught.value.problems[0].code == "INVALID_SCOPES"
    with pytest.raises(InvalidInput):
        TokenSpec.create("ci", [Scope.ACCOUNT_READ], datetime(2027, 1, 1), Role.USER, NOW)
    with pytest.raises(InvalidInput):
        TokenSpec.create("ci", [Scope.ACCOUNT_READ], NOW - timedelta(hours=1), Role.USER, NOW)
    spec = TokenSpec.create(" ci ", [Scope.ACCOUNT_READ], NOW + timedelta(days=365), Role.USER, NOW)
    assert spec.name == "ci" and spec.scopes == {Scope.ACCOUNT_READ}


def test_token_status() -> None:
    token = ApiToken(1, 1, "ci", frozenset({Scope.ACCOUNT_READ}), "gpc_abcdefgh", NOW, LATER,
                     None, None)  # fmt: skip
    assert token.status(NOW) is TokenStatus.ACTIVE
    assert token.status(LATER) is TokenStatus.EXPIRED
    assert ApiToken(**{**token.__dict__, "revoked_at": NOW}).status(NOW) is TokenStatus.REVOKED


def test_session_idle_and_absolute_expiry() -> None:
    policy = SessionPolicy(idle=timedelta(hours=2), absolute=timedelta(days=7))
    session = Session(1, 1, NOW, NOW, NOW + timedelta(days=7), None)
    assert session.live(NOW + timedelta(hours=1), policy)
    assert not session.live(NOW + timedelta(hours=2), policy)  # idle
    busy = Session(1, 1, NOW, NOW + timedelta(days=7) - timedelta(minutes=1),
                   NOW + timedelta(days=7), None)  # fmt: skip
    assert not busy.live(NOW + timedelta(days=7), policy)  # absolute, however busy
    revoked = Session(1, 1, NOW, NOW, NOW + timedelta(days=7), NOW)
    assert not revoked.live(NOW, policy)


def test_secrets_are_prefixed_random_and_stored_hashed() -> None:
    first, second = new_secret("gpc_"), new_secret("gpc_")
    assert first.startswith("gpc_") and first != second and len(first) > 40
    assert hash_secret(first) != first.encode() and len(hash_secret(first)) == 32
    assert csrf_token_for(first) != csrf_token_for(second)
