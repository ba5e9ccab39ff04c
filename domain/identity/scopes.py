"""Roles and scopes: what a principal may do, per area, read or write."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    USER = "user"
    ADMIN = "admin"


class Scope(StrEnum):
    ACCOUNT_READ = "account:read"
    ACCOUNT_WRITE = "account:write"
    BILLING_READ = "billing:read"
    BILLING_WRITE = "billing:write"
    COMPUTE_READ = "compute:read"
    COMPUTE_WRITE = "compute:write"
    ADMIN_READ = "admin:read"
    ADMIN_WRITE = "admin:write"


_ADMIN_SCOPES = frozenset({Scope.ADMIN_READ, Scope.ADMIN_WRITE})

# A session holds every scope its role allows; a token holds what it was given, narrowed to
# what its owner's role allows now (a demoted admin's tokens lose the admin scopes at once).
ROLE_SCOPES: dict[Role, frozenset[Scope]] = {
    Role.USER: frozenset(Scope) - _ADMIN_SCOPES,
    Role.ADMIN: frozenset(Scope),
}
