"""Reconciliation: compare what Stripe says happened with our records and flag each difference.
It flags; it never fixes, because the right fix depends on why they differ."""

from __future__ import annotations

from datetime import datetime, timedelta

from domain.payments.findings import Finding, IssueKind, second_payment
from domain.payments.gateway import GatewayIntent, GatewayRefund
from domain.payments.payments import PaymentStatus
from domain.payments.refunds import STRIPE_STATUS, UNSETTLED, RefundStatus
from domain.ports import PaymentGateway, UnitOfWork

# Events we act on; one older than the grace period and not recorded was never applied.
APPLIED_TYPES = frozenset({"payment_intent.succeeded", "checkout.session.completed",
                           "refund.created", "refund.updated", "refund.failed",
                           "charge.refund.updated"})  # fmt: skip


def _ours(metadata: dict[str, str], name: str) -> int | None:
    value = metadata.get(name)
    return int(value) if value is not None and value.isdigit() else None


async def reconcile(
    uow: UnitOfWork, gateway: PaymentGateway, since: datetime, now: datetime,
    grace: timedelta = timedelta(minutes=10),
) -> list[Finding]:  # fmt: skip
    """Compare everything Stripe has since `since`; returns the findings new to this run."""
    intents = await gateway.payment_intents_since(since)
    refunds = await gateway.refunds_since(since)
    transactions = await gateway.balance_transactions_since(since)
    events = await gateway.events_since(since)
    findings: list[Finding] = []
    async with uow:
        for intent in intents:
            findings += await _check_intent(uow, intent)
        stripe_refunds = {r.id for r in refunds}
        for refund in refunds:
            findings += await _check_refund(uow, refund)
        for txn in transactions:
            # A refund's money left Stripe, and neither Stripe's refund list nor ours has it.
            if (
                txn.type == "refund"
                and txn.source
                and txn.source not in stripe_refunds
                and await uow.payments.refund_by_stripe_id(txn.source) is None
            ):
                findings.append(Finding(IssueKind.REFUND_OUTSIDE_PLATFORM, txn.source,
                                            "A refund's balance transaction has no refund of "
                                            "ours.", actual=f"{txn.amount} {txn.currency}"))  # fmt: skip
        settled = [e for e in events if e.type in APPLIED_TYPES and e.created <= now - grace]
        known = await uow.stripe.known_events([e.id for e in settled])
        for event in settled:
            if event.id not in known:
                findings.append(Finding(IssueKind.UNDELIVERED_EVENT, event.id,
                                        f"Stripe sent {event.type} and it was never applied."))  # fmt: skip
        new = [f for f in findings if await uow.stripe.flag(f)]
        await uow.commit()
    return new


async def _check_intent(uow: UnitOfWork, intent: GatewayIntent) -> list[Finding]:
    ours = _ours(intent.metadata, "gpucloud_payment")
    payment = await uow.payments.by_intent(intent.id)
    if payment is None and ours is not None:
        payment = await uow.payments.get(ours)
    succeeded = intent.status == "succeeded"
    if payment is not None and payment.stripe_intent_id not in (None, intent.id):
        # Another way to pay the same top-up (Elements' intent beside Checkout's): unused, it is
        # no concern; paid as well, it is money nobody credited.
        if not succeeded:
            return []
        return [second_payment(intent.id, payment.id)]
    if payment is None:
        if succeeded and ours is not None:
            return [Finding(IssueKind.UNKNOWN_PAYMENT, intent.id,
                            "Stripe collected a payment of ours that we have no record of.",
                            actual=f"{intent.amount_received} {intent.currency}")]  # fmt: skip
        return []
    if succeeded and payment.status is not PaymentStatus.SUCCEEDED:
        return [Finding(IssueKind.MISSING_CREDIT, intent.id,
                        "Stripe collected the money; the wallet was not credited.",
                        payment_id=payment.id, expected="succeeded",
                        actual=str(payment.status))]  # fmt: skip
    if not succeeded and payment.status is PaymentStatus.SUCCEEDED:
        return [Finding(IssueKind.CREDIT_WITHOUT_PAYMENT, intent.id,
                        "The wallet was credited but Stripe shows no successful payment.",
                        payment_id=payment.id, expected=intent.status,
                        actual="succeeded")]  # fmt: skip
    if succeeded and intent.amount_received != payment.amount_received:
        return [Finding(IssueKind.AMOUNT_MISMATCH, intent.id,
                        "Stripe collected a different amount than we credited.",
                        payment_id=payment.id, expected=str(intent.amount_received),
                        actual=str(payment.amount_received))]  # fmt: skip
    return []


async def _check_refund(uow: UnitOfWork, stripe_refund: GatewayRefund) -> list[Finding]:
    refund = await uow.payments.refund_by_stripe_id(stripe_refund.id)
    ours = _ours(stripe_refund.metadata, "gpucloud_refund")
    if refund is None and ours is not None:
        refund = await uow.payments.refund(ours)
    if refund is None:
        return [Finding(IssueKind.REFUND_OUTSIDE_PLATFORM, stripe_refund.id,
                        "A refund was made at Stripe, not through the platform.",
                        actual=f"{stripe_refund.amount} {stripe_refund.currency}")]  # fmt: skip
    theirs = STRIPE_STATUS.get(stripe_refund.status, RefundStatus.SUBMITTED)
    in_flight = theirs is RefundStatus.SUBMITTED and refund.status in UNSETTLED
    if theirs is not refund.status and not in_flight:
        return [Finding(IssueKind.REFUND_STATUS_MISMATCH, stripe_refund.id,
                        "Stripe and the platform disagree on this refund's status.",
                        refund_id=refund.id, expected=str(theirs),
                        actual=str(refund.status))]  # fmt: skip
    if stripe_refund.amount != refund.amount:
        return [Finding(IssueKind.AMOUNT_MISMATCH, stripe_refund.id,
                        "Stripe refunded a different amount than we recorded.",
                        refund_id=refund.id, expected=str(stripe_refund.amount),
                        actual=str(refund.amount))]  # fmt: skip
    return []
