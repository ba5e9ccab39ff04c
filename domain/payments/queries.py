"""Reading payments, refunds and reconciliation findings: one transaction each, nothing written.

Who may read what is decided at the edge (the owner or an administrator); these only fetch.
"""

from __future__ import annotations

from domain.pagination import Page, PageRequest
from domain.payments.findings import ReconciliationIssue
from domain.payments.payments import Payment
from domain.payments.refunds import Refund
from domain.ports import UnitOfWork


async def list_payments(uow: UnitOfWork, user_id: int, page: PageRequest) -> Page[Payment]:
    """A user's top-up payments, newest first."""
    async with uow:
        return await uow.payments.of_user(user_id, page)


async def list_refunds(uow: UnitOfWork, user_id: int, page: PageRequest) -> Page[Refund]:
    """Refunds of a user's payments, newest first."""
    async with uow:
        return await uow.payments.refunds_of_user(user_id, page)


async def get_payment(uow: UnitOfWork, payment_id: int) -> Payment | None:
    async with uow:
        return await uow.payments.get(payment_id)


async def get_refund(uow: UnitOfWork, refund_id: int) -> Refund | None:
    async with uow:
        return await uow.payments.refund(refund_id)


async def list_issues(uow: UnitOfWork, page: PageRequest) -> Page[ReconciliationIssue]:
    """Where Stripe and our records disagree, newest first."""
    async with uow:
        return await uow.stripe.issues(page)
