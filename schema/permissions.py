"""Access declared on fields: one permission class, one check (domain.identity.principal).

Every root field states its requirement with `declared(...)`, public ones included, so a test
can walk the schema and prove each is enforced, and the requirement is appended to the field's
description for clients who learn the API by introspection.

Fields of an owned object that need more than the object itself (a user's money, behind
`billing:read`) use `owned(...)`: the same requirement check, then the ownership rule
(`owns_or_admin`) against the object the field hangs off. Reaching the object already passed
the ownership check (resolvers.access); repeating it here keeps the field safe on any path that
hands out the object later.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from strawberry import Info
from strawberry.permission import BasePermission, PermissionExtension

from domain.identity.errors import AccessCode, AccessDenied
from domain.identity.principal import Principal, Requirement, check_access, owns_or_admin


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


class OwnedAccess(Access):
    """`Access`, and the caller must own the source object or be an administrator holding
    `admin:read`; anyone else is refused as FORBIDDEN."""

    def __init__(self, requirement: Requirement, owner: Callable[[Any], int]) -> None:
        super().__init__(requirement)
        self.owner = owner

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        super().has_permission(source, info, **kwargs)
        if not owns_or_admin(info.context.principal, self.owner(source)):
            raise AccessDenied(AccessCode.FORBIDDEN, "Only the owner or an administrator may "
                               "read this.")  # fmt: skip
        return True


def _guarded(permission: Access, description: str) -> dict[str, Any]:
    return {
        "description": f"{description} {permission.requirement.summary}",
        "extensions": [PermissionExtension(permissions=[permission], use_directives=False)],
    }


def declared(requirement: Requirement, description: str) -> dict[str, Any]:
    """Keyword arguments for `strawberry.field`, `.mutation` or `.subscription`: the permission
    that enforces `requirement`, and a description that states it."""
    return _guarded(Access(requirement), description)


def owned(
    requirement: Requirement, owner: Callable[[Any], int], description: str
) -> dict[str, Any]:
    """Like `declared`, for a field of an owned object: `owner(source)` is the owner's user id.
    Declare such fields nullable, so a refusal nulls the field and not the whole object."""
    return _guarded(OwnedAccess(requirement, owner), f"{description} Owner or admin only.")


def requirement_of(extensions: list[Any]) -> Requirement | None:
    """The requirement a field declared, for tests and tooling."""
    for extension in extensions:
        if isinstance(extension, PermissionExtension):
            for permission in extension.permissions:
                if isinstance(permission, Access):
                    return permission.requirement
    return None
