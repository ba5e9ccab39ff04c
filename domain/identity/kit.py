"""What the identity use cases need besides a unit of work: hashing, limits and lifetimes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from domain.events import DomainEvent
from domain.identity.accounts import User
from domain.identity.sessions import SessionPolicy
from domain.ports import PasswordHasher, RateLimiter

IDENTITY_TOPIC = "identity"


@dataclass(frozen=True)
class RateLimits:
    """Attempts allowed per window (seconds). Failures per account are counted apart from
    attempts per address, so one address cannot lock out many accounts cheaply and many
    addresses cannot guess one account's password quickly."""

    login_per_ip: int = 30
    login_ip_window: int = 60
    login_failures_per_account: int = 10
    login_account_window: int = 900
    signup_per_ip: int = 10
    signup_window: int = 3600


@dataclass(frozen=True)
class AuthKit:
    hasher: PasswordHasher
    limiter: RateLimiter
    sessions: SessionPolicy = field(default_factory=SessionPolicy)
    limits: RateLimits = field(default_factory=RateLimits)


@dataclass(frozen=True)
class SignedIn:
    """A new browser session. The secret goes into the cookie and is never stored."""

    user: User
    session_id: int
    session_secret: str
    csrf_token: str
    expires_at: datetime


def credentials_changed(user_id: int, why: str) -> DomainEvent:
    """Every process drops what it cached about this user's sessions and tokens."""
    return DomainEvent(topic=IDENTITY_TOPIC, name=f"credentials.{why}", payload={"userId": user_id})
