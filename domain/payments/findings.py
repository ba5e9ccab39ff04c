"""Reconciliation findings: where Stripe and our ledger disagree. Recorded for a person to look
at; never fixed automatically, because the right fix depends on why they differ."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class IssueKind(StrEnum):
    MISSING_CREDIT = "missing_credit"  # Stripe took the money; the wallet was not credited
    CREDIT_WITHOUT_PAYMENT = "credit_without_payment"  # credited, but Stripe has no success
    AMOUNT_MISMATCH = "amount_mismatch"
    UNKNOWN_PAYMENT = "unknown_payment"  # a succeeded intent of ours we have no record of
    REFUND_OUTSIDE_PLATFORM = "refund_outside_platform"  # made in the Stripe dashboard
    REFUND_STATUS_MISMATCH = "refund_status_mismatch"
    UNDELIVERED_EVENT = "undelivered_event"  # Stripe sent it; we never applied it


@dataclass(frozen=True, slots=True)
class Finding:
    kind: IssueKind
    stripe_object_id: str
    detail: str
    payment_id: int | None = None
    refund_id: int | None = None
    expected: str | None = None
    actual: str | None = None


@dataclass(frozen=True, slots=True)
class ReconciliationIssue:
    id: int
    finding: Finding
    detected_at: datetime


def second_payment(intent_id: str, payment_id: int) -> Finding:
    """A top-up paid twice (its own intent and Checkout's): the second payment has no credit.
    The webhook and reconciliation both find it; `flag` records it once."""
    return Finding(IssueKind.MISSING_CREDIT, intent_id,
                   "A second payment was collected for a top-up already paid; it was not "
                   "credited.", payment_id=payment_id)  # fmt: skip
