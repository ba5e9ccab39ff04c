"""Billing resolvers: a user's money (read through loaders by the fields of User), top-ups,
and the administrators' refunds, credits, spend limits and reconciliation issues."""

from __future__ import annotations

from strawberry import Info

from domain.errors import DomainError, ServiceUnavailable
from domain.ledger import services as ledger
from domain.ledger.services import Statement, WalletView
from domain.ledger.transfers import Entry
from domain.pagination import Page, PageRequest
from domain.payments import queries, refunding, topups
from domain.payments.kit import MoneyKit
from domain.payments.payments import Payment as DomainPayment
from domain.payments.refunds import Refund as DomainRefund
from domain.ports import UnitOfWork
from schema.billing import (
    BillingError,
    BillingProblem,
    CreateTopUpInput,
    CreditPayload,
    GrantCreditInput,
    Payment,
    ReconciliationIssue,
    ReconciliationIssueConnection,
    Refund,
    RefundPayload,
    RefundPaymentInput,
    SetSpendLimitInput,
    SpendLimitPayload,
    TopUpPayload,
    Wallet,
)
from schema.context import AppContext
from schema.errors import typed_error
from schema.money import Money
from schema.relay import After, Before, First, Last, expect_global_id, to_global_id
from schema.sent_ids import quoting

# --- A user's money: what the fields of User read, one domain read per (user, arguments) key,
# through the request's loaders (resolvers.loaders) --------------------------------------------


async def wallet(tx: UnitOfWork, key: tuple[int, str]) -> WalletView:
    user_id, currency = key
    return await ledger.wallet_view(tx, user_id, currency)


async def wallets(tx: UnitOfWork, user_id: int) -> list[WalletView]:
    return await ledger.wallets(tx, user_id)


async def ledger_entries(tx: UnitOfWork, key: tuple[int, PageRequest]) -> Page[Entry]:
    return await ledger.entries(tx, *key)


async def payments(tx: UnitOfWork, key: tuple[int, PageRequest]) -> Page[DomainPayment]:
    return await queries.list_payments(tx, *key)


async def refunds(tx: UnitOfWork, key: tuple[int, PageRequest]) -> Page[DomainRefund]:
    return await queries.list_refunds(tx, *key)


async def statements(tx: UnitOfWork, key: tuple[int, int]) -> list[Statement]:
    return await ledger.statements(tx, *key)


# --- Mutations ------------------------------------------------------------------------------


def billing_error(exc: DomainError) -> BillingError:
    return typed_error(exc, BillingError, BillingProblem)


def _money(info: Info[AppContext, None]) -> MoneyKit:
    if info.context.money is None:
        raise ServiceUnavailable("payment service")
    return info.context.money


async def create_top_up(
    info: Info[AppContext, None],
    input: CreateTopUpInput,  # noqa: A002
) -> TopUpPayload | BillingError:
    ctx = info.context
    kit = _money(info)
    try:
        made = await topups.create_top_up(
            ctx.uow(), kit.gateway, kit.topups, ctx.principal, input.amount, input.currency,
            input.idempotency_key,
        )  # fmt: skip
    except DomainError as exc:
        return billing_error(exc)
    return TopUpPayload(
        payment=Payment.from_domain(made.payment),
        client_secret=made.client_secret,
        checkout_url=made.checkout_url,
    )


async def refund_payment(
    info: Info[AppContext, None],
    input: RefundPaymentInput,  # noqa: A002
) -> RefundPayload | BillingError:
    ctx = info.context
    kit = _money(info)
    try:
        payment_id = expect_global_id(input.payment_id, "Payment", "paymentId")
        with quoting(input.payment_id, payment_id, "paymentId"):
            refund = await refunding.refund_payment(
                ctx.uow(),
                kit.gateway,
                kit.ledger,
                ctx.principal,
                ctx.meta,
                payment_id,
                input.amount,
                input.reason,
                input.idempotency_key,
            )
    except DomainError as exc:
        return billing_error(exc)
    ctx.loaders.payment.clear_all()  # a refundable amount changed: read payments afresh
    return RefundPayload(refund=Refund.from_domain(refund))


async def grant_credit(
    info: Info[AppContext, None],
    input: GrantCreditInput,  # noqa: A002
) -> CreditPayload | BillingError:
    ctx = info.context
    try:
        user_id = expect_global_id(input.user_id, "User", "userId")
        transfer = await ledger.grant_credit(
            ctx.uow(), ctx.principal, ctx.meta, user_id, input.amount, input.currency,
            input.reason, input.idempotency_key,
        )  # fmt: skip
        credited = await ledger.wallet_view(ctx.uow(), user_id, input.currency)
    except DomainError as exc:
        return billing_error(exc)
    return CreditPayload(
        transfer_id=to_global_id("LedgerEntry", transfer.id), wallet=Wallet.from_domain(credited)
    )


async def set_spend_limit(
    info: Info[AppContext, None],
    input: SetSpendLimitInput,  # noqa: A002
) -> SpendLimitPayload | BillingError:
    ctx = info.context
    try:
        user_id = expect_global_id(input.user_id, "User", "userId")
        await ledger.set_spend_limit(
            ctx.uow(), ctx.principal, ctx.meta, user_id, input.currency, input.limit
        )
    except DomainError as exc:
        return billing_error(exc)
    limit = None if input.limit is None else Money.of(input.limit, input.currency)
    return SpendLimitPayload(
        user_id=to_global_id("User", user_id), currency=input.currency, limit=limit
    )


# --- Administration -------------------------------------------------------------------------


async def reconciliation_issues(
    info: Info[AppContext, None],
    first: First = None,
    after: After = None,
    last: Last = None,
    before: Before = None,
) -> ReconciliationIssueConnection:
    page = await queries.list_issues(
        info.context.uow(), PageRequest.parse(first, after, last, before)
    )
    return ReconciliationIssueConnection.from_page(page, ReconciliationIssue.from_domain)
