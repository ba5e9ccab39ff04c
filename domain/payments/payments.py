"""Top-up payments: our record of a Stripe PaymentIntent, and the only way a wallet gains card
money. Status only moves forward along `_EDGES`, so a late or repeated event cannot undo a
credit; the credit itself is written by the move into SUCCEEDED, which happens once."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum


class PaymentStatus(StrEnum):
    PENDING = "pending"  # ours exists; Stripe's intent not made yet
    REQUIRES_PAYMENT = "requires_payment"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the last attempt failed; the buyer may try again
    CANCELED = "canceled"


_EDGES: dict[PaymentStatus, frozenset[PaymentStatus]] = {
    PaymentStatus.PENDING: frozenset(PaymentStatus) - {PaymentStatus.PENDING},
    PaymentStatus.REQUIRES_PAYMENT: frozenset(
        {PaymentStatus.PROCESSING, PaymentStatus.SUCCEEDED, PaymentStatus.FAILED,
         PaymentStatus.CANCELED}),
    PaymentStatus.PROCESSING: frozenset(
        {PaymentStatus.SUCCEEDED, PaymentStatus.FAILED, PaymentStatus.CANCELED}),
    PaymentStatus.FAILED: frozenset(
        {PaymentStatus.PROCESSING, PaymentStatus.SUCCEEDED, PaymentStatus.CANCELED}),
    PaymentStatus.SUCCEEDED: frozenset(),
    PaymentStatus.CANCELED: frozenset(),
}  # fmt: skip

# Stripe's PaymentIntent statuses, in our words.
INTENT_STATUS: dict[str, PaymentStatus] = {
    "requires_payment_method": PaymentStatus.REQUIRES_PAYMENT,
    "requires_confirmation": PaymentStatus.REQUIRES_PAYMENT,
    "requires_action": PaymentStatus.REQUIRES_PAYMENT,
    "requires_capture": PaymentStatus.PROCESSING,
    "processing": PaymentStatus.PROCESSING,
    "succeeded": PaymentStatus.SUCCEEDED,
    "canceled": PaymentStatus.CANCELED,
}


@dataclass(frozen=True, slots=True)
class Payment:
    id: int
    user_id: int
    amount: int
    currency: str
    status: PaymentStatus
    stripe_intent_id: str | None
    stripe_checkout_id: str | None
    checkout_url: str | None
    amount_received: int
    amount_refunded: int  # refunds asked for and not failed: what is no longer refundable
    credit_transfer_id: int | None
    failure_reason: str | None
    version: int
    created_at: datetime
    updated_at: datetime

    @property
    def refundable(self) -> int:
        return (
            self.amount_received - self.amount_refunded
            if self.status is PaymentStatus.SUCCEEDED
            else 0
        )


def advance(
    payment: Payment, to: PaymentStatus, *, received: int | None = None,
    failure: str | None = None,
) -> Payment | None:  # fmt: skip
    """The payment after moving to `to`, or None when that is not a forward move (a stale,
    repeated or out-of-order report), which callers ignore."""
    if to not in _EDGES[payment.status]:
        return None
    return replace(
        payment,
        status=to,
        amount_received=payment.amount if received is None and to is PaymentStatus.SUCCEEDED
        else (received or payment.amount_received),
        failure_reason=failure if to is PaymentStatus.FAILED else payment.failure_reason,
        version=payment.version + 1,
    )  # fmt: skip
