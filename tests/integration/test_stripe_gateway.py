"""StripeGateway against a real localstripe subprocess over loopback sockets.

What localstripe cannot do (Checkout Sessions) is checked against a small recorder that
answers as Stripe does, so the request we send is still seen on the wire.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from domain.payments.gateway import GatewayRejected, GatewayUnavailable, SignatureInvalid
from infra.stripe import gateway as gateway_module
from infra.stripe.gateway import StripeGateway
from infra.stripe.signatures import verify_event
from tests.support.fault_proxy import FaultProxy
from tests.support.localstripe import LocalStripe
from tests.support.processes import free_port

REFUNDS = r"^POST /v1/refunds$"
# The SDK's HTTPXClient posts its form as `data=<str>`, which httpx 0.28 deprecates.


@pytest.fixture
async def gateway(localstripe: LocalStripe) -> AsyncIterator[StripeGateway]:
    made = StripeGateway(localstripe.api_key, localstripe.url, timeout_seconds=10)
    yield made
    await made.aclose()


def key() -> str:
    return f"test-{uuid.uuid4()}"


async def paid_intent(gateway: StripeGateway, ls: LocalStripe, amount: int = 2500) -> str:
    intent = await gateway.create_payment_intent(
        amount, "USD", idempotency_key=key(), metadata={"gpucloud_payment": key()}
    )
    await ls.pay(intent.id)
    return intent.id


def a_second_ago() -> datetime:
    # Stripe's `created` is whole seconds; start the window at the top of the previous second.
    return datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)


# -- payment intents ------------------------------------------------------------------------


async def test_create_intent_returns_client_secret_and_maps_currency(
    gateway: StripeGateway,
    localstripe: LocalStripe,
) -> None:
    metadata = {"gpucloud_payment": "pay_1", "account": "42"}
    intent = await gateway.create_payment_intent(
        1500, "EUR", idempotency_key=key(), metadata=metadata
    )

    assert intent.id.startswith("pi_")
    assert intent.client_secret and intent.client_secret.startswith(f"{intent.id}_secret_")
    assert (intent.amount, intent.currency, intent.metadata) == (1500, "EUR", metadata)
    assert intent.status == "requires_payment_method"
    assert intent.amount_received == 0
    assert abs(intent.created - datetime.now(UTC)) < timedelta(minutes=1)
    # Stripe holds it in lower case, as its API wants.
    raw = (await localstripe.api("GET", f"/v1/payment_intents/{intent.id}")).json()
    assert raw["currency"] == "eur"


async def test_paid_intent_reads_back_succeeded(
    gateway: StripeGateway,
    localstripe: LocalStripe,
) -> None:
    intent_id = await paid_intent(gateway, localstripe, amount=3000)

    intent = await gateway.retrieve_payment_intent(intent_id)

    assert (intent.status, intent.amount, intent.amount_received) == ("succeeded", 3000, 3000)
    assert intent.currency == "USD"


async def test_declined_card_leaves_intent_waiting_for_a_payment_method(
    gateway: StripeGateway,
    localstripe: LocalStripe,
) -> None:
    intent = await gateway.create_payment_intent(900, "USD", idempotency_key=key(), metadata={})
    raw = await localstripe.decline(intent.id)

    read = await gateway.retrieve_payment_intent(intent.id)

    assert raw["last_payment_error"]["code"] == "card_declined"
    assert (read.status, read.amount_received) == ("requires_payment_method", 0)


# -- refunds --------------------------------------------------------------------------------


async def test_refund_is_found_again_by_our_reference(
    gateway: StripeGateway,
    localstripe: LocalStripe,
) -> None:
    intent_id = await paid_intent(gateway, localstripe, amount=2500)
    ref = key()

    refund = await gateway.create_refund(
        intent_id, 1000, idempotency_key=key(), metadata={"gpucloud_refund": ref}
    )

    assert (refund.payment_intent, refund.amount, refund.currency) == (intent_id, 1000, "USD")
    assert refund.status == "succeeded"  # localstripe settles refunds at once
    assert refund.metadata == {"gpucloud_refund": ref}
    assert await gateway.find_refund(intent_id, ref) == refund
    assert await gateway.find_refund(intent_id, "someone-else") is None
    assert await gateway.retrieve_refund(refund.id) == refund


async def test_find_refund_pages_through_many_refunds(
    gateway: StripeGateway,
    localstripe: LocalStripe,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gateway_module, "PAGE_SIZE", 2)
    intent_id = await paid_intent(gateway, localstripe, amount=5000)
    refs = [key() for _ in range(5)]
    for ref in refs:
        await gateway.create_refund(
            intent_id, 100, idempotency_key=key(), metadata={"gpucloud_refund": ref}
        )

    found = [await gateway.find_refund(intent_id, ref) for ref in refs]

    assert [r.metadata["gpucloud_refund"] if r else None for r in found] == refs


# -- listings since a moment -----------------------------------------------------------------


async def test_listings_since_return_the_new_objects_across_pages(
    gateway: StripeGateway,
    localstripe: LocalStripe,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gateway_module, "PAGE_SIZE", 2)  # so every listing spans pages
    since = a_second_ago()
    intent_ids = [await paid_intent(gateway, localstripe, amount=1200) for _ in range(3)]
    refund = await gateway.create_refund(
        intent_ids[0], 200, idempotency_key=key(), metadata={"gpucloud_refund": key()}
    )

    intents = {i.id: i for i in await gateway.payment_intents_since(since)}
    refunds = {r.id: r for r in await gateway.refunds_since(since)}
    txns = await gateway.balance_transactions_since(since)

    assert set(intent_ids) <= intents.keys()
    assert all(intents[i].status == "succeeded" for i in intent_ids)
    assert refunds[refund.id] == refund
    by_source = {t.source: t for t in txns}
    assert by_source[refund.id].amount == -200 and by_source[refund.id].type == "refund"
    charges = [t for t in txns if t.type == "charge" and t.amount == 1200]
    assert len(charges) >= 3 and all(t.currency == "USD" for t in charges)
    assert all(item.created >= since for item in [*intents.values(), *refunds.values(), *txns])


async def test_events_since_include_the_payment_and_nothing_older(
    gateway: StripeGateway,
    localstripe: LocalStripe,
) -> None:
    since = a_second_ago()
    intent_id = await paid_intent(gateway, localstripe)

    events = await gateway.events_since(since)
    later = await gateway.events_since(datetime.now(UTC) + timedelta(hours=1))

    succeeded = [e for e in events if e.type == "payment_intent.succeeded"]
    assert intent_id in {e.object["id"] for e in succeeded}
    assert all(e.created >= since for e in events)
    assert later == []


async def test_listing_from_the_future_is_empty(gateway: StripeGateway) -> None:
    future = datetime.now(UTC) + timedelta(hours=1)

    assert await gateway.payment_intents_since(future) == []
    assert await gateway.refunds_since(future) == []
    assert await gateway.balance_transactions_since(future) == []


# -- failures ---------------------------------------------------------------------------------


async def test_refund_of_an_unknown_intent_is_rejected(gateway: StripeGateway) -> None:
    with pytest.raises(GatewayRejected) as caught:
        await gateway.create_refund("pi_doesnotexist", 100, idempotency_key=key(), metadata={})

    assert caught.value.status == 404


async def test_refund_of_an_unpaid_intent_is_rejected_with_stripes_message(
    gateway: StripeGateway,
) -> None:
    intent = await gateway.create_payment_intent(700, "USD", idempotency_key=key(), metadata={})

    with pytest.raises(GatewayRejected) as caught:
        await gateway.create_refund(intent.id, 100, idempotency_key=key(), metadata={})

    assert caught.value.status == 400
    assert "Cannot refund a failed payment" in str(caught.value)


async def test_a_refused_key_is_rejected_without_repeating_the_key(
    localstripe: LocalStripe,
) -> None:
    secret_key = "not-a-stripe-key-" + uuid.uuid4().hex  # localstripe wants sk_...
    gateway = StripeGateway(secret_key, localstripe.url, timeout_seconds=5)
    try:
        with pytest.raises(GatewayRejected) as caught:
            await gateway.retrieve_payment_intent("pi_whatever")
    finally:
        await gateway.aclose()

    assert caught.value.status == 401
    assert secret_key not in str(caught.value) and secret_key not in repr(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


async def test_nobody_listening_is_unavailable() -> None:
    gateway = StripeGateway("sk_test_x", f"http://127.0.0.1:{free_port()}", timeout_seconds=2)
    try:
        with pytest.raises(GatewayUnavailable):
            await gateway.create_payment_intent(100, "USD", idempotency_key=key(), metadata={})
    finally:
        await gateway.aclose()


# -- faults between us and Stripe -----------------------------------------------------------


@pytest.fixture
async def proxy(localstripe: LocalStripe) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(localstripe.url) as running:
        yield running


@pytest.fixture
async def proxied(localstripe: LocalStripe, proxy: FaultProxy) -> AsyncIterator[StripeGateway]:
    made = StripeGateway(localstripe.api_key, proxy.url, timeout_seconds=0.5)
    yield made
    await made.aclose()


async def test_timeout_after_stripe_did_the_refund_is_unavailable_and_the_refund_is_found(
    proxied: StripeGateway,
    proxy: FaultProxy,
    localstripe: LocalStripe,
) -> None:
    intent_id = await paid_intent(proxied, localstripe)
    ref, idempotency_key = key(), key()
    proxy.delay_after_forward(5, matching=REFUNDS)

    with pytest.raises(GatewayUnavailable):
        await proxied.create_refund(
            intent_id, 500, idempotency_key=idempotency_key, metadata={"gpucloud_refund": ref}
        )

    proxy.pass_through()
    found = await proxied.find_refund(intent_id, ref)
    assert found is not None and found.amount == 500 and found.payment_intent == intent_id
    posts = [s for s in proxy.seen if s.method == "POST" and s.path == "/v1/refunds"]
    assert len(posts) == 1  # the SDK did not retry behind our back
    assert posts[0].headers["Idempotency-Key"] == idempotency_key


@pytest.mark.parametrize("fault", ["drop", "fail"])
async def test_refund_never_forwarded_is_unavailable_and_absent(
    fault: str,
    proxied: StripeGateway,
    proxy: FaultProxy,
    localstripe: LocalStripe,
) -> None:
    intent_id = await paid_intent(proxied, localstripe)
    ref = key()
    if fault == "drop":
        proxy.drop_before_forward(matching=REFUNDS)
    else:
        proxy.fail_with(503, matching=REFUNDS)

    with pytest.raises(GatewayUnavailable):
        await proxied.create_refund(
            intent_id, 500, idempotency_key=key(), metadata={"gpucloud_refund": ref}
        )

    proxy.pass_through()
    assert await proxied.find_refund(intent_id, ref) is None
    assert proxy.requests["/v1/refunds"] == 2  # the failed POST and the lookup


# -- webhooks from localstripe --------------------------------------------------------------


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, asyncio.Queue[tuple[bytes, str | None]]]]:
    """A webhook endpoint on loopback that keeps each delivery's raw body and header."""
    deliveries: asyncio.Queue[tuple[bytes, str | None]] = asyncio.Queue()

    async def receive(request: web.Request) -> web.Response:
        await deliveries.put((await request.read(), request.headers.get("Stripe-Signature")))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/stripe/webhook", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/stripe/webhook", deliveries
    finally:
        await runner.cleanup()


async def test_localstripe_webhook_verifies_with_the_right_secret(
    gateway: StripeGateway,
    localstripe: LocalStripe,
    receiver: tuple[str, asyncio.Queue[tuple[bytes, str | None]]],
) -> None:
    url, deliveries = receiver
    secret = f"whsec_{uuid.uuid4().hex}"
    localstripe.configure_webhook(
        url, secret, webhook_id="gateway-test", events=["payment_intent.succeeded"]
    )
    intent_id = await paid_intent(gateway, localstripe)

    async def delivery_for_our_intent() -> tuple[bytes, str | None]:
        while True:
            body, header = await deliveries.get()
            if intent_id.encode() in body:
                return body, header

    body, header = await asyncio.wait_for(delivery_for_our_intent(), timeout=15)

    event = verify_event(body, header, ["whsec_retired", secret], tolerance_seconds=300)
    assert event.type == "payment_intent.succeeded"
    assert event.object["id"] == intent_id and event.object["status"] == "succeeded"
    assert abs(event.created.timestamp() - time.time()) < 60
    with pytest.raises(SignatureInvalid):
        verify_event(body, header, ["whsec_someone_else"], tolerance_seconds=300)


# -- checkout sessions (localstripe has none) -------------------------------------------------


async def test_localstripe_has_no_checkout_sessions(gateway: StripeGateway) -> None:
    with pytest.raises(GatewayRejected) as caught:
        await gateway.create_checkout_session(
            1000, "USD", idempotency_key=key(), metadata={}, success_url="http://x/ok",
            cancel_url="http://x/cancel",
        )  # fmt: skip

    assert caught.value.status == 404


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    idempotency_key: str | None


@asynccontextmanager
async def recorder(answers: dict[str, dict[str, Any]]) -> AsyncIterator[tuple[str, list[Recorded]]]:
    """A loopback server that keeps each request and answers `answers["METHOD /path"]` as
    Stripe would: for what localstripe lacks, and to see the real API dialect on the wire."""
    seen: list[Recorded] = []

    async def answer(request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        seen.append(Recorded(request.method, request.path, dict(request.query), form,
                             request.headers.get("Idempotency-Key")))  # fmt: skip
        return web.json_response(answers[f"{request.method} {request.path}"])

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen
    finally:
        await runner.cleanup()


async def test_checkout_session_request_and_answer() -> None:
    session = {"id": "cs_test_1", "object": "checkout.session", "mode": "payment",
               "url": "https://pay.example/cs_1", "payment_intent": None}  # fmt: skip
    async with recorder({"POST /v1/checkout/sessions": session}) as (url, seen):
        gateway = StripeGateway("sk_test_x", url, 5)
        try:
            checkout = await gateway.create_checkout_session(
                2000, "EUR", idempotency_key="idem-1", metadata={"gpucloud_payment": "p1"},
                success_url="https://app.example/ok", cancel_url="https://app.example/cancel",
            )  # fmt: skip
        finally:
            await gateway.aclose()

    assert (checkout.id, checkout.url, checkout.payment_intent) == (
        "cs_test_1", "https://pay.example/cs_1", None,
    )  # fmt: skip
    assert seen[0].idempotency_key == "idem-1"
    assert seen[0].form == {
        "mode": "payment",
        "line_items[0][quantity]": "1",
        "line_items[0][price_data][currency]": "eur",
        "line_items[0][price_data][unit_amount]": "2000",
        "line_items[0][price_data][product_data][name]": "Account top-up",
        "metadata[gpucloud_payment]": "p1",
        "payment_intent_data[metadata][gpucloud_payment]": "p1",
        "success_url": "https://app.example/ok",
        "cancel_url": "https://app.example/cancel",
    }


async def test_real_stripe_dialect_allowed_types_and_created_filter() -> None:
    """What goes to real Stripe (API 2026-10-28.endive) where localstripe wants otherwise."""
    now = int(time.time())
    intent = {"id": "pi_1", "object": "payment_intent", "amount": 500, "currency": "usd",
              "status": "requires_payment_method", "client_secret": "pi_1_secret_x",
              "created": now, "metadata": {}, "amount_received": 0}  # fmt: skip
    page = {"object": "list", "url": "/v1/payment_intents", "has_more": False,
            "data": [intent, intent | {"id": "pi_old", "created": now - 7200}]}  # fmt: skip
    answers = {"POST /v1/payment_intents": intent, "GET /v1/payment_intents": page}
    async with recorder(answers) as (url, seen):
        gateway = StripeGateway("sk_test_x", url, 5, stand_in=False)
        try:
            await gateway.create_payment_intent(500, "USD", idempotency_key="k", metadata={})
            listed = await gateway.payment_intents_since(datetime.fromtimestamp(now - 60, UTC))
        finally:
            await gateway.aclose()

    created, listing = seen
    assert created.form["allowed_payment_method_types[0]"] == "card"
    assert "payment_method_types[0]" not in created.form
    assert listing.query == {"limit": "100", "created[gte]": str(now - 60)}
    assert [i.id for i in listed] == ["pi_1"]  # and filtered here too
