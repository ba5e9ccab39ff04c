"""Who is calling, and the one access check every guarded field and object goes through."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from domain.identity.errors import AccessCode, AccessDenied
from domain.identity.scopes import ROLE_SCOPES, Role, Scope


class PrincipalKind(StrEnum):
    ANONYMOUS = "anonymous"
    SESSION = "session"  # a browser, by session cookie
    TOKEN = "token"  # a third party, by API token
    SYSTEM = "system"  # the platform itself (CLI, workers)


@dataclass(frozen=True)
class Principal:
    kind: PrincipalKind
    user_id: int | None = None
    role: Role | None = None
    scopes: frozenset[Scope] = frozenset()
    session_id: int | None = None
    token_id: int | None = None
    # When this principal stops being valid without any change (session idle or absolute
    # expiry, token expiry); caches must not keep it past this instant.
    valid_until: datetime | None = None

    @property
    def authenticated(self) -> bool:
        return self.user_id is not None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @classmethod
    def for_session(
        cls, user_id: int, role: Role, session_id: int, valid_until: datetime
    ) -> Principal:
        return cls(PrincipalKind.SESSION, user_id, role, ROLE_SCOPES[role], session_id,
                   valid_until=valid_until)  # fmt: skip

    @classmethod
    def for_token(
        cls, user_id: int, role: Role, token_id: int, scopes: frozenset[Scope],
        valid_until: datetime,
    ) -> Principal:  # fmt: skip
        return cls(PrincipalKind.TOKEN, user_id, role, scopes & ROLE_SCOPES[role],
                   token_id=token_id, valid_until=valid_until)  # fmt: skip


ANONYMOUS = Principal(PrincipalKind.ANONYMOUS)
SYSTEM = Principal(PrincipalKind.SYSTEM, role=Role.ADMIN, scopes=frozenset(Scope))


@dataclass(frozen=True)
class Requirement:
    """What a field asks of its caller. `public` fields ask nothing; the others need a signed-in
    principal holding `scope`; `admin` also needs the admin role; `session_only` refuses API
    tokens (credential management stays with the person, not with a leaked token)."""

    scope: Scope | None = None
    admin: bool = False
    session_only: bool = False
    public: bool = False
    summary: str = field(init=False, default="")

    def __post_init__(self) -> None:
        if self.public:
            text = "Public."
        else:
            parts = ["Requires " + (f"scope `{self.scope}`" if self.scope else "sign-in")]
            if self.admin:
                parts.append("the admin role")
            if self.session_only:
                parts.append("a browser session (API tokens are refused)")
            text = ", ".join(parts) + "."
        object.__setattr__(self, "summary", text)


PUBLIC = Requirement(public=True)
SIGNED_IN = Requirement()


def check_access(principal: Principal, requirement: Requirement) -> None:
    """Raise `AccessDenied` with the most useful code, or return when the caller may proceed."""
    if requirement.public:
        return
    if not principal.authenticated and principal.kind is not PrincipalKind.SYSTEM:
        raise AccessDenied(AccessCode.UNAUTHENTICATED, "Sign in or send an API token.")
    if requirement.session_only and principal.kind is PrincipalKind.TOKEN:
        raise AccessDenied(
            AccessCode.SESSION_REQUIRED, "This needs a signed-in browser session, not a token."
        )
    if requirement.admin and not principal.is_admin:
        raise AccessDenied(AccessCode.FORBIDDEN, "Only administrators may do this.")
    if requirement.scope is not None and requirement.scope not in principal.scopes:
        raise AccessDenied(
            AccessCode.MISSING_SCOPE, f"The credential lacks the scope {requirement.scope}."
        )


def owns_or_admin(principal: Principal, owner_id: int) -> bool:
    """The ownership rule for every owned object: its owner, or an administrator holding
    `admin:read`, may see it; nobody else learns it exists."""
    if principal.user_id is not None and principal.user_id == owner_id:
        return True
    return principal.is_admin and Scope.ADMIN_READ in principal.scopes


def may_change(principal: Principal, owner_id: int) -> bool:
    """Changing someone else's object takes an administrator holding `admin:write`."""
    if principal.user_id is not None and principal.user_id == owner_id:
        return True
    return principal.is_admin and Scope.ADMIN_WRITE in principal.scopes
