"""Money over the API for tests: top up as a signed-in user, pay at localstripe as the buyer,
deliver Stripe's signed `payment_intent.succeeded`, and refund as an administrator."""

from __future__ import annotations

import uuid
from typing import Any

from httpx import AsyncClient

from domain.payments import queries
from schema.relay import from_global_id
from tests.conftest import WEBHOOK_SECRET
from tests.support import stripe_events
from tests.support.identity import Account
from tests.support.localstripe import LocalStripe

# Money fields as their minor units alone: `minor` turns each into its Int, so assertions read as
# numbers; tests of Money's own shape select all of it (tests/api/test_billing_api.py).
MINOR = "{ amountMinor }"
PAYMENT_FIELDS = (
    f"id amount {MINOR} currency status amountReceived {MINOR} "
    f"amountRefunded {MINOR} refundable {MINOR}"
)
ERROR_FIELDS = "... on BillingError { code message field problems { code message field } }"
TOP_UP = f"""mutation TopUp($amount: Int!, $currency: String!, $key: String!) {{
  createTopUp(input: {{amount: $amount, currency: $currency, idempotencyKey: $key}}) {{
    __typename ... on TopUpPayload {{ clientSecret checkoutUrl payment {{ {PAYMENT_FIELDS} }} }}
    {ERROR_FIELDS} }} }}"""
REFUND = f"""mutation Refund($payment: ID!, $amount: Int!, $reason: String!, $key: String!) {{
  refundPayment(input: {{paymentId: $payment, amount: $amount, reason: $reason,
                         idempotencyKey: $key}}) {{
    __typename
    ... on RefundPayload {{ refund {{ id amount {MINOR} currency status reason failureReason
                                      payment {{ {PAYMENT_FIELDS} }} }} }}
    {ERROR_FIELDS} }} }}"""


def minor(found: Any) -> Any:
    """`found` with every Money selected as `{ amountMinor }` replaced by that Int."""
    if isinstance(found, dict):
        if set(found) == {"amountMinor"}:
            return found["amountMinor"]
        return {k: minor(v) for k, v in found.items()}
    if isinstance(found, list):
        return [minor(v) for v in found]
    return found


def new_key() -> str:
    return f"test-{uuid.uuid4()}"


async def top_up(
    account: Account, amount: int = 2500, currency: str = "USD", key: str | None = None
) -> dict[str, Any]:
    """The createTopUp payload (or BillingError) as the account's session."""
    result = await account.gql(TOP_UP, {"amount": amount, "currency": currency,
                                        "key": new_key() if key is None else key})  # fmt: skip
    assert "errors" not in result, result
    return minor(result["data"]["createTopUp"])  # type: ignore[no-any-return]


async def succeed(
    uow: Any, localstripe: LocalStripe, client: AsyncClient, payment_gid: str
) -> dict[str, Any]:
    """The buyer pays at localstripe; Stripe's signed success event reaches the webhook.
    Returns the delivered event, so a test can deliver it again."""
    _, payment_id = from_global_id(payment_gid)
    payment = await queries.get_payment(uow(), payment_id)
    assert payment is not None and payment.stripe_intent_id is not None
    await localstripe.pay(payment.stripe_intent_id)
    event = stripe_events.payment_intent(
        "succeeded", intent_id=payment.stripe_intent_id, amount=payment.amount,
        currency=payment.currency,
        metadata={"gpucloud_payment": str(payment.id), "gpucloud_user": str(payment.user_id)},
    )  # fmt: skip
    await deliver(client, event)
    return event


async def deliver(client: AsyncClient, event: dict[str, Any]) -> str:
    response = await stripe_events.deliver(client, event, WEBHOOK_SECRET)
    assert response.status_code == 200, response.text
    return str(response.json()["outcome"])


async def paid_top_up(
    account: Account, uow: Any, localstripe: LocalStripe, client: AsyncClient, amount: int = 2500
) -> str:
    """A succeeded top-up of `account`; returns the payment's global ID."""
    made = await top_up(account, amount)
    assert made["__typename"] == "TopUpPayload", made
    gid = str(made["payment"]["id"])
    await succeed(uow, localstripe, client, gid)
    return gid


async def refund(
    admin: Account, payment_gid: str, amount: int, reason: str = "customer asked",
    key: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    result = await admin.gql(REFUND, {"payment": payment_gid, "amount": amount, "reason": reason,
                                      "key": new_key() if key is None else key})  # fmt: skip
    assert "errors" not in result, result
    return minor(result["data"]["refundPayment"])  # type: ignore[no-any-return]
