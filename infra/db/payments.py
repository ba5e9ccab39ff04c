"""The payment repository: top-up payments and the refunds sent back against them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.pagination import Page, PageRequest
from domain.payments.payments import Payment, PaymentStatus
from domain.payments.refunds import UNSETTLED, Refund, RefundStatus
from domain.ports import NewRefund
from infra.db.money_tables import payments, refunds
from infra.db.paging import keyset_page


def _payment(row: Any) -> Payment:
    return Payment(id=row.id, user_id=row.user_id, amount=row.amount, currency=row.currency,
                   status=PaymentStatus(row.status), stripe_intent_id=row.stripe_intent_id,
                   stripe_checkout_id=row.stripe_checkout_id, checkout_url=row.checkout_url,
                   amount_received=row.amount_received, amount_refunded=row.amount_refunded,
                   credit_transfer_id=row.credit_transfer_id, failure_reason=row.failure_reason,
                   version=row.version, created_at=row.created_at,
                   updated_at=row.updated_at)  # fmt: skip


def _refund(row: Any) -> Refund:
    return Refund(id=row.id, payment_id=row.payment_id, user_id=row.user_id, amount=row.amount,
                  currency=row.currency, reason=row.reason, status=RefundStatus(row.status),
                  stripe_refund_id=row.stripe_refund_id, hold_id=row.hold_id,
                  failure_reason=row.failure_reason, requested_by=row.requested_by,
                  version=row.version, created_at=row.created_at,
                  updated_at=row.updated_at)  # fmt: skip


class SqlPaymentRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    # -- payments ---------------------------------------------------------------------------

    async def add(self, user_id: int, amount: int, currency: str) -> Payment:
        stmt = (
            insert(payments)
            .values(user_id=user_id, amount=amount, currency=currency)
            .returning(*payments.c)
        )
        return _payment((await self._conn.execute(stmt)).one())

    async def get(self, payment_id: int, *, for_update: bool = False) -> Payment | None:
        stmt = select(payments).where(payments.c.id == payment_id)
        if for_update:
            stmt = stmt.with_for_update()
        row = (await self._conn.execute(stmt)).first()
        return None if row is None else _payment(row)

    async def get_many(self, payment_ids: Sequence[int]) -> dict[int, Payment]:
        if not payment_ids:
            return {}
        stmt = select(payments).where(payments.c.id.in_(list(payment_ids)))
        return {row.id: _payment(row) for row in await self._conn.execute(stmt)}

    async def by_intent(self, intent_id: str, *, for_update: bool = False) -> Payment | None:
        stmt = select(payments).where(payments.c.stripe_intent_id == intent_id)
        if for_update:
            stmt = stmt.with_for_update()
        row = (await self._conn.execute(stmt)).first()
        return None if row is None else _payment(row)

    async def save(self, payment: Payment) -> Payment:
        stmt = (
            update(payments)
            .where(payments.c.id == payment.id)
            .values(
                status=str(payment.status),
                stripe_intent_id=payment.stripe_intent_id,
                stripe_checkout_id=payment.stripe_checkout_id,
                checkout_url=payment.checkout_url,
                amount_received=payment.amount_received,
                amount_refunded=payment.amount_refunded,
                credit_transfer_id=payment.credit_transfer_id,
                failure_reason=payment.failure_reason,
                version=payment.version,
                updated_at=func.now(),
            )
            .returning(*payments.c)
        )
        return _payment((await self._conn.execute(stmt)).one())

    async def of_user(self, user_id: int, page: PageRequest) -> Page[Payment]:
        stmt = select(payments).where(payments.c.user_id == user_id)
        return await keyset_page(self._conn, stmt, payments.c.id, page, _payment, descending=True)

    # -- refunds ----------------------------------------------------------------------------

    async def add_refund(self, refund: NewRefund) -> Refund:
        stmt = (
            insert(refunds)
            .values(
                payment_id=refund.payment_id,
                user_id=refund.user_id,
                amount=refund.amount,
                currency=refund.currency,
                reason=refund.reason,
                hold_id=refund.hold_id,
                requested_by=refund.requested_by,
            )
            .returning(*refunds.c)
        )
        return _refund((await self._conn.execute(stmt)).one())

    async def refund(self, refund_id: int, *, for_update: bool = False) -> Refund | None:
        stmt = select(refunds).where(refunds.c.id == refund_id)
        if for_update:
            stmt = stmt.with_for_update()
        row = (await self._conn.execute(stmt)).first()
        return None if row is None else _refund(row)

    async def refunds_by_id(self, refund_ids: Sequence[int]) -> dict[int, Refund]:
        if not refund_ids:
            return {}
        stmt = select(refunds).where(refunds.c.id.in_(list(refund_ids)))
        return {row.id: _refund(row) for row in await self._conn.execute(stmt)}

    async def refund_by_stripe_id(
        self, stripe_refund_id: str, *, for_update: bool = False
    ) -> Refund | None:
        stmt = select(refunds).where(refunds.c.stripe_refund_id == stripe_refund_id)
        if for_update:
            stmt = stmt.with_for_update()
        row = (await self._conn.execute(stmt)).first()
        return None if row is None else _refund(row)

    async def save_refund(self, refund: Refund) -> Refund:
        stmt = (
            update(refunds)
            .where(refunds.c.id == refund.id)
            .values(
                status=str(refund.status),
                stripe_refund_id=refund.stripe_refund_id,
                failure_reason=refund.failure_reason,
                version=refund.version,
                updated_at=func.now(),
            )
            .returning(*refunds.c)
        )
        return _refund((await self._conn.execute(stmt)).one())

    async def refunds_of_user(self, user_id: int, page: PageRequest) -> Page[Refund]:
        stmt = select(refunds).where(refunds.c.user_id == user_id)
        return await keyset_page(self._conn, stmt, refunds.c.id, page, _refund, descending=True)

    async def claim_unsettled_refunds(self, older_than: datetime, limit: int) -> Sequence[Refund]:
        r = refunds.c
        stmt = (
            select(refunds)
            .where(r.status.in_([str(s) for s in UNSETTLED]), r.updated_at <= older_than)
            .order_by(r.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [_refund(row) for row in await self._conn.execute(stmt)]
