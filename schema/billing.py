"""Billing types: wallets, ledger entries, payments, refunds, statements, reconciliation issues,
and the billing area's inputs, payloads and error.

Every amount a client reads is `Money` (minor units, currency, exponent and the exact decimal),
as SKU prices and notifications show it; inputs take an Int of minor units (cents) with the
`currency` beside it. Money's `amountMinor` is GraphQL's 32-bit Int: top-up, refund and credit
amounts are bounded well inside it; a balance or a monthly sum past 2,147,483,647 minor units
would fail to serialize (a field error), never be truncated.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, cast

import strawberry

from domain.ledger.errors import LedgerErrorCode
from domain.ledger.services import Statement as DomainStatement
from domain.ledger.services import UsageLine as DomainUsageLine
from domain.ledger.services import WalletView
from domain.ledger.transfers import Entry
from domain.ledger.transfers import Phase as DomainPhase
from domain.ledger.transfers import TransferCode as DomainTransferCode
from domain.payments.errors import PaymentErrorCode
from domain.payments.findings import IssueKind
from domain.payments.findings import ReconciliationIssue as DomainIssue
from domain.payments.payments import Payment as DomainPayment
from domain.payments.payments import PaymentStatus as DomainPaymentStatus
from domain.payments.refunds import Refund as DomainRefund
from domain.payments.refunds import RefundStatus as DomainRefundStatus
from schema.errors import Error
from schema.money import Money
from schema.references import reference_id
from schema.relay import Connection, Node, to_global_id

TransferCode = strawberry.enum(DomainTransferCode, description="Which flow moved the money.")
TransferPhase = strawberry.enum(
    DomainPhase,
    name="TransferPhase",
    description="POSTED moves money; PENDING reserves it (a hold); POST_PENDING turns part of a "
    "hold into a movement; VOID_PENDING releases a hold.",
)
PaymentStatus = strawberry.enum(DomainPaymentStatus, description="Where a top-up stands.")
RefundStatus = strawberry.enum(DomainRefundStatus, description="Where a refund stands.")
ReconciliationIssueKind = strawberry.enum(
    IssueKind, name="ReconciliationIssueKind", description="How Stripe and our records differ."
)

# Every code the money services raise, from the domain's own lists (no copy to drift), plus
# INVALID_ID for a malformed or mistyped ID argument. The idempotency codes are ledger codes.
_CODES = dict.fromkeys(str(code) for code in [*LedgerErrorCode, *PaymentErrorCode, "INVALID_ID"])
BillingErrorCode = strawberry.enum(
    cast("type[StrEnum]", StrEnum("BillingErrorCode", {code: code for code in _CODES})),
    description="Why a billing request was refused.",
)


@strawberry.type(description="A wallet: a user's prepaid money in one currency.")
class Wallet:
    currency: str = strawberry.field(description="ISO 4217 code, e.g. USD.")
    balance: Money = strawberry.field(description="Posted money.")
    available: Money = strawberry.field(description="What may still be spent: balance - held.")
    held: Money = strawberry.field(description="Reserved by open holds (running work, refunds).")

    @classmethod
    def from_domain(cls, view: WalletView) -> Wallet:
        currency = view.currency
        return cls(
            currency=currency, balance=Money.of(view.balance, currency),
            available=Money.of(view.available, currency), held=Money.of(view.held, currency),
        )  # fmt: skip


@strawberry.type(description="One movement on a wallet, as the wallet sees it. Never changed.")
class LedgerEntry(Node):
    transfer_id: strawberry.ID = strawberry.field(
        description="The transfer this entry is of: the same global ID as `id`, since a wallet "
        "sees each transfer as one entry (a transfer has no type of its own).",
        deprecation_reason="Use `id`.",
    )
    code: TransferCode  # type: ignore[valid-type]
    phase: TransferPhase  # type: ignore[valid-type]
    amount: Money = strawberry.field(description="Signed: credits positive.")
    currency: str
    reference: strawberry.ID | None = strawberry.field(
        description="The global ID of what it was for (an Allocation, Payment, Refund or, for a "
        "credit, the User); `node(id:)` fetches it. Null when it names nothing this API has."
    )
    memo: str | None
    pending: bool = strawberry.field(
        description="A hold or its release: it reserves or frees money and moves none, so the "
        "posted entries alone sum to the balance."
    )
    created_at: datetime

    @classmethod
    def from_domain(cls, entry: Entry) -> LedgerEntry:
        transfer = entry.transfer
        spec = transfer.spec
        return cls(
            id=to_global_id("LedgerEntry", transfer.id),
            transfer_id=to_global_id("LedgerEntry", transfer.id),
            code=spec.code,
            phase=spec.phase,
            amount=Money.of(entry.amount, spec.currency),
            currency=spec.currency,
            reference=reference_id(spec.reference),
            memo=spec.memo,
            pending=entry.pending,
            created_at=transfer.created_at,
        )


@strawberry.type(description="A top-up: card money collected through Stripe into a wallet.")
class Payment(Node):
    amount: Money = strawberry.field(description="Asked for.")
    currency: str
    status: PaymentStatus  # type: ignore[valid-type]
    amount_received: Money = strawberry.field(description="Collected by Stripe and credited.")
    amount_refunded: Money = strawberry.field(description="Refunds asked for and not failed.")
    refundable: Money = strawberry.field(description="What may still be refunded.")
    checkout_url: str | None = strawberry.field(description="Stripe Checkout, when offered.")
    failure_reason: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_domain(cls, payment: DomainPayment) -> Payment:
        return cls(
            id=to_global_id("Payment", payment.id),
            amount=Money.of(payment.amount, payment.currency),
            currency=payment.currency,
            status=payment.status,
            amount_received=Money.of(payment.amount_received, payment.currency),
            amount_refunded=Money.of(payment.amount_refunded, payment.currency),
            refundable=Money.of(payment.refundable, payment.currency),
            checkout_url=payment.checkout_url,
            failure_reason=payment.failure_reason,
            created_at=payment.created_at,
            updated_at=payment.updated_at,
        )


async def _payment_of(root: Refund, info: strawberry.Info) -> Payment:
    found = await info.context.loaders.payment.load(root.payment_id)
    assert found is not None, "a refund's payment is never deleted"
    return Payment.from_domain(found)


@strawberry.type(description="Money sent back to the card of a payment through Stripe.")
class Refund(Node):
    amount: Money
    currency: str
    status: RefundStatus  # type: ignore[valid-type]
    reason: str
    failure_reason: str | None
    created_at: datetime
    updated_at: datetime
    payment_id: strawberry.Private[int]

    payment: Payment = strawberry.field(resolver=_payment_of, description="The payment refunded.")

    @classmethod
    def from_domain(cls, refund: DomainRefund) -> Refund:
        return cls(
            id=to_global_id("Refund", refund.id),
            amount=Money.of(refund.amount, refund.currency),
            currency=refund.currency,
            status=refund.status,
            reason=refund.reason,
            failure_reason=refund.failure_reason,
            created_at=refund.created_at,
            updated_at=refund.updated_at,
            payment_id=refund.payment_id,
        )


@strawberry.type(description="What one allocation cost in a month.")
class UsageLine:
    reference: strawberry.ID | None = strawberry.field(
        description="The global ID of what was used (an Allocation); null for usage that names "
        "nothing this API has."
    )
    amount: Money = strawberry.field(description="Charged.")

    @classmethod
    def from_domain(cls, line: DomainUsageLine, currency: str) -> UsageLine:
        return cls(reference=reference_id(line.reference), amount=Money.of(line.amount, currency))


@strawberry.type(description="One month of one wallet's posted movements, by flow.")
class Statement:
    month: str = strawberry.field(description="YYYY-MM, UTC.")
    currency: str
    top_ups: Money
    refunds: Money = strawberry.field(description="Sent back to the card.")
    credits: Money
    reversals: Money = strawberry.field(description="Signed: corrections either way.")
    usage_total: Money
    net: Money = strawberry.field(description="topUps + credits + reversals - refunds - usage.")
    usage: list[UsageLine]

    @classmethod
    def from_domain(cls, statement: DomainStatement) -> Statement:
        currency = statement.currency
        return cls(
            month=statement.month,
            currency=currency,
            top_ups=Money.of(statement.top_ups, currency),
            refunds=Money.of(statement.refunds, currency),
            credits=Money.of(statement.credits, currency),
            reversals=Money.of(statement.reversals, currency),
            usage_total=Money.of(statement.usage_total, currency),
            net=Money.of(statement.net, currency),
            usage=[UsageLine.from_domain(line, currency) for line in statement.usage],
        )


@strawberry.type(description="Where Stripe and our records disagree; for a person to resolve.")
class ReconciliationIssue(Node):
    kind: ReconciliationIssueKind  # type: ignore[valid-type]
    stripe_object_id: str
    payment_id: strawberry.ID | None
    refund_id: strawberry.ID | None
    expected: str | None
    actual: str | None
    detail: str
    detected_at: datetime

    @classmethod
    def from_domain(cls, issue: DomainIssue) -> ReconciliationIssue:
        f = issue.finding
        return cls(
            id=to_global_id("ReconciliationIssue", issue.id),
            kind=f.kind,
            stripe_object_id=f.stripe_object_id,
            payment_id=None if f.payment_id is None else to_global_id("Payment", f.payment_id),
            refund_id=None if f.refund_id is None else to_global_id("Refund", f.refund_id),
            expected=f.expected,
            actual=f.actual,
            detail=f.detail,
            detected_at=issue.detected_at,
        )


LedgerEntryConnection = Connection[LedgerEntry]
PaymentConnection = Connection[Payment]
RefundConnection = Connection[Refund]
ReconciliationIssueConnection = Connection[ReconciliationIssue]


@strawberry.input(description="Add money to your wallet by card.")
class CreateTopUpInput:
    amount: int = strawberry.field(description="Minor units, within the operator's bounds.")
    currency: str = strawberry.field(description="One the operator takes, e.g. USD.")
    idempotency_key: str = strawberry.field(
        description="Yours, 1-255 characters: the same key again answers with the same payment."
    )


@strawberry.input(description="Send part or all of a succeeded payment back to its card.")
class RefundPaymentInput:
    payment_id: strawberry.ID
    amount: int = strawberry.field(description="Minor units, at most the payment's refundable.")
    reason: str
    idempotency_key: str


@strawberry.input(description="Credit a user's wallet from the promotional account.")
class GrantCreditInput:
    user_id: strawberry.ID
    amount: int = strawberry.field(description="Minor units.")
    currency: str
    reason: str = strawberry.field(description="Kept in the audit log and on the entry.")
    idempotency_key: str


@strawberry.input(description="Set a wallet's hourly spend limit.")
class SetSpendLimitInput:
    user_id: strawberry.ID
    currency: str
    limit: int | None = strawberry.field(
        default=None, description="Minor units per rolling hour; null for the platform default."
    )


@strawberry.type
class TopUpPayload:
    payment: Payment
    client_secret: str | None = strawberry.field(
        description="For Stripe Elements to confirm the payment; we never store it."
    )
    checkout_url: str | None = strawberry.field(description="Stripe Checkout, when offered.")


@strawberry.type
class RefundPayload:
    refund: Refund


@strawberry.type
class CreditPayload:
    transfer_id: strawberry.ID = strawberry.field(
        description="The credit's LedgerEntry in the wallet: `node(id:)` fetches it."
    )
    wallet: Wallet = strawberry.field(description="The wallet credited, as it is now.")


@strawberry.type
class SpendLimitPayload:
    user_id: strawberry.ID
    currency: str
    limit: Money | None = strawberry.field(description="Null: the platform default applies.")


@strawberry.type(description="One problem with a billing request.")
class BillingProblem:
    code: BillingErrorCode  # type: ignore[valid-type]
    message: str
    field: str | None


@strawberry.type(description="A billing request was refused; `problems` lists every reason.")
class BillingError(Error):
    code: BillingErrorCode  # type: ignore[valid-type]
    problems: list[BillingProblem]


TopUpResult = Annotated[TopUpPayload | BillingError, strawberry.union("TopUpResult")]
RefundResult = Annotated[RefundPayload | BillingError, strawberry.union("RefundResult")]
CreditResult = Annotated[CreditPayload | BillingError, strawberry.union("CreditResult")]
SpendLimitResult = Annotated[SpendLimitPayload | BillingError, strawberry.union("SpendLimitResult")]
