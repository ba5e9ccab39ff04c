"""Access declared on fields: one permission class, one check (domain.identity.principal).

Every root field states its requirement with `declared(...)`, public ones included, so a test
can walk the schema and prove each is enforced, and the requirement is appended to the field's
description for clients who learn the API by introspection.
"""

from __future__ import annotations

from typing import Any

from strawberry import Info
from strawberry.permission import BasePermission, PermissionExtension

from domain.identity.errors import AccessCode, AccessDenied
from domain.identity.principal import Principal, Requirement, check_access


class Access(BasePermission):
    def __init__(self, requirement: Requirement) -> None:
        self.requirement = requirement

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        principal: Principal = info.context.principal
        try:
            check_access(principal, self.requirement)
        except AccessDenied as denied:
            refusal = info.context.credential_refusal
            if denied.code is AccessCode.UNAUTHENTICATED and refusal is not None:
                raise AccessDenied(
                    AccessCode.UNAUTHENTICATED,
                    "The credential sent is invalid, expired or revoked; sign in again.",
                    reason=refusal,  # extensions.reason: which of those, for its holder
                ) from None
            raise
        return True


def declared(requirement: Requirement, description: str) -> dict[str, Any]:
    """Keyword arguments for `strawberry.field`, `.mutation` or `.subscription`: the permission
    that enforces `requirement`, and a description that states it."""
    return {
        "description": f"{description} {requirement.summary}",
        "extensions": [
            PermissionExtension(permissions=[Access(requirement)], use_directives=False)
        ],
    }


def requirement_of(extensions: list[Any]) -> Requirement | None:
    """The requirement a field declared, for tests and tooling."""
    for extension in extensions:
        if isinstance(extension, PermissionExtension):
            for permission in extension.permissions:
                if isinstance(permission, Access):
                    return permission.requirement
    return None
