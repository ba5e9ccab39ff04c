"""Accounts: who may sign in, with which role, and the rules for emails and passwords."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from domain.errors import ProblemCollector
from domain.identity.errors import AccountErrorCode
from domain.identity.scopes import Role

MIN_PASSWORD = 12
# Argon2 takes any length, but an unbounded one lets a caller buy CPU with bandwidth.
MAX_PASSWORD = 1024
MAX_EMAIL = 254
# Deliberately loose: one @, something on each side, a dot in the domain, no spaces. The
# mailbox is proven by the provider (OIDC) or, later, by a confirmation mail, not by a regex.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class AccountStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


@dataclass(frozen=True)
class User:
    id: int
    email: str
    role: Role
    status: AccountStatus
    created_at: datetime
    password_hash: str | None = None  # None: signs in through OIDC only

    @property
    def active(self) -> bool:
        return self.status is AccountStatus.ACTIVE

    def public_view(self) -> dict[str, object]:
        """What an audit row may record of an account (never the password hash)."""
        return {"email": self.email, "role": str(self.role), "status": str(self.status)}


def normalize_email(raw: str) -> str:
    """Emails are compared case-insensitively: stored and looked up lower-cased and trimmed."""
    return raw.strip().lower()


def check_email(raw: str, problems: ProblemCollector, field: str = "email") -> str:
    email = normalize_email(raw)
    if len(email) > MAX_EMAIL or not _EMAIL.match(email):
        problems.add(AccountErrorCode.INVALID_EMAIL, "Enter a valid email address.", field)
    return email


def check_password(password: str, problems: ProblemCollector, field: str = "password") -> None:
    if len(password) < MIN_PASSWORD:
        problems.add(
            AccountErrorCode.PASSWORD_TOO_SHORT,
            f"Use at least {MIN_PASSWORD} characters.",
            field,
        )
    elif len(password) > MAX_PASSWORD:
        problems.add(
            AccountErrorCode.PASSWORD_TOO_LONG, f"Use at most {MAX_PASSWORD} characters.", field
        )
