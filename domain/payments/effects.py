"""What a payment's or a refund's move to a new status does to the ledger, inside the caller's
transaction. Webhooks, the refund mutation and the settling job all come through here, so the
money moves the same way whoever learns the news first."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from domain.events import DomainEvent
from domain.ledger import book
from domain.ledger.accounts import AccountKind, platform, wallet
from domain.ledger.holds import Capture, Void
from domain.ledger.transfers import Phase, TransferCode
from domain.notifications.notices import NoticeType
from domain.notifications.services import notify
from domain.payments.payments import Payment, PaymentStatus, advance
from domain.payments.refunds import UNSETTLED, Refund, RefundStatus
from domain.payments.refunds import advance as advance_refund
from domain.ports import UnitOfWork

BILLING_TOPIC = "billing"
# What the owner is told of (and not, e.g., of a payment still processing).
_PAYMENT_NOTICES = {PaymentStatus.SUCCEEDED: NoticeType.PAYMENT_SUCCEEDED,
                    PaymentStatus.FAILED: NoticeType.PAYMENT_FAILED}  # fmt: skip
_REFUND_NOTICES = {RefundStatus.SUCCEEDED: NoticeType.REFUND_SUCCEEDED,
                   RefundStatus.FAILED: NoticeType.REFUND_FAILED}  # fmt: skip


def _news(name: str, user_id: int, **ids: int) -> DomainEvent:
    return DomainEvent(topic=BILLING_TOPIC, name=name, payload={"userId": user_id, **ids})


async def move_payment(
    uow: UnitOfWork, payment: Payment, to: PaymentStatus, *, received: int | None = None,
    failure: str | None = None,
) -> Payment | None:  # fmt: skip
    """Advance a (locked) payment; on success credit the wallet once. None if not forward."""
    moved = advance(payment, to, received=received, failure=failure)
    if moved is None:
        return None
    if to is PaymentStatus.SUCCEEDED and moved.amount_received > 0:
        credit = await book.move(
            uow.ledger, platform(AccountKind.STRIPE_CLEARING, payment.currency),
            wallet(payment.user_id, payment.currency), moved.amount_received,
            TransferCode.TOP_UP, reference=f"payment:{payment.id}",
        )  # fmt: skip
        moved = replace(moved, credit_transfer_id=credit.id)
    saved = await uow.payments.save(moved)
    uow.record(_news(f"payment.{to}", payment.user_id, paymentId=payment.id))
    if to in _PAYMENT_NOTICES:
        await notify(uow, [payment.user_id], _PAYMENT_NOTICES[to], {
            "paymentId": payment.id, "amount": saved.amount_received or saved.amount,
            "currency": saved.currency})  # fmt: skip
    return saved


async def move_refund(
    uow: UnitOfWork, refund: Refund, to: RefundStatus, *, stripe_id: str | None = None,
    failure: str | None = None, now: datetime | None = None,
) -> Refund | None:  # fmt: skip
    """Advance a (locked) refund and settle its hold. None if not a forward move."""
    now = now or datetime.now(UTC)
    moved = advance_refund(refund, to, stripe_id=stripe_id, failure=failure)
    if moved is None:
        return None
    if refund.status in UNSETTLED and to is RefundStatus.SUCCEEDED:
        # The wallet pays the refund (the hold becomes posted), and the money leaves through
        # Stripe: refunds-in-flight hands it back to the clearing account.
        await book.act(uow.ledger, refund.hold_id, Capture(refund.amount, final=True), now)
        await book.move(
            uow.ledger, platform(AccountKind.REFUNDS_IN_FLIGHT, refund.currency),
            platform(AccountKind.STRIPE_CLEARING, refund.currency), refund.amount,
            TransferCode.REFUND, reference=refund.reference,
        )  # fmt: skip
    elif refund.status in UNSETTLED and to in (RefundStatus.FAILED, RefundStatus.CANCELED):
        await book.act(uow.ledger, refund.hold_id, Void(), now)
        await _release_refundable(uow, refund)
    elif refund.status is RefundStatus.SUCCEEDED and to is RefundStatus.FAILED:
        # Failed after it succeeded: the bank sent it back. Undo both legs, newest first.
        for transfer in reversed(await _refund_transfers(uow, refund)):
            await book.reverse(uow.ledger, transfer, f"refund {refund.id} failed after success")
        await _release_refundable(uow, refund)
    saved = await uow.payments.save_refund(moved)
    uow.record(
        _news(f"refund.{to}", refund.user_id, refundId=refund.id, paymentId=refund.payment_id)
    )
    if to in _REFUND_NOTICES:
        await notify(uow, [refund.user_id], _REFUND_NOTICES[to], {
            "refundId": refund.id, "paymentId": refund.payment_id, "amount": refund.amount,
            "currency": refund.currency})  # fmt: skip
    return saved


async def _release_refundable(uow: UnitOfWork, refund: Refund) -> None:
    payment = await uow.payments.get(refund.payment_id, for_update=True)
    assert payment is not None
    await uow.payments.save(
        replace(
            payment,
            amount_refunded=payment.amount_refunded - refund.amount,
            version=payment.version + 1,
        )
    )


async def _refund_transfers(uow: UnitOfWork, refund: Refund) -> list[int]:
    captured = [
        t.id
        for t in await uow.ledger.transfers_for(f"payment:{refund.payment_id}")
        if t.spec.hold_id == refund.hold_id and t.spec.phase is Phase.POST_PENDING
    ]
    settled = [
        t.id
        for t in await uow.ledger.transfers_for(refund.reference)
        if t.spec.code is TransferCode.REFUND
    ]
    return captured + settled  # fmt: skip
