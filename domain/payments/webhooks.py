"""Applying verified Stripe events. Each event id is recorded in the same transaction as its
effect, first, so concurrent deliveries of one event queue on its row and all but one find it
already there. Events may come late, twice or out of order: statuses only move forward, so a
stale one changes nothing."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from domain.payments.effects import move_payment, move_refund
from domain.payments.findings import Finding, IssueKind, second_payment
from domain.payments.gateway import GatewayEvent
from domain.payments.payments import Payment, PaymentStatus
from domain.payments.refunds import STRIPE_STATUS
from domain.ports import UnitOfWork
from domain.retry import retrying

_INTENT_EVENTS: dict[str, PaymentStatus] = {
    "payment_intent.succeeded": PaymentStatus.SUCCEEDED,
    "payment_intent.processing": PaymentStatus.PROCESSING,
    "payment_intent.payment_failed": PaymentStatus.FAILED,
    "payment_intent.canceled": PaymentStatus.CANCELED,
    "payment_intent.requires_action": PaymentStatus.REQUIRES_PAYMENT,
}
_REFUND_EVENTS = frozenset({"refund.created", "refund.updated", "refund.failed",
                            "charge.refund.updated"})  # fmt: skip
_CHECKOUT_EVENTS = frozenset({"checkout.session.completed",
                              "checkout.session.async_payment_succeeded",
                              "checkout.session.async_payment_failed"})  # fmt: skip


def _our_id(obj: dict[str, Any], name: str) -> int | None:
    value = (obj.get("metadata") or {}).get(name)
    return int(value) if isinstance(value, str) and value.isdigit() else None


async def apply_event(uow: UnitOfWork, event: GatewayEvent) -> str:
    """Apply one event; returns what happened (for the log): applied, stale, ignored, flagged
    or duplicate."""

    async def attempt() -> str:
        async with uow:
            if not await uow.stripe.record_event(event.id, event.type, event.created, "received"):
                return "duplicate"
            outcome = await _apply(uow, event)
            await uow.stripe.note_outcome(event.id, outcome)
            await uow.commit()
            return outcome

    return await retrying(attempt)


async def _apply(uow: UnitOfWork, event: GatewayEvent) -> str:
    obj = event.object
    if event.type in _INTENT_EVENTS:
        return await _on_intent(uow, obj, _INTENT_EVENTS[event.type])
    if event.type in _CHECKOUT_EVENTS:
        return await _on_checkout(uow, event.type, obj)
    if event.type in _REFUND_EVENTS:
        return await _on_refund(uow, obj)
    if event.type == "charge.refunded":
        refunds = (obj.get("refunds") or {}).get("data") or []
        outcomes = [await _on_refund(uow, r) for r in refunds if isinstance(r, dict)]
        return "applied" if "applied" in outcomes else "ignored"
    return "ignored"


async def _payment_for(
    uow: UnitOfWork, obj: dict[str, Any], intent_id: str | None
) -> Payment | None:
    ours = _our_id(obj, "gpucloud_payment")
    if ours is not None:
        return await uow.payments.get(ours, for_update=True)
    return await uow.payments.by_intent(intent_id, for_update=True) if intent_id else None


async def _on_intent(uow: UnitOfWork, obj: dict[str, Any], to: PaymentStatus) -> str:
    intent_id = obj.get("id")
    payment = await _payment_for(uow, obj, intent_id)
    if payment is None:
        return await _unknown(uow, obj, intent_id)
    received = None
    if to is PaymentStatus.SUCCEEDED:  # a failed or processing intent has received nothing
        paid = await _paid_through(uow, payment, intent_id)
        if paid is None:
            return "flagged"
        payment = paid
        received = await _received(uow, payment, str(intent_id), obj.get("currency"),
                                   obj.get("amount_received") or obj.get("amount"))  # fmt: skip
        if received is None:
            return "flagged"
    error = obj.get("last_payment_error") or {}
    moved = await move_payment(uow, payment, to, received=received,
                               failure=error.get("message") if isinstance(error, dict) else None)  # fmt: skip
    return "applied" if moved else "stale"


async def _on_checkout(uow: UnitOfWork, event_type: str, obj: dict[str, Any]) -> str:
    payment = await _payment_for(uow, obj, obj.get("payment_intent"))
    if payment is None:
        return await _unknown(uow, obj, obj.get("id"))
    paid = obj.get("payment_status") == "paid"
    if event_type.endswith("async_payment_failed"):
        to = PaymentStatus.FAILED
    else:
        to = PaymentStatus.SUCCEEDED if paid else PaymentStatus.PROCESSING
    received = None
    if to is PaymentStatus.SUCCEEDED:
        paid = await _paid_through(uow, payment, obj.get("payment_intent"))
        if paid is None:
            return "flagged"
        payment = paid
        received = await _received(uow, payment, str(obj.get("id")), obj.get("currency"),
                                   obj.get("amount_total"))  # fmt: skip
        if received is None:
            return "flagged"
    moved = await move_payment(uow, payment, to, received=received)
    return "applied" if moved else "stale"


async def _paid_through(uow: UnitOfWork, payment: Payment, intent_id: object) -> Payment | None:
    """A top-up can be paid two ways (its own intent, or Checkout's); the intent that succeeds
    is the one refunds must go through, so it is recorded. A second success for a top-up that
    is already paid is money we did not credit: it is flagged, and None is returned."""
    if not isinstance(intent_id, str) or intent_id == payment.stripe_intent_id:
        return payment
    if payment.status is PaymentStatus.SUCCEEDED:
        await uow.stripe.flag(second_payment(intent_id, payment.id))
        return None
    return replace(payment, stripe_intent_id=intent_id)


async def _received(
    uow: UnitOfWork, payment: Payment, object_id: str, currency: object, amount: object
) -> int | None:
    """What Stripe says it collected, checked against what we asked for: a different amount is
    credited and flagged; another currency (or no amount at all) is flagged and not credited."""
    if str(currency or "").upper() != payment.currency or not isinstance(amount, int):
        await uow.stripe.flag(Finding(IssueKind.AMOUNT_MISMATCH, object_id,
                                      "Stripe reports another currency or no amount; nothing "
                                      "was credited.", payment_id=payment.id,
                                      expected=f"{payment.amount} {payment.currency}",
                                      actual=f"{amount} {currency}"))  # fmt: skip
        return None
    if amount != payment.amount:
        await uow.stripe.flag(Finding(IssueKind.AMOUNT_MISMATCH, object_id,
                                      "Stripe collected a different amount; that amount was "
                                      "credited.", payment_id=payment.id,
                                      expected=str(payment.amount), actual=str(amount)))  # fmt: skip
    return amount


async def _on_refund(uow: UnitOfWork, obj: dict[str, Any]) -> str:
    stripe_id = str(obj.get("id"))
    ours = _our_id(obj, "gpucloud_refund")
    refund = await (uow.payments.refund(ours, for_update=True) if ours is not None
                    else uow.payments.refund_by_stripe_id(stripe_id, for_update=True))  # fmt: skip
    if refund is None:
        await uow.stripe.flag(Finding(IssueKind.REFUND_OUTSIDE_PLATFORM, stripe_id,
                                      "A refund was made at Stripe, not through the platform.",
                                      actual=f"{obj.get('amount')} {obj.get('currency')}"))  # fmt: skip
        return "flagged"
    to = STRIPE_STATUS.get(str(obj.get("status")))
    if to is None:
        return "ignored"
    moved = await move_refund(uow, refund, to, stripe_id=stripe_id,
                              failure=obj.get("failure_reason"))  # fmt: skip
    return "applied" if moved else "stale"


async def _unknown(uow: UnitOfWork, obj: dict[str, Any], object_id: object) -> str:
    if _our_id(obj, "gpucloud_payment") is None:
        return "ignored"  # not one of ours (another product on the same Stripe account)
    await uow.stripe.flag(Finding(IssueKind.UNKNOWN_PAYMENT, str(object_id),
                                  "Stripe names a payment of ours that we have no record of."))  # fmt: skip
    return "flagged"
