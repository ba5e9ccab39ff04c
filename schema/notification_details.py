"""What a notification says, as typed fields: one type per shape of notice.

The domain stores each notice's facts as it knows them (database ids, its own state values,
minor units; domain/notifications/notices.py). Here, at the edge, they become what the rest of
the API speaks: global IDs that `node(id:)` accepts, schema enum values and `Money`. Stored
rows are never rewritten, so a notification reads the same whenever it is fetched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Annotated, Any

import strawberry

from domain.compute.allocations import AllocationState as DomainAllocationState
from domain.compute.allocations import FailureCode as DomainFailureCode
from domain.compute.allocations import StopReason as DomainStopReason
from domain.fleet.nodes import NodeState as DomainNodeState
from domain.fleet.nodes import ReasonCode as DomainReasonCode
from domain.notifications.notices import NoticeType
from domain.payments.payments import PaymentStatus as DomainPaymentStatus
from domain.payments.refunds import RefundStatus as DomainRefundStatus
from schema.allocations import AllocationState, FailureCode, StopReason
from schema.billing import PaymentStatus, RefundStatus
from schema.fleet import NodeState, ReasonCode, enum_or_none
from schema.money import Money
from schema.references import global_reference
from schema.relay import to_global_id


@strawberry.type(description="ALLOCATION_STATE_CHANGED: one of your allocations changed state.")
class AllocationStateChangedNotice:
    allocation_id: strawberry.ID = strawberry.field(description="Pass it to `node(id:)`.")
    state: AllocationState  # type: ignore[valid-type]
    previous_state: AllocationState | None = strawberry.field(  # type: ignore[valid-type]
        description="Null when the allocation was just created."
    )
    version: int = strawberry.field(description="The allocation's version after the change.")
    failure: FailureCode | None = strawberry.field(  # type: ignore[valid-type]
        description="Why it failed, when it is failing or FAILED."
    )
    stop_reason: StopReason | None  # type: ignore[valid-type]


@strawberry.type(
    description="ALLOCATION_LOW_BALANCE: your balance cannot reserve an allocation's next billing "
    "window; it stops at `stopsAt` unless you top up."
)
class AllocationLowBalanceNotice:
    allocation_id: strawberry.ID = strawberry.field(description="Pass it to `node(id:)`.")
    stops_at: datetime


@strawberry.type(
    description="ALLOCATION_STOPPED_BY_ADMIN: an administrator stopped one of your allocations, "
    "for the reason given."
)
class AllocationStoppedByAdminNotice:
    allocation_id: strawberry.ID = strawberry.field(description="Pass it to `node(id:)`.")
    admin_reason: str = strawberry.field(description="What the administrator wrote.")


@strawberry.type(
    description="ALLOCATION_NODE_DRAINING: the node of one of your allocations is being emptied; "
    "the allocation is stopped at `stopsAt` (reason DRAINED) unless you stop it first."
)
class AllocationNodeDrainingNotice:
    allocation_id: strawberry.ID = strawberry.field(description="Pass it to `node(id:)`.")
    stops_at: datetime


@strawberry.type(description="PAYMENT_SUCCEEDED or PAYMENT_FAILED: a top-up was settled.")
class PaymentNotice:
    payment_id: strawberry.ID = strawberry.field(description="Pass it to `node(id:)`.")
    payment_status: PaymentStatus  # type: ignore[valid-type]
    amount: Money = strawberry.field(description="Credited, or asked for when it failed.")


@strawberry.type(description="REFUND_SUCCEEDED or REFUND_FAILED: a refund was settled.")
class RefundNotice:
    refund_id: strawberry.ID = strawberry.field(description="Pass it to `node(id:)`.")
    payment_id: strawberry.ID = strawberry.field(description="The payment refunded.")
    refund_status: RefundStatus  # type: ignore[valid-type]
    amount: Money


@strawberry.type(
    description="NODE_STATE_CHANGED or NODE_ALERT (administrators): a node changed state; an "
    "alert when it became QUARANTINED, UNREACHABLE or UNHEALTHY."
)
class NodeNotice:
    node_id: strawberry.ID = strawberry.field(description="A FleetNode: pass it to `node(id:)`.")
    name: str
    node_state: NodeState  # type: ignore[valid-type]
    previous_node_state: NodeState  # type: ignore[valid-type]
    reason: ReasonCode | None  # type: ignore[valid-type]
    message: str | None = strawberry.field(description="Given on NODE_ALERT.")


@strawberry.type(description="AUDIT_RECORDED (administrators): a platform change was audited.")
class AuditRecordedNotice:
    audit_event_id: strawberry.ID = strawberry.field(description="Pass it to `node(id:)`.")
    action: str = strawberry.field(description='As `AuditEvent.action`, e.g. "catalog.sku.added".')
    actor_type: str = strawberry.field(description="user, token, system or anonymous.")
    actor_user_id: strawberry.ID | None
    target_type: str | None = strawberry.field(description="As `AuditEvent.targetType`.")
    target_id: strawberry.ID | None = strawberry.field(
        description="The target's global ID where it has one (a user, SKU, node, allocation, "
        "payment, key or token), else as `AuditEvent.targetId`."
    )


# Field names differ where their types do (`state` of an allocation, `nodeState`), so a client
# can select every member in one query without aliases (GraphQL refuses same-named fields of
# different types in one selection).
Notice = (
    AllocationStateChangedNotice
    | AllocationLowBalanceNotice
    | AllocationStoppedByAdminNotice
    | AllocationNodeDrainingNotice
    | PaymentNotice
    | RefundNotice
    | NodeNotice
    | AuditRecordedNotice
)
NotificationDetails = Annotated[
    Notice,
    strawberry.union(
        "NotificationDetails",
        description="A notification's facts, typed by its `type`: IDs are global IDs, states "
        "are enum values, amounts are Money.",
    ),
]


def _id(type_name: str, value: Any) -> strawberry.ID:
    return to_global_id(type_name, int(value))


def _allocation_state(p: Mapping[str, Any]) -> AllocationStateChangedNotice:
    return AllocationStateChangedNotice(
        allocation_id=_id("Allocation", p["allocationId"]),
        state=DomainAllocationState(p["state"]),
        previous_state=enum_or_none(DomainAllocationState, p.get("previous")),
        version=int(p["version"]),
        failure=enum_or_none(DomainFailureCode, p.get("failure")),
        stop_reason=enum_or_none(DomainStopReason, p.get("stopReason")),
    )


def _low_balance(p: Mapping[str, Any]) -> AllocationLowBalanceNotice:
    return AllocationLowBalanceNotice(
        allocation_id=_id("Allocation", p["allocationId"]),
        stops_at=datetime.fromisoformat(p["stopsAt"]),
    )


def _stopped_by_admin(p: Mapping[str, Any]) -> AllocationStoppedByAdminNotice:
    return AllocationStoppedByAdminNotice(
        allocation_id=_id("Allocation", p["allocationId"]), admin_reason=str(p["reason"])
    )


def _node_draining(p: Mapping[str, Any]) -> AllocationNodeDrainingNotice:
    return AllocationNodeDrainingNotice(
        allocation_id=_id("Allocation", p["allocationId"]),
        stops_at=datetime.fromisoformat(p["stopsAt"]),
    )


def _payment(status: DomainPaymentStatus) -> Callable[[Mapping[str, Any]], PaymentNotice]:
    def convert(p: Mapping[str, Any]) -> PaymentNotice:
        return PaymentNotice(
            payment_id=_id("Payment", p["paymentId"]),
            payment_status=status,
            amount=Money.of(int(p["amount"]), p["currency"]),
        )

    return convert


def _refund(status: DomainRefundStatus) -> Callable[[Mapping[str, Any]], RefundNotice]:
    def convert(p: Mapping[str, Any]) -> RefundNotice:
        return RefundNotice(
            refund_id=_id("Refund", p["refundId"]),
            payment_id=_id("Payment", p["paymentId"]),
            refund_status=status,
            amount=Money.of(int(p["amount"]), p["currency"]),
        )

    return convert


def _node(p: Mapping[str, Any]) -> NodeNotice:
    return NodeNotice(
        node_id=_id("FleetNode", p["nodeId"]),
        name=str(p["name"]),
        node_state=DomainNodeState(p["state"]),
        previous_node_state=DomainNodeState(p["previous"]),
        reason=enum_or_none(DomainReasonCode, p.get("reason")),
        message=p.get("message"),
    )


def _audit(p: Mapping[str, Any]) -> AuditRecordedNotice:
    actor = p.get("actorUserId")
    return AuditRecordedNotice(
        audit_event_id=_id("AuditEvent", p["auditEventId"]),
        action=str(p["action"]),
        actor_type=str(p["actorType"]),
        actor_user_id=None if actor is None else _id("User", actor),
        target_type=p.get("targetType"),
        target_id=global_reference(p.get("targetType"), p.get("targetId")),
    )


_DETAILS: dict[NoticeType, Callable[[Mapping[str, Any]], Notice]] = {
    NoticeType.ALLOCATION_STATE_CHANGED: _allocation_state,
    NoticeType.ALLOCATION_LOW_BALANCE: _low_balance,
    NoticeType.ALLOCATION_STOPPED_BY_ADMIN: _stopped_by_admin,
    NoticeType.ALLOCATION_NODE_DRAINING: _node_draining,
    NoticeType.PAYMENT_SUCCEEDED: _payment(DomainPaymentStatus.SUCCEEDED),
    NoticeType.PAYMENT_FAILED: _payment(DomainPaymentStatus.FAILED),
    NoticeType.REFUND_SUCCEEDED: _refund(DomainRefundStatus.SUCCEEDED),
    NoticeType.REFUND_FAILED: _refund(DomainRefundStatus.FAILED),
    NoticeType.NODE_STATE_CHANGED: _node,
    NoticeType.NODE_ALERT: _node,
    NoticeType.AUDIT_RECORDED: _audit,
}


def details_of(kind: NoticeType, payload: Mapping[str, Any]) -> Notice:
    """The typed notice for a stored payload of this type (every type has one: a new
    NoticeType without an entry here fails tests/unit/test_one_language.py)."""
    return _DETAILS[kind](payload)
