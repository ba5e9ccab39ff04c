"""Refunds through Stripe's Refund API, asked for by an admin.

The refund row, its hold on the wallet, the idempotency key and the audit row commit together
before Stripe is called. Stripe is called with a key derived from our refund id; when the call
times out we look for the refund at Stripe before asking again, and a refund whose outcome is
still unknown is finished later by `settle_refunds`. So however often a step is retried, Stripe
makes one refund.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from domain.audit.records import RequestMeta, audit
from domain.errors import Conflict, InvalidInput, NotFound, Problem
from domain.idempotency import Keyed, check_key, once, request_hash
from domain.identity.principal import Principal
from domain.ledger import book
from domain.ledger.accounts import AccountKind
from domain.ledger.policy import LedgerPolicy
from domain.ledger.transfers import TransferCode
from domain.money import Money
from domain.payments.effects import move_refund
from domain.payments.errors import PaymentErrorCode
from domain.payments.gateway import GatewayRefund, GatewayRejected, GatewayUnavailable
from domain.payments.payments import PaymentStatus
from domain.payments.refunds import STRIPE_STATUS, Refund, RefundStatus
from domain.ports import NewRefund, PaymentGateway, UnitOfWork
from domain.retry import retrying

OPERATION = "refundPayment"
MAX_REASON = 500


def _check(amount: int, reason: str) -> str:
    problems = []
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        problems.append(Problem(PaymentErrorCode.INVALID_AMOUNT,
                                "The amount is a positive whole number of minor units.", "amount"))  # fmt: skip
    reason = reason.strip()
    if not reason or len(reason) > MAX_REASON:
        problems.append(Problem(PaymentErrorCode.INVALID_REASON,
                                f"Give a reason of 1 to {MAX_REASON} characters.", "reason"))  # fmt: skip
    if problems:
        raise InvalidInput(problems)
    return reason


async def refund_payment(
    uow: UnitOfWork, gateway: PaymentGateway, policy: LedgerPolicy, actor: Principal,
    meta: RequestMeta, payment_id: int, amount: int, reason: str, idempotency_key: str,
) -> Refund:  # fmt: skip
    owner = actor.user_id
    assert owner is not None, "refunds are asked for by a signed-in admin"
    reason = _check(amount, reason)
    key = check_key(idempotency_key)
    digest = request_hash(OPERATION, {"paymentId": payment_id, "amount": amount, "reason": reason})

    request = Keyed(owner, key, OPERATION, digest, "refund")

    async def claim() -> Refund:
        async with uow:
            refund, fresh = await once(
                uow, request, lambda: _open(uow, policy, actor, meta, payment_id, amount, reason),
                uow.payments.refund,
            )  # fmt: skip
            if fresh:
                await uow.commit()
            return refund

    refund = await retrying(claim)
    if refund.status is RefundStatus.PENDING:
        refund = await submit(uow, gateway, refund)
    return refund


async def _open(
    uow: UnitOfWork, policy: LedgerPolicy, actor: Principal, meta: RequestMeta, payment_id: int,
    amount: int, reason: str,
) -> Refund:  # fmt: skip
    payment = await uow.payments.get(payment_id, for_update=True)  # one refund decision at a time
    if payment is None:
        raise NotFound(Problem(PaymentErrorCode.PAYMENT_NOT_FOUND, "No such payment.", "paymentId"))
    if payment.status is not PaymentStatus.SUCCEEDED or payment.stripe_intent_id is None:
        raise Conflict(Problem(PaymentErrorCode.NOT_REFUNDABLE,
                               f"Payment {payment_id} is {payment.status.name}; only a SUCCEEDED "
                               "payment can be refunded.", "paymentId"))  # fmt: skip
    if amount > payment.refundable:
        raise Conflict(Problem(PaymentErrorCode.AMOUNT_EXCEEDS_REFUNDABLE,
                               f"At most {Money(payment.refundable, payment.currency)} of this payment can still be "
                               "refunded.", "amount"))  # fmt: skip
    now = datetime.now(UTC)
    hold = await book.open_hold(
        uow.ledger, policy, payment.user_id, AccountKind.REFUNDS_IN_FLIGHT, amount,
        payment.currency, code=TransferCode.REFUND, reference=f"payment:{payment.id}",
        ttl=policy.max_hold_ttl, now=now,
    )  # fmt: skip
    refund = await uow.payments.add_refund(NewRefund(payment.id, payment.user_id, amount,
                                                     payment.currency, reason, hold.id,
                                                     actor.user_id))  # fmt: skip
    await uow.payments.save(replace(payment, amount_refunded=payment.amount_refunded + amount,
                                    version=payment.version + 1))  # fmt: skip
    await uow.audit.append(audit(
        actor, meta, "billing.refund.requested", ("payment", payment.id),
        after={"refundId": refund.id, "amount": amount, "currency": payment.currency,
               "reason": reason, "userId": payment.user_id},
    ))  # fmt: skip
    return refund


async def submit(uow: UnitOfWork, gateway: PaymentGateway, refund: Refund) -> Refund:
    """Ask Stripe for a pending refund (again), safely: look before re-sending after a timeout.
    Leaves the refund pending when Stripe still cannot be reached."""
    async with uow:
        payment = await uow.payments.get(refund.payment_id)
    assert payment is not None and payment.stripe_intent_id is not None
    intent = payment.stripe_intent_id
    ref = str(refund.id)
    metadata = {"gpucloud_refund": ref, "gpucloud_payment": str(payment.id)}
    try:
        try:
            answer = await gateway.create_refund(intent, refund.amount,
                                                 idempotency_key=refund.idempotency_key,
                                                 metadata=metadata)  # fmt: skip
        except GatewayUnavailable:
            # Stripe may have made it before the answer was lost.
            answer = await gateway.find_refund(intent, ref) or await gateway.create_refund(
                intent, refund.amount, idempotency_key=refund.idempotency_key, metadata=metadata
            )
    except GatewayUnavailable:
        return refund
    except GatewayRejected as exc:
        return await settle(uow, refund.id, RefundStatus.FAILED, None, f"Stripe refused: {exc}")
    return await settle_from(uow, refund.id, answer)


async def settle_from(uow: UnitOfWork, refund_id: int, answer: GatewayRefund) -> Refund:
    to = STRIPE_STATUS.get(answer.status, RefundStatus.SUBMITTED)
    return await settle(uow, refund_id, to, answer.id, answer.failure_reason)


async def settle(
    uow: UnitOfWork, refund_id: int, to: RefundStatus, stripe_id: str | None,
    failure: str | None,
) -> Refund:  # fmt: skip
    async def attempt() -> Refund:
        async with uow:
            refund = await uow.payments.refund(refund_id, for_update=True)
            assert refund is not None
            moved = await move_refund(uow, refund, to, stripe_id=stripe_id, failure=failure)
            await uow.commit()
            return moved or refund

    return await retrying(attempt)


async def settle_refunds(
    uow: UnitOfWork, gateway: PaymentGateway, *, quiet_for: timedelta = timedelta(minutes=1),
    limit: int = 100,
) -> int:  # fmt: skip
    """Finish refunds whose outcome we do not know: ask Stripe where they stand. Run
    periodically; returns how many it looked at."""
    async with uow:
        waiting = await uow.payments.claim_unsettled_refunds(datetime.now(UTC) - quiet_for, limit)
    for refund in waiting:
        if refund.stripe_refund_id is None:
            await submit(uow, gateway, refund)
            continue
        try:
            answer = await gateway.retrieve_refund(refund.stripe_refund_id)
        except (GatewayUnavailable, GatewayRejected):
            continue
        await settle_from(uow, refund.id, answer)
    return len(waiting)
