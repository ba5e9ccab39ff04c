"""`PaymentGateway` over the stripe SDK's async `StripeClient` (v16: `client.v1.<resource>`).

Every call goes through `_translated`, so the domain only ever sees `GatewayUnavailable`
(outcome unknown: retry with the same idempotency key, or look the object up) or
`GatewayRejected` (not done). The SDK's own retries are off: a retry is the caller's decision,
made with the caller's idempotency key. Messages never carry the API key.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import aclosing, contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import stripe

from domain.payments.gateway import (
    GatewayBalanceTransaction,
    GatewayCheckout,
    GatewayError,
    GatewayEvent,
    GatewayIntent,
    GatewayRefund,
    GatewayRejected,
    GatewayUnavailable,
)

T = TypeVar("T")
PAGE_SIZE = 100  # Stripe's largest page
REFUND_REF_KEY = "gpucloud_refund"
TOP_UP_NAME = "Account top-up"
# Statuses where repeating the same request later can succeed: rate limit and an idempotency
# key still in flight on Stripe's side. They read as "not now", not as "never".
RETRYABLE_4XX = frozenset({409, 429})


class StripeGateway:
    def __init__(
        self,
        api_key: str,
        api_base: str | None,
        timeout_seconds: float,
        *,
        stand_in: bool | None = None,
    ) -> None:
        self._http = stripe.HTTPXClient(timeout=timeout_seconds)
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base} if api_base else None,
            http_client=self._http,
            max_network_retries=0,
        )
        # localstripe speaks an older dialect (see `_card_only`, `_list_params`). By default any
        # base but Stripe's is taken to be localstripe; tests of the real dialect say otherwise.
        self._stand_in = api_base is not None if stand_in is None else stand_in

    async def aclose(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]  # untyped in the SDK

    # -- payments ---------------------------------------------------------------------

    async def create_payment_intent(
        self, amount: int, currency: str, *, idempotency_key: str, metadata: dict[str, str]
    ) -> GatewayIntent:
        params: Any = {"amount": amount, "currency": currency.lower(), "metadata": metadata}
        params.update(self._card_only())
        with _translated("create payment intent"):
            intent = await self._client.v1.payment_intents.create_async(
                params, options={"idempotency_key": idempotency_key}
            )
        return _intent(intent.to_dict())

    async def create_checkout_session(
        self, amount: int, currency: str, *, idempotency_key: str, metadata: dict[str, str],
        success_url: str, cancel_url: str,
    ) -> GatewayCheckout:  # fmt: skip
        with _translated("create checkout session"):
            session = await self._client.v1.checkout.sessions.create_async(
                {
                    "mode": "payment",
                    "line_items": [
                        {
                            "quantity": 1,
                            "price_data": {
                                "currency": currency.lower(),
                                "unit_amount": amount,
                                "product_data": {"name": TOP_UP_NAME},
                            },
                        }
                    ],
                    "metadata": metadata,
                    # So the PaymentIntent (and its webhooks) carries our references too.
                    "payment_intent_data": {"metadata": metadata},
                    "success_url": success_url,
                    "cancel_url": cancel_url,
                },
                options={"idempotency_key": idempotency_key},
            )
        data = session.to_dict()
        return GatewayCheckout(
            id=data["id"],
            url=data.get("url") or "",
            payment_intent=_ref(data.get("payment_intent")),
        )

    async def retrieve_payment_intent(self, intent_id: str) -> GatewayIntent:
        with _translated("retrieve payment intent"):
            intent = await self._client.v1.payment_intents.retrieve_async(intent_id)
        return _intent(intent.to_dict())

    # -- refunds ----------------------------------------------------------------------

    async def create_refund(
        self, payment_intent: str, amount: int, *, idempotency_key: str, metadata: dict[str, str]
    ) -> GatewayRefund:
        with _translated("create refund"):
            refund = await self._client.v1.refunds.create_async(
                {"payment_intent": payment_intent, "amount": amount, "metadata": metadata},
                options={"idempotency_key": idempotency_key},
            )
        return _refund(refund.to_dict())

    async def find_refund(self, payment_intent: str, refund_ref: str) -> GatewayRefund | None:
        with _translated("list refunds"):
            page = await self._client.v1.refunds.list_async(
                {"payment_intent": payment_intent, "limit": PAGE_SIZE}
            )
            # aclosing: leaving the loop early must not leave a half-read pager behind.
            async with aclosing(_all(page)) as refunds:
                async for refund in refunds:
                    if (refund.get("metadata") or {}).get(REFUND_REF_KEY) == refund_ref:
                        return _refund(refund)
        return None

    async def retrieve_refund(self, refund_id: str) -> GatewayRefund:
        with _translated("retrieve refund"):
            refund = await self._client.v1.refunds.retrieve_async(refund_id)
        return _refund(refund.to_dict())

    # -- listings for reconciliation --------------------------------------------------

    async def payment_intents_since(self, since: datetime) -> list[GatewayIntent]:
        with _translated("list payment intents"):
            page = await self._client.v1.payment_intents.list_async(self._list_params(since))
            return await _collect(page, since, _intent)

    async def refunds_since(self, since: datetime) -> list[GatewayRefund]:
        with _translated("list refunds"):
            page = await self._client.v1.refunds.list_async(self._list_params(since))
            return await _collect(page, since, _refund)

    async def balance_transactions_since(self, since: datetime) -> list[GatewayBalanceTransaction]:
        with _translated("list balance transactions"):
            page = await self._client.v1.balance_transactions.list_async(self._list_params(since))
            return await _collect(page, since, _balance_transaction)

    async def events_since(self, since: datetime) -> list[GatewayEvent]:
        with _translated("list events"):
            # Both Stripe and localstripe filter events by `created` on the server.
            page = await self._client.v1.events.list_async(
                {"limit": PAGE_SIZE, "created": {"gte": _epoch(since)}}
            )
            return await _collect(page, since, _event)

    # -- where localstripe differs from the Stripe API version the SDK pins ------------------

    def _card_only(self) -> dict[str, list[str]]:
        # The SDK pins API version 2026-10-28.endive, where Stripe answers 400
        # (payment_method_types_no_longer_supported) to `payment_method_types` and wants
        # `allowed_payment_method_types`; localstripe knows only the old name and refuses the
        # new one.
        if self._stand_in:
            return {"payment_method_types": ["card"]}
        return {"allowed_payment_method_types": ["card"]}

    def _list_params(self, since: datetime) -> Any:
        # Stripe filters lists by `created` itself; localstripe refuses the filter on every
        # list but events, so there we page through everything. `_collect` filters either way.
        # (Any: each resource has its own TypedDict, and all of them take these keys.)
        params: dict[str, Any] = {"limit": PAGE_SIZE}
        if not self._stand_in:
            params["created"] = {"gte": _epoch(since)}
        return params


# -- errors -------------------------------------------------------------------------------


@contextmanager
def _translated(action: str) -> Iterator[None]:
    try:
        yield
    except stripe.StripeError as exc:
        # `from None`: the SDK error holds raw headers and bodies we do not want in our logs.
        raise _gateway_error(exc, action) from None


def _gateway_error(exc: stripe.StripeError, action: str) -> GatewayError:
    status = exc.http_status
    kind = type(exc).__name__
    if (
        isinstance(exc, stripe.APIConnectionError)
        or status is None
        or status >= 500
        or status in RETRYABLE_4XX
    ):
        return GatewayUnavailable(f"Stripe {action}: no answer we can trust ({kind}, {status})")
    if status in (401, 403):
        # Stripe's own text for these quotes (part of) the key: say it in our words.
        message = "our API key was refused"
    else:
        message = exc.user_message or f"HTTP {status}"
    return GatewayRejected(f"Stripe {action}: {message}", exc.code, status)


# -- paging -------------------------------------------------------------------------------


async def _all(page: Any) -> AsyncGenerator[dict[str, Any], None]:
    async for item in page.auto_paging_iter():
        yield item.to_dict()


async def _collect(page: Any, since: datetime, convert: Callable[[dict[str, Any]], T]) -> list[T]:
    floor = _epoch(since)
    return [convert(item) async for item in _all(page) if int(item["created"]) >= floor]


# -- Stripe objects to domain values ------------------------------------------------------


def _epoch(moment: datetime) -> int:
    # Whole seconds, rounded down: Stripe's `created` is whole seconds, so `since` is inclusive.
    return int(moment.timestamp())


def _time(value: Any) -> datetime:
    return datetime.fromtimestamp(int(value), tz=UTC)


def _ref(value: Any) -> str | None:
    """An id field, whether Stripe sent the id or the expanded object."""
    if isinstance(value, dict):
        return str(value["id"])
    return None if value is None else str(value)


def _metadata(data: dict[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in (data.get("metadata") or {}).items()}


def _intent(data: dict[str, Any]) -> GatewayIntent:
    status = str(data["status"])
    # localstripe leaves out `amount_received`; real Stripe always sends it.
    received = data.get("amount_received", data["amount"] if status == "succeeded" else 0)
    return GatewayIntent(
        id=data["id"],
        amount=int(data["amount"]),
        currency=str(data["currency"]).upper(),
        status=status,
        client_secret=data.get("client_secret"),
        created=_time(data["created"]),
        metadata=_metadata(data),
        amount_received=int(received or 0),
    )


def _refund(data: dict[str, Any]) -> GatewayRefund:
    return GatewayRefund(
        id=data["id"],
        payment_intent=_ref(data.get("payment_intent")),
        amount=int(data["amount"]),
        currency=str(data["currency"]).upper(),
        status=str(data["status"]),
        created=_time(data["created"]),
        metadata=_metadata(data),
        failure_reason=data.get("failure_reason"),
    )


def _balance_transaction(data: dict[str, Any]) -> GatewayBalanceTransaction:
    return GatewayBalanceTransaction(
        id=data["id"],
        amount=int(data["amount"]),
        currency=str(data["currency"]).upper(),
        type=str(data["type"]),
        source=_ref(data.get("source")),
        created=_time(data["created"]),
    )


def _event(data: dict[str, Any]) -> GatewayEvent:
    return GatewayEvent(
        id=data["id"], type=data["type"], created=_time(data["created"]),
        object=data["data"]["object"],
    )  # fmt: skip
