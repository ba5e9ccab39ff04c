"""The edge's translations into the API's language, without I/O: every notice type has typed
details, ledger references become global IDs, and messages quote the ID the client sent."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from domain.compute.allocations import AllocationState, StopReason
from domain.errors import NotFound, Problem
from domain.fleet.nodes import NodeState
from domain.ledger.errors import InsufficientFunds
from domain.money import Money as DomainMoney
from domain.notifications.notices import NoticeType
from domain.payments.payments import PaymentStatus
from domain.payments.refunds import RefundStatus
from schema.notification_details import (
    AllocationLowBalanceNotice,
    AllocationStateChangedNotice,
    AuditRecordedNotice,
    NodeNotice,
    PaymentNotice,
    RefundNotice,
    details_of,
)
from schema.references import global_reference, reference_id
from schema.relay import to_global_id
from schema.sent_ids import quoting, requote

# What each producer stores (domain/compute/changes.py, metering.py, payments/effects.py,
# fleet/changes.py, notifications/audit.py).
STORED = {
    NoticeType.ALLOCATION_STATE_CHANGED: {
        "allocationId": 8,
        "state": "running",
        "version": 4,
        "previous": "provisioning",
        "failure": None,
        "stopReason": None,
    },
    NoticeType.ALLOCATION_LOW_BALANCE: {"allocationId": 8, "stopsAt": "2026-01-02T03:04:05+00:00"},
    # domain/compute/operator.py and draining.py
    NoticeType.ALLOCATION_STOPPED_BY_ADMIN: {"allocationId": 8, "reason": "abuse report #12"},
    NoticeType.ALLOCATION_NODE_DRAINING: {
        "allocationId": 8,
        "stopsAt": "2026-01-02T03:04:05+00:00",
    },
    NoticeType.PAYMENT_SUCCEEDED: {"paymentId": 3, "amount": 2500, "currency": "USD"},
    NoticeType.PAYMENT_FAILED: {"paymentId": 3, "amount": 2500, "currency": "USD"},
    NoticeType.REFUND_SUCCEEDED: {"refundId": 5, "paymentId": 3, "amount": 999, "currency": "JPY"},
    NoticeType.REFUND_FAILED: {"refundId": 5, "paymentId": 3, "amount": 100, "currency": "USD"},
    NoticeType.NODE_STATE_CHANGED: {
        "nodeId": 2,
        "name": "gpu-1",
        "state": "cordoned",
        "previous": "ready",
        "reason": None,
    },
    NoticeType.NODE_ALERT: {
        "nodeId": 2,
        "name": "gpu-1",
        "state": "unreachable",
        "previous": "ready",
        "reason": "UNREACHABLE",
        "message": "gone",
    },
    NoticeType.AUDIT_RECORDED: {
        "auditEventId": 40,
        "action": "catalog.sku.added",
        "actorType": "user",
        "actorUserId": 1,
        "targetType": "sku",
        "targetId": "7",
    },
}


def test_every_notice_type_has_typed_details() -> None:
    assert set(STORED) == set(NoticeType)
    for kind, stored in STORED.items():
        assert details_of(kind, stored) is not None, kind


def test_details_carry_global_ids_enums_and_money() -> None:
    changed = details_of(
        NoticeType.ALLOCATION_STATE_CHANGED, STORED[NoticeType.ALLOCATION_STATE_CHANGED]
    )
    assert changed == AllocationStateChangedNotice(  # stopReason: see test_stop_reason_is_an_enum
        allocation_id=to_global_id("Allocation", 8),
        state=AllocationState.RUNNING,
        previous_state=AllocationState.PROVISIONING,
        version=4,
        failure=None,
        stop_reason=None,
    )
    low = details_of(NoticeType.ALLOCATION_LOW_BALANCE, STORED[NoticeType.ALLOCATION_LOW_BALANCE])
    assert low == AllocationLowBalanceNotice(
        allocation_id=to_global_id("Allocation", 8),
        stops_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    failed = details_of(NoticeType.PAYMENT_FAILED, STORED[NoticeType.PAYMENT_FAILED])
    assert isinstance(failed, PaymentNotice) and failed.payment_status is PaymentStatus.FAILED
    assert (failed.amount.amount_minor, failed.amount.domain.as_decimal()) == (
        2500,
        Decimal("25.00"),
    )
    yen = details_of(NoticeType.REFUND_SUCCEEDED, STORED[NoticeType.REFUND_SUCCEEDED])
    assert isinstance(yen, RefundNotice) and yen.refund_status is RefundStatus.SUCCEEDED
    assert (yen.refund_id, yen.payment_id) == (
        to_global_id("Refund", 5),
        to_global_id("Payment", 3),
    )
    assert (yen.amount.domain.exponent, yen.amount.domain.as_decimal()) == (0, Decimal("999"))
    alert = details_of(NoticeType.NODE_ALERT, STORED[NoticeType.NODE_ALERT])
    assert isinstance(alert, NodeNotice) and alert.node_id == to_global_id("FleetNode", 2)
    assert (alert.node_state, alert.previous_node_state) == (NodeState.UNREACHABLE, NodeState.READY)
    audited = details_of(NoticeType.AUDIT_RECORDED, STORED[NoticeType.AUDIT_RECORDED])
    assert audited == AuditRecordedNotice(
        audit_event_id=to_global_id("AuditEvent", 40),
        action="catalog.sku.added",
        actor_type="user",
        actor_user_id=to_global_id("User", 1),
        target_type="sku",
        target_id=to_global_id("Sku", 7),
    )


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("allocation:8", to_global_id("Allocation", 8)),
        ("payment:12", to_global_id("Payment", 12)),
        ("refund:5", to_global_id("Refund", 5)),
        ("user:3", to_global_id("User", 3)),
        ("volume:3", None),
        ("unattributed", None),
        ("allocation:x", None),
        (None, None),
    ],
)
def test_ledger_references_become_global_ids(reference: str | None, expected: str | None) -> None:
    assert reference_id(reference) == expected


def test_audit_targets_without_a_type_keep_no_id() -> None:
    assert global_reference("session", "abc") is None
    assert global_reference("node", "2") == to_global_id("FleetNode", 2)


def test_messages_quote_the_id_sent_and_only_on_its_field() -> None:
    sent = to_global_id("Sku", 99)
    with pytest.raises(NotFound) as caught, quoting(sent, 99, "skuId"):
        raise NotFound(
            [
                Problem("SKU_NOT_FOUND", "No SKU with id 99.", "skuId"),
                Problem("OTHER", "Field 99 of 99.", "other"),
            ]
        )
    assert [p.message for p in caught.value.problems] == [
        f"No SKU with id {sent}.",
        "Field 99 of 99.",
    ]
    decimal = NotFound(Problem("X", "Costs 99.5 now; id 99.", "id"))
    requote(decimal, "id", 99, "ID")
    assert decimal.problems[0].message == "Costs 99.5 now; id ID."


def test_money_reads_the_same_in_messages() -> None:
    assert str(DomainMoney(150050, "USD")) == "1500.50 USD"
    assert str(DomainMoney(-7, "USD")) == "-0.07 USD"
    assert str(DomainMoney(999, "JPY")) == "999 JPY"


def test_stop_reason_is_an_enum() -> None:
    stopped = details_of(
        NoticeType.ALLOCATION_STATE_CHANGED,
        {
            **STORED[NoticeType.ALLOCATION_STATE_CHANGED],
            "state": "stopping",
            "previous": "running",
            "stopReason": "balance",
        },
    )
    assert isinstance(stopped, AllocationStateChangedNotice)
    assert stopped.stop_reason is StopReason.BALANCE


def test_ledger_refusals_quote_money() -> None:
    short = InsufficientFunds(1, 300, 1250, "USD")
    assert (
        short.problems[0].message == "Not enough available balance: 3.00 USD available, "
        "12.50 USD needed."
    )
    assert InsufficientFunds().problems[0].message == "Not enough available balance."
