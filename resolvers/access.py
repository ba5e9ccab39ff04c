"""The one ownership check: every object fetched by global ID passes through `fetch_node`.

Each node type names the requirement to ask for it at all and who may see a given object.
An object that exists but is not the caller's answers exactly as a missing one does, so IDs
cannot be probed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from strawberry import Info

from domain.errors import NotFound, Problem
from domain.identity.principal import PUBLIC, Principal, Requirement, check_access, owns_or_admin
from domain.identity.scopes import Scope
from schema.account import ApiToken, User
from schema.allocations import Allocation
from schema.audit import AuditEvent
from schema.billing import LedgerEntry, Payment, ReconciliationIssue, Refund
from schema.catalog import Sku
from schema.context import AppContext, Loaders
from schema.fleet import FleetNode, NodeEvent
from schema.ssh_keys import SshKey


@dataclass(frozen=True)
class NodeType:
    requirement: Requirement
    load: Callable[[Loaders, int], Awaitable[Any]]
    visible: Callable[[Principal, Any], bool]
    convert: Callable[[Any], Any]


ADMIN_READ = Requirement(Scope.ADMIN_READ, admin=True)
BILLING_READ = Requirement(Scope.BILLING_READ)

NODE_TYPES: dict[str, NodeType] = {
    "Sku": NodeType(PUBLIC, lambda ld, k: ld.sku.load(k), lambda p, o: True, Sku.from_domain),
    "User": NodeType(
        Requirement(Scope.ACCOUNT_READ),
        lambda ld, k: ld.user.load(k),
        lambda p, user: owns_or_admin(p, user.id),
        User.from_domain,
    ),
    "ApiToken": NodeType(
        Requirement(Scope.ACCOUNT_READ),
        lambda ld, k: ld.api_token.load(k),
        lambda p, token: owns_or_admin(p, token.user_id),
        lambda token: ApiToken.from_domain(token, datetime.now(UTC)),
    ),
    "SshKey": NodeType(
        Requirement(Scope.COMPUTE_READ),
        lambda ld, k: ld.ssh_key.load(k),
        lambda p, key: owns_or_admin(p, key.user_id),
        SshKey.from_domain,
    ),
    "Allocation": NodeType(
        Requirement(Scope.COMPUTE_READ),
        lambda ld, k: ld.allocation.load(k),
        lambda p, allocation: owns_or_admin(p, allocation.user_id),
        Allocation.from_domain,
    ),
    "AuditEvent": NodeType(
        ADMIN_READ,
        lambda ld, k: ld.audit_event.load(k),
        lambda p, event: p.is_admin,
        AuditEvent.from_domain,
    ),
    "Payment": NodeType(
        BILLING_READ,
        lambda ld, k: ld.payment.load(k),
        lambda p, payment: owns_or_admin(p, payment.user_id),
        Payment.from_domain,
    ),
    "Refund": NodeType(
        BILLING_READ,
        lambda ld, k: ld.refund.load(k),
        lambda p, refund: owns_or_admin(p, refund.user_id),
        Refund.from_domain,
    ),
    "FleetNode": NodeType(
        ADMIN_READ,
        lambda ld, k: ld.fleet_node.load(k),
        lambda p, node: p.is_admin,
        FleetNode.from_domain,
    ),
    # Named by its transfer: the one wallet a transfer moves sees it as this entry.
    "LedgerEntry": NodeType(
        BILLING_READ,
        lambda ld, k: ld.ledger_entry.load(k),
        lambda p, found: owns_or_admin(p, found.owner_id),
        lambda found: LedgerEntry.from_domain(found.entry),
    ),
    "NodeEvent": NodeType(
        ADMIN_READ,
        lambda ld, k: ld.node_event.load(k),
        lambda p, event: p.is_admin,
        NodeEvent.from_domain,
    ),
    "ReconciliationIssue": NodeType(
        ADMIN_READ,
        lambda ld, k: ld.reconciliation_issue.load(k),
        lambda p, issue: p.is_admin,
        ReconciliationIssue.from_domain,
    ),
}


async def load_visible(info: Info[AppContext, None], type_name: str, key: int) -> Any | None:
    """The object as its GraphQL type, or None when there is no such object or it is not the
    caller's; raises AccessDenied when the caller may not ask for this type at all."""
    node_type = NODE_TYPES.get(type_name)
    if node_type is None:
        return None
    principal = info.context.principal
    check_access(principal, node_type.requirement)
    found = await node_type.load(info.context.loaders, key)
    if found is None or not node_type.visible(principal, found):
        return None
    return node_type.convert(found)


async def fetch_node(info: Info[AppContext, None], type_name: str, key: int) -> Any | None:
    found = await load_visible(info, type_name, key)
    node_type = NODE_TYPES.get(type_name)
    if found is None and node_type is not None and not node_type.requirement.public:
        raise NotFound(Problem("NOT_FOUND", f"No {type_name} with this ID.", "id"))
    return found  # public catalog: a missing object is simply null


def visible(principal: Principal, type_name: str, obj: Any) -> bool:
    """The same rule for objects reached through connections (defence in depth)."""
    return NODE_TYPES[type_name].visible(principal, obj)
