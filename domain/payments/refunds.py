"""Refunds: money sent back to the card through Stripe's Refund API, never an internal credit.

While Stripe works, the amount is held on the wallet (so it cannot be spent twice); success
captures the hold, failure or cancellation voids it, and a refund that fails after it
succeeded is undone by reversing transfers. Status only moves along `_EDGES`."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum


class RefundStatus(StrEnum):
    PENDING = "pending"  # ours exists and holds the money; Stripe's answer not known yet
    SUBMITTED = "submitted"  # Stripe accepted it and is processing
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


_EDGES: dict[RefundStatus, frozenset[RefundStatus]] = {
    RefundStatus.PENDING: frozenset(RefundStatus) - {RefundStatus.PENDING},
    RefundStatus.SUBMITTED: frozenset(
        {RefundStatus.SUCCEEDED, RefundStatus.FAILED, RefundStatus.CANCELED}),
    RefundStatus.SUCCEEDED: frozenset({RefundStatus.FAILED}),  # a bank can return it later
    RefundStatus.FAILED: frozenset(),
    RefundStatus.CANCELED: frozenset(),
}  # fmt: skip

STRIPE_STATUS: dict[str, RefundStatus] = {
    "pending": RefundStatus.SUBMITTED,
    "requires_action": RefundStatus.SUBMITTED,
    "succeeded": RefundStatus.SUCCEEDED,
    "failed": RefundStatus.FAILED,
    "canceled": RefundStatus.CANCELED,
}

UNSETTLED = (RefundStatus.PENDING, RefundStatus.SUBMITTED)


@dataclass(frozen=True, slots=True)
class Refund:
    id: int
    payment_id: int
    user_id: int
    amount: int
    currency: str
    reason: str
    status: RefundStatus
    stripe_refund_id: str | None
    hold_id: int
    failure_reason: str | None
    requested_by: int | None
    version: int
    created_at: datetime
    updated_at: datetime

    @property
    def idempotency_key(self) -> str:
        """Ours for Stripe: derived from our id, so every retry of this refund is one refund."""
        return f"gpucloud-refund-{self.id}"

    @property
    def reference(self) -> str:
        return f"refund:{self.id}"


def advance(
    refund: Refund, to: RefundStatus, *, stripe_id: str | None = None,
    failure: str | None = None,
) -> Refund | None:  # fmt: skip
    """The refund after moving to `to`, or None when that is not a forward move."""
    if to not in _EDGES[refund.status]:
        return None
    return replace(
        refund,
        status=to,
        stripe_refund_id=refund.stripe_refund_id or stripe_id,
        failure_reason=failure if to in (RefundStatus.FAILED, RefundStatus.CANCELED)
        else refund.failure_reason,
        version=refund.version + 1,
    )  # fmt: skip
