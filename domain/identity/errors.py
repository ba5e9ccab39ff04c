"""Error codes of the account area, and the refusals every guarded field can give."""

from __future__ import annotations

from enum import StrEnum

from domain.errors import DomainError, Problem


class AccountErrorCode(StrEnum):
    INVALID_EMAIL = "INVALID_EMAIL"
    EMAIL_TAKEN = "EMAIL_TAKEN"
    PASSWORD_TOO_SHORT = "PASSWORD_TOO_SHORT"
    PASSWORD_TOO_LONG = "PASSWORD_TOO_LONG"
    # One code for an unknown email, a wrong password and an account without a password, so
    # a caller cannot learn which accounts exist.
    INVALID_CREDENTIALS = "INVALID_CREDENTIALS"
    WRONG_PASSWORD = "WRONG_PASSWORD"
    ACCOUNT_SUSPENDED = "ACCOUNT_SUSPENDED"
    RATE_LIMITED = "RATE_LIMITED"
    NOT_FOUND = "NOT_FOUND"
    INVALID_ID = "INVALID_ID"
    INVALID_NAME = "INVALID_NAME"
    INVALID_SCOPES = "INVALID_SCOPES"
    INVALID_EXPIRY = "INVALID_EXPIRY"
    ALREADY_REVOKED = "ALREADY_REVOKED"
    CANNOT_CHANGE_SELF = "CANNOT_CHANGE_SELF"
    CANNOT_SUSPEND_ADMIN = "CANNOT_SUSPEND_ADMIN"
    NO_CHANGE = "NO_CHANGE"


class AccessCode(StrEnum):
    """Why a guarded field refused the caller (a GraphQL error's `extensions.code`)."""

    UNAUTHENTICATED = "UNAUTHENTICATED"
    MISSING_SCOPE = "MISSING_SCOPE"
    FORBIDDEN = "FORBIDDEN"
    SESSION_REQUIRED = "SESSION_REQUIRED"
    CSRF_FAILED = "CSRF_FAILED"


class Refusal(StrEnum):
    """Why a presented credential did not authenticate. Told only to whoever presented it: a
    guessed secret is INVALID, and only the holder of a real one learns more."""

    INVALID = "INVALID"
    EXPIRED = "EXPIRED"
    REVOKED = "REVOKED"
    SUSPENDED = "SUSPENDED"


class AccessDenied(DomainError):
    def __init__(self, code: AccessCode, message: str, reason: Refusal | None = None) -> None:
        self.code = code
        self.reason = reason
        super().__init__(Problem(code, message))


class OidcErrorCode(StrEnum):
    """Why an OIDC sign-in failed. Messages stay generic: detail goes to the log, not the
    browser, so a forged callback learns nothing."""

    OIDC_NOT_CONFIGURED = "OIDC_NOT_CONFIGURED"
    OIDC_STATE_INVALID = "OIDC_STATE_INVALID"  # unknown, expired, reused or not this browser's
    OIDC_PROVIDER_ERROR = "OIDC_PROVIDER_ERROR"  # the provider refused the code or is down
    OIDC_TOKEN_INVALID = "OIDC_TOKEN_INVALID"  # signature, issuer, audience, expiry, nonce
    OIDC_EMAIL_UNVERIFIED = "OIDC_EMAIL_UNVERIFIED"
    OIDC_ACCOUNT_SUSPENDED = "OIDC_ACCOUNT_SUSPENDED"


class OidcError(DomainError):
    def __init__(self, code: OidcErrorCode, message: str) -> None:
        self.code = code
        super().__init__(Problem(code, message))
