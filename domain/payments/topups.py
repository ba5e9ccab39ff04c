"""Top-ups: a user asks to add money; Stripe collects it; only a verified event credits it.

The payment row and the idempotency key are stored before Stripe is called, and Stripe is
called with a key derived from our payment id, so a retry after any failure continues the same
payment instead of starting a second one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from domain.errors import InvalidInput, Problem
from domain.idempotency import Keyed, check_key, once, request_hash
from domain.identity.principal import Principal
from domain.money import Money, is_known_currency
from domain.payments.errors import PaymentErrorCode, stripe_call
from domain.payments.payments import Payment, PaymentStatus
from domain.ports import PaymentGateway, UnitOfWork
from domain.retry import retrying

OPERATION = "createTopUp"


@dataclass(frozen=True)
class TopUpPolicy:
    currencies: frozenset[str] = frozenset({"USD"})
    min_amount: int = 500
    max_amount: int = 1_000_000
    # Stripe Checkout is offered when both are set.
    checkout_success_url: str | None = None
    checkout_cancel_url: str | None = None


@dataclass(frozen=True)
class TopUp:
    payment: Payment
    client_secret: str | None  # for Stripe Elements; never stored by us
    checkout_url: str | None


def _check(policy: TopUpPolicy, amount: int, currency: str) -> None:
    problems = []
    if currency not in policy.currencies:
        problems.append(Problem(PaymentErrorCode.UNSUPPORTED_CURRENCY,
                                f"Top-ups are taken in {', '.join(sorted(policy.currencies))}.",
                                "currency"))  # fmt: skip
    if isinstance(amount, bool) or not policy.min_amount <= amount <= policy.max_amount:
        bounds = (
            f"{policy.min_amount} to {policy.max_amount} minor units"
            if not is_known_currency(currency)
            else f"{Money(policy.min_amount, currency)} to {Money(policy.max_amount, currency)}"
        )
        problems.append(
            Problem(PaymentErrorCode.INVALID_AMOUNT, f"A top-up is {bounds}.", "amount")
        )
    if problems:
        raise InvalidInput(problems)


async def create_top_up(
    uow: UnitOfWork, gateway: PaymentGateway, policy: TopUpPolicy, principal: Principal,
    amount: int, currency: str, idempotency_key: str,
) -> TopUp:  # fmt: skip
    user_id = principal.user_id
    assert user_id is not None, "a top-up is made by a signed-in user"
    _check(policy, amount, currency)
    key = check_key(idempotency_key)
    digest = request_hash(OPERATION, {"amount": amount, "currency": currency})

    request = Keyed(user_id, key, OPERATION, digest, "payment")

    async def claim() -> Payment:
        async with uow:
            payment, fresh = await once(
                uow, request, lambda: uow.payments.add(user_id, amount, currency),
                uow.payments.get,
            )  # fmt: skip
            if fresh:
                await uow.commit()
            return payment

    payment = await retrying(claim)
    if payment.stripe_intent_id is not None:
        intent = await stripe_call(gateway.retrieve_payment_intent(payment.stripe_intent_id))
        return TopUp(payment, intent.client_secret, payment.checkout_url)
    return await _open_at_stripe(uow, gateway, policy, payment)


async def _open_at_stripe(
    uow: UnitOfWork, gateway: PaymentGateway, policy: TopUpPolicy, payment: Payment
) -> TopUp:
    metadata = {"gpucloud_payment": str(payment.id), "gpucloud_user": str(payment.user_id)}
    intent = await stripe_call(gateway.create_payment_intent(
        payment.amount, payment.currency, idempotency_key=f"gpucloud-topup-{payment.id}",
        metadata=metadata,
    ))  # fmt: skip
    checkout = None
    if policy.checkout_success_url and policy.checkout_cancel_url:
        checkout = await stripe_call(gateway.create_checkout_session(
            payment.amount, payment.currency, idempotency_key=f"gpucloud-checkout-{payment.id}",
            metadata=metadata, success_url=policy.checkout_success_url,
            cancel_url=policy.checkout_cancel_url,
        ))  # fmt: skip

    async def attach() -> Payment:
        async with uow:
            current = await uow.payments.get(payment.id, for_update=True)
            assert current is not None
            if current.stripe_intent_id is not None:  # a concurrent retry attached first
                return current
            status = current.status
            if status is PaymentStatus.PENDING:
                status = PaymentStatus.REQUIRES_PAYMENT
            attached = await uow.payments.save(replace(
                current, stripe_intent_id=intent.id, status=status,
                stripe_checkout_id=checkout.id if checkout else None,
                checkout_url=checkout.url if checkout else None, version=current.version + 1,
            ))  # fmt: skip
            await uow.commit()
            return attached

    attached = await retrying(attach)
    secret = intent.client_secret if attached.stripe_intent_id == intent.id else None
    return TopUp(attached, secret, attached.checkout_url)
