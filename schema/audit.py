"""Audit types: what administrators read of the tamper-evident log."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.scalars import JSON

from domain.audit.records import AuditEvent as DomainAuditEvent
from schema.references import global_reference
from schema.relay import Connection, Node, to_global_id


@strawberry.type(description="One audited action. Rows are append-only and hash-chained.")
class AuditEvent(Node):
    occurred_at: datetime
    actor_type: str = strawberry.field(description="user, token, system or anonymous.")
    actor_user_id: strawberry.ID | None
    actor_token_id: strawberry.ID | None
    action: str
    target_type: str | None = strawberry.field(description="user, sku, node, allocation, ...")
    target_id: strawberry.ID | None = strawberry.field(
        description="The target's global ID where it has one (a user, SKU, node, allocation, "
        "payment, refund, key or token); else the record's own id (e.g. of a session)."
    )
    request_id: str | None
    client_ip: str | None
    before: JSON | None
    after: JSON | None
    hash: str = strawberry.field(description="This row's chain hash, hex.")

    @classmethod
    def from_domain(cls, event: DomainAuditEvent) -> AuditEvent:
        r = event.record
        return cls(
            id=to_global_id("AuditEvent", event.id),
            occurred_at=r.occurred_at,
            actor_type=r.actor_type,
            actor_user_id=None
            if r.actor_user_id is None
            else to_global_id("User", r.actor_user_id),
            actor_token_id=None
            if r.actor_token_id is None
            else to_global_id("ApiToken", r.actor_token_id),
            action=r.action,
            target_type=r.target_type,
            target_id=global_reference(r.target_type, r.target_id)
            or (None if r.target_id is None else strawberry.ID(r.target_id)),
            request_id=r.request_id,
            client_ip=r.client_ip,
            before=r.before,  # type: ignore[arg-type]
            after=r.after,  # type: ignore[arg-type]
            hash=event.hash.hex(),
        )


AuditEventConnection = Connection[AuditEvent]


@strawberry.input(description="Every given field must match.")
class AuditEventFilter:
    actor_user_id: strawberry.ID | None = None
    action: str | None = strawberry.field(
        default=None, description='Exact, or a prefix ending in "." such as "auth.".'
    )
    target_type: str | None = None
    target_id: str | None = strawberry.field(
        default=None,
        description="A global ID (as `AuditEvent.targetId` gives it), or the raw "
        "id of a target without one.",
    )
    since: datetime | None = None
    until: datetime | None = None
