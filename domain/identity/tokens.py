"""API tokens for third parties: named, scoped, always expiring."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from domain.errors import ProblemCollector
from domain.identity.errors import AccountErrorCode
from domain.identity.scopes import ROLE_SCOPES, Role, Scope

MAX_LIFETIME = timedelta(days=366)  # "at most one year", leap years included
MIN_LIFETIME = timedelta(minutes=5)
MAX_NAME = 100
SHOWN_PREFIX = 8  # characters of the secret kept to recognise a token in a list


class TokenStatus(StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass(frozen=True)
class ApiToken:
    id: int
    user_id: int
    name: str
    scopes: frozenset[Scope]
    prefix: str
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    def status(self, now: datetime) -> TokenStatus:
        if self.revoked_at is not None:
            return TokenStatus.REVOKED
        return TokenStatus.EXPIRED if now >= self.expires_at else TokenStatus.ACTIVE

    def audit_view(self) -> dict[str, object]:
        return {"name": self.name, "scopes": sorted(self.scopes), "prefix": self.prefix,
                "expiresAt": self.expires_at.isoformat()}  # fmt: skip


@dataclass(frozen=True)
class TokenSpec:
    name: str
    scopes: frozenset[Scope]
    expires_at: datetime

    @classmethod
    def create(
        cls, name: str, scopes: list[Scope], expires_at: datetime, role: Role, now: datetime
    ) -> TokenSpec:
        problems = ProblemCollector()
        clean = name.strip()
        if not clean or len(clean) > MAX_NAME or not clean.isprintable():
            problems.add(
                AccountErrorCode.INVALID_NAME,
                f"Give the token a name of 1 to {MAX_NAME} printable characters.",
                "name",
            )
        if not scopes:
            problems.add(AccountErrorCode.INVALID_SCOPES, "Choose at least one scope.", "scopes")
        elif not set(scopes) <= ROLE_SCOPES[role]:
            beyond = sorted(set(scopes) - ROLE_SCOPES[role])
            problems.add(
                AccountErrorCode.INVALID_SCOPES,
                f"Your role cannot grant: {', '.join(beyond)}.",
                "scopes",
            )
        if expires_at.tzinfo is None:
            problems.add(
                AccountErrorCode.INVALID_EXPIRY, "Give the expiry with a time zone.", "expiresAt"
            )
        elif not now + MIN_LIFETIME <= expires_at <= now + MAX_LIFETIME:
            problems.add(
                AccountErrorCode.INVALID_EXPIRY,
                "The expiry must be between 5 minutes and one year from now.",
                "expiresAt",
            )
        problems.raise_if_any()
        return cls(clean, frozenset(scopes), expires_at)
