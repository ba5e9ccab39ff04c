"""`POST /stripe/webhook` through the real app: signed Stripe events credit a wallet exactly once,
whatever order, repetition or concurrency they arrive in, and nothing unsigned moves money.

Top-ups are made with `create_top_up` against the real localstripe; the events are built and
signed here (tests.support.stripe_events) for what localstripe cannot send, and one test lets
localstripe itself deliver to the app served by uvicorn on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.identity.principal import Principal, PrincipalKind
from domain.identity.scopes import ROLE_SCOPES, Role
from domain.ledger.accounts import wallet
from domain.payments.payments import Payment, PaymentStatus
from domain.payments.topups import TopUpPolicy, create_top_up
from infra.settings import Settings
from infra.stripe.gateway import StripeGateway
from tests.conftest import OLD_WEBHOOK_SECRET, WEBHOOK_SECRET
from tests.support import stripe_events
from tests.support.localstripe import LocalStripe
from tests.support.processes import free_port
from tests.support.stripe_events import deliver

TOLERANCE = 300  # STRIPE_WEBHOOK_TOLERANCE_SECONDS' default, which the test settings keep


@pytest.fixture
async def gateway(localstripe: LocalStripe) -> AsyncIterator[StripeGateway]:
    made = StripeGateway(localstripe.api_key, localstripe.url, timeout_seconds=10)
    yield made
    await made.aclose()


async def _user(uow: Any) -> int:
    async with uow() as u:
        user = await u.users.add(f"payer-{uuid.uuid4().hex[:10]}@example.com", None, Role.USER)
        await u.commit()
    return int(user.id)


async def _top_up(uow: Any, gateway: StripeGateway, amount: int = 2500) -> Payment:
    """A user's top-up opened at localstripe the way the createTopUp mutation opens it."""
    user_id = await _user(uow)
    principal = Principal(PrincipalKind.SESSION, user_id, Role.USER, ROLE_SCOPES[Role.USER])
    made = await create_top_up(
        uow(), gateway, TopUpPolicy(), principal, amount, "USD", f"topup-{uuid.uuid4()}"
    )
    assert made.payment.stripe_intent_id is not None
    assert made.payment.status is PaymentStatus.REQUIRES_PAYMENT
    return made.payment


def _ours(payment: Payment) -> dict[str, str]:
    return {"gpucloud_payment": str(payment.id), "gpucloud_user": str(payment.user_id)}


def _intent_event(payment: Payment, outcome: str, amount: int | None = None) -> dict[str, Any]:
    assert payment.stripe_intent_id is not None
    paid = payment.amount if amount is None else amount
    return stripe_events.payment_intent(
        outcome, intent_id=payment.stripe_intent_id, amount=paid, metadata=_ours(payment)
    )


async def _payment(uow: Any, payment_id: int) -> Payment:
    async with uow() as u:
        found = await u.payments.get(payment_id)
    assert found is not None
    return found


async def _balance(uow: Any, user_id: int) -> int:
    async with uow() as u:
        account = await u.ledger.find_account(wallet(user_id, "USD"))
        if account is None:
            return 0
        return (await u.ledger.balances([account.id]))[account.id].balance


async def _rows(engine: AsyncEngine, sql: str, **params: Any) -> list[Any]:
    async with engine.connect() as conn:
        return list(await conn.execute(text(sql), params))


async def _top_up_transfers(engine: AsyncEngine, payment_id: int) -> list[Any]:
    return await _rows(
        engine,
        "SELECT id, amount, code FROM ledger_transfers WHERE reference = :ref AND code = 'top_up'",
        ref=f"payment:{payment_id}",
    )


async def _event_ids(engine: AsyncEngine) -> list[str]:
    return [row.id for row in await _rows(engine, "SELECT id FROM stripe_events ORDER BY id")]


async def _issues(engine: AsyncEngine) -> list[tuple[str, str, int | None]]:
    rows = await _rows(
        engine, "SELECT kind, stripe_object_id, payment_id FROM reconciliation_issues ORDER BY id"
    )
    return [(r.kind, r.stripe_object_id, r.payment_id) for r in rows]


def _outcome(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.json()["outcome"])


# -- exactly once -----------------------------------------------------------------------------


async def test_same_event_ten_times_at_once_credits_once(
    client: httpx.AsyncClient, uow: Any, engine: AsyncEngine, gateway: StripeGateway
) -> None:
    payment = await _top_up(uow, gateway, amount=2500)
    event = _intent_event(payment, "succeeded")

    responses = await asyncio.gather(*(deliver(client, event, WEBHOOK_SECRET) for _ in range(10)))

    outcomes = sorted(_outcome(r) for r in responses)
    assert outcomes == ["applied"] + ["duplicate"] * 9
    transfers = await _top_up_transfers(engine, payment.id)
    assert [t.amount for t in transfers] == [2500]
    assert await _balance(uow, payment.user_id) == 2500
    assert await _event_ids(engine) == [event["id"]]
    stored = await _payment(uow, payment.id)
    assert (stored.status, stored.amount_received) == (PaymentStatus.SUCCEEDED, 2500)
    assert stored.credit_transfer_id == transfers[0].id


async def test_failure_after_success_is_stale_and_keeps_the_credit(
    client: httpx.AsyncClient, uow: Any, engine: AsyncEngine, gateway: StripeGateway
) -> None:
    payment = await _top_up(uow, gateway, amount=1500)

    first = await deliver(client, _intent_event(payment, "succeeded"), WEBHOOK_SECRET)
    late = await deliver(client, _intent_event(payment, "payment_failed"), WEBHOOK_SECRET)

    assert (_outcome(first), _outcome(late)) == ("applied", "stale")
    stored = await _payment(uow, payment.id)
    assert stored.status is PaymentStatus.SUCCEEDED
    assert stored.failure_reason is None
    assert await _balance(uow, payment.user_id) == 1500
    assert len(await _top_up_transfers(engine, payment.id)) == 1
    assert len(await _event_ids(engine)) == 2  # both recorded, only one applied
    outcomes = await _rows(engine, "SELECT outcome FROM stripe_events ORDER BY received_at")
    assert [row.outcome for row in outcomes] == ["applied", "stale"]  # kept for operators


async def test_processing_after_succeeded_changes_nothing(
    client: httpx.AsyncClient, uow: Any, engine: AsyncEngine, gateway: StripeGateway
) -> None:
    payment = await _top_up(uow, gateway, amount=1200)

    ok = await deliver(client, _intent_event(payment, "succeeded"), WEBHOOK_SECRET)
    late = await deliver(client, _intent_event(payment, "processing"), WEBHOOK_SECRET)

    assert (_outcome(ok), _outcome(late)) == ("applied", "stale")
    assert (await _payment(uow, payment.id)).status is PaymentStatus.SUCCEEDED
    assert await _balance(uow, payment.user_id) == 1200
    assert len(await _top_up_transfers(engine, payment.id)) == 1


async def test_failed_then_retried_with_another_card_succeeds_once(
    client: httpx.AsyncClient, uow: Any, engine: AsyncEngine, gateway: StripeGateway
) -> None:
    # (localstripe cannot confirm an intent again after a decline, so both events are built.)
    payment = await _top_up(uow, gateway, amount=1800)

    failed = await deliver(client, _intent_event(payment, "payment_failed"), WEBHOOK_SECRET)
    after_failure = await _payment(uow, payment.id)
    balance_after_failure = await _balance(uow, payment.user_id)
    succeeded = await deliver(client, _intent_event(payment, "succeeded"), WEBHOOK_SECRET)

    assert (_outcome(failed), _outcome(succeeded)) == ("applied", "applied")
    assert after_failure.status is PaymentStatus.FAILED
    assert after_failure.failure_reason == "Your card was declined."
    assert after_failure.amount_received == 0  # nothing was collected by the failed attempt
    assert balance_after_failure == 0
    assert await _balance(uow, payment.user_id) == 1800
    stored = await _payment(uow, payment.id)
    assert (stored.status, stored.amount_received) == (PaymentStatus.SUCCEEDED, 1800)
    assert [t.amount for t in await _top_up_transfers(engine, payment.id)] == [1800]


async def test_processing_reports_no_money_received(
    client: httpx.AsyncClient, uow: Any, engine: AsyncEngine, gateway: StripeGateway
) -> None:
    payment = await _top_up(uow, gateway, amount=2200)

    response = await deliver(client, _intent_event(payment, "processing"), WEBHOOK_SECRET)

    assert _outcome(response) == "applied"
    stored = await _payment(uow, payment.id)
    assert (stored.status, stored.amount_received, stored.refundable) == (
        PaymentStatus.PROCESSING, 0, 0,
    )  # fmt: skip
    assert await _balance(uow, payment.user_id) == 0
    assert await _top_up_transfers(engine, payment.id) == []


# -- signatures -------------------------------------------------------------------------------


async def test_stale_signature_is_refused_and_nothing_is_recorded(
    client: httpx.AsyncClient, uow: Any, engine: AsyncEngine, gateway: StripeGateway
) -> None:
    payment = await _top_up(uow, gateway, amount=1000)
    event = _intent_event(payment, "succeeded")

    stale = await deliver(
        client, event, WEBHOOK_SECRET, timestamp=int(time.time()) - TOLERANCE - 30
    )
    future = await deliver(
        client, event, WEBHOOK_SECRET, timestamp=int(time.time()) + TOLERANCE + 30
    )

    for refused in (stale, future):
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "SIGNATURE_INVALID"
    assert await _event_ids(engine) == []
    assert await _balance(uow, payment.user_id) == 0
    assert (await _payment(uow, payment.id)).status is PaymentStatus.REQUIRES_PAYMENT


async def test_forged_tampered_and_unsigned_deliveries_are_refused(
    client: httpx.AsyncClient, uow: Any, engine: AsyncEngine, gateway: StripeGateway
) -> None:
    payment = await _top_up(uow, gateway, amount=1000)
    event = _intent_event(payment, "succeeded")
    body = stripe_events.body_of(event)
    now = int(time.time())
    # Signed correctly, then the amount is raised: the signature no longer covers the body.
    tampered = body.replace(b'"amount": 1000', b'"amount": 900000', 1)
    assert tampered != body

    forged = await deliver(client, event, "whsec_attacker")
    changed = await deliver(
        client, tampered, WEBHOOK_SECRET, signature=stripe_events.sign(body, WEBHOOK_SECRET, now)
    )
    malformed = await deliver(client, event, WEBHOOK_SECRET, signature="t=abc,v1=zz")
    missing = await client.post(
        stripe_events.WEBHOOK_PATH, content=body, headers={"Content-Type": "application/json"}
    )

    for refused in (forged, changed, malformed, missing):
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["code"] == "SIGNATURE_INVALID"
    assert await _event_ids(engine) == []
    assert await _balance(uow, payment.user_id) == 0


async def test_previous_secret_is_still_accepted_while_rotating(
    client: httpx.AsyncClient, uow: Any, engine: AsyncEngine, gateway: StripeGateway
) -> None:
    payment = await _top_up(uow, gateway, amount=1300)
    event = _intent_event(payment, "succeeded")

    response = await deliver(client, event, OLD_WEBHOOK_SECRET)

    assert _outcome(response) == "applied"
    assert await _event_ids(engine) == [event["id"]]
    assert await _balance(uow, payment.user_id) == 1300


# -- checkout ---------------------------------------------------------------------------------


async def test_checkout_completed_credits_once_and_the_intent_event_adds_nothing(
    client: httpx.AsyncClient, uow: Any, engine: AsyncEngine, gateway: StripeGateway
) -> None:
    payment = await _top_up(uow, gateway, amount=3000)
    assert payment.stripe_intent_id is not None
    checkout = stripe_events.checkout_completed(
        payment_intent=payment.stripe_intent_id, amount_total=3000, metadata=_ours(payment)
    )

    completed = await deliver(client, checkout, WEBHOOK_SECRET)
    intent = await deliver(client, _intent_event(payment, "succeeded"), WEBHOOK_SECRET)

    assert (_outcome(completed), _outcome(intent)) == ("applied", "stale")
    assert [t.amount for t in await _top_up_transfers(engine, payment.id)] == [3000]
    assert await _balance(uow, payment.user_id) == 3000
    assert (await _payment(uow, payment.id)).status is PaymentStatus.SUCCEEDED


async def test_paid_through_checkout_records_its_intent_and_a_second_payment_is_flagged(
    client: httpx.AsyncClient, uow: Any, engine: AsyncEngine, gateway: StripeGateway
) -> None:
    payment = await _top_up(uow, gateway, amount=2200)
    checkout = stripe_events.checkout_completed(
        payment_intent="pi_from_checkout_1", amount_total=2200, metadata=_ours(payment)
    )

    completed = await deliver(client, checkout, WEBHOOK_SECRET)
    # The buyer also paid the top-up's own intent (another tab): money we must not lose sight of.
    second = await deliver(client, _intent_event(payment, "succeeded"), WEBHOOK_SECRET)

    assert (_outcome(completed), _outcome(second)) == ("applied", "flagged")
    stored = await _payment(uow, payment.id)
    assert stored.stripe_intent_id == "pi_from_checkout_1"  # refunds go where the money came from
    assert [t.amount for t in await _top_up_transfers(engine, payment.id)] == [2200]
    assert await _issues(engine) == [("missing_credit", payment.stripe_intent_id, payment.id)]


# -- events that are not (quite) ours -----------------------------------------------------------


async def test_intent_without_our_metadata_is_ignored(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    event = stripe_events.payment_intent("succeeded", amount=5000, metadata={"shop": "other"})

    response = await deliver(client, event, WEBHOOK_SECRET)

    assert _outcome(response) == "ignored"
    assert await _issues(engine) == []
    assert await _rows(engine, "SELECT id FROM ledger_transfers") == []
    assert await _event_ids(engine) == [event["id"]]  # recorded, so a repeat is a duplicate


async def test_refund_we_never_made_is_flagged(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    event = stripe_events.refund("succeeded", payment_intent=stripe_events.new_id("pi"), amount=700)
    refund_id = event["data"]["object"]["id"]

    response = await deliver(client, event, WEBHOOK_SECRET)
    again = await deliver(client, event, WEBHOOK_SECRET)

    assert (_outcome(response), _outcome(again)) == ("flagged", "duplicate")
    assert await _issues(engine) == [("refund_outside_platform", refund_id, None)]
    assert await _rows(engine, "SELECT id FROM ledger_transfers") == []


async def test_event_for_a_payment_we_have_no_record_of_is_flagged(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    event = stripe_events.payment_intent(
        "succeeded", amount=900, metadata={"gpucloud_payment": "987654"}
    )

    response = await deliver(client, event, WEBHOOK_SECRET)

    assert _outcome(response) == "flagged"
    assert await _issues(engine) == [("unknown_payment", event["data"]["object"]["id"], None)]
    assert await _rows(engine, "SELECT id FROM ledger_transfers") == []


async def test_amount_mismatch_credits_what_was_received_and_is_flagged(
    client: httpx.AsyncClient, uow: Any, engine: AsyncEngine, gateway: StripeGateway
) -> None:
    payment = await _top_up(uow, gateway, amount=2000)
    event = _intent_event(payment, "succeeded")
    event["data"]["object"]["amount_received"] = 1750

    response = await deliver(client, event, WEBHOOK_SECRET)

    assert _outcome(response) == "applied"
    assert [t.amount for t in await _top_up_transfers(engine, payment.id)] == [1750]
    assert await _balance(uow, payment.user_id) == 1750
    stored = await _payment(uow, payment.id)
    assert (stored.status, stored.amount_received, stored.refundable) == (
        PaymentStatus.SUCCEEDED, 1750, 1750,
    )  # fmt: skip
    rows = await _rows(
        engine, "SELECT kind, payment_id, expected, actual FROM reconciliation_issues"
    )
    assert [(r.kind, r.payment_id, r.expected, r.actual) for r in rows] == [
        ("amount_mismatch", payment.id, "2000", "1750")
    ]


async def test_other_currency_is_flagged_and_not_credited(
    client: httpx.AsyncClient, uow: Any, engine: AsyncEngine, gateway: StripeGateway
) -> None:
    payment = await _top_up(uow, gateway, amount=2000)
    assert payment.stripe_intent_id is not None
    event = stripe_events.payment_intent(
        "succeeded", intent_id=payment.stripe_intent_id, amount=2000, currency="eur",
        metadata=_ours(payment),
    )  # fmt: skip

    response = await deliver(client, event, WEBHOOK_SECRET)

    assert _outcome(response) == "flagged"
    assert await _top_up_transfers(engine, payment.id) == []
    assert (await _payment(uow, payment.id)).status is PaymentStatus.REQUIRES_PAYMENT
    assert [k for k, _, _ in await _issues(engine)] == ["amount_mismatch"]


# -- localstripe delivers to a served app --------------------------------------------------------


@contextlib.asynccontextmanager
async def _served(settings: Settings) -> AsyncIterator[str]:
    """The real app under uvicorn on a loopback port, with its own lifespan."""
    from gpucloud.app import create_app

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=port, lifespan="on",
            log_config=None, access_log=False,
        )
    )  # fmt: skip
    task = asyncio.create_task(server.serve())
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert not task.done(), "uvicorn stopped before it started"
            assert time.monotonic() < deadline, "uvicorn did not start"
            await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=30)


async def test_localstripe_delivers_and_the_wallet_is_credited(
    settings: Settings, uow: Any, engine: AsyncEngine, gateway: StripeGateway,
    localstripe: LocalStripe,
) -> None:  # fmt: skip
    webhook_id = f"webhook-test-{uuid.uuid4().hex[:8]}"
    payment = await _top_up(uow, gateway, amount=4321)
    assert payment.stripe_intent_id is not None
    async with _served(settings) as base:
        localstripe.configure_webhook(
            f"{base}/stripe/webhook", WEBHOOK_SECRET, webhook_id=webhook_id,
            events=["payment_intent.succeeded"],
        )  # fmt: skip
        try:
            await localstripe.pay(payment.stripe_intent_id)
            deadline = time.monotonic() + 10
            while (await _payment(uow, payment.id)).status is not PaymentStatus.SUCCEEDED:
                assert time.monotonic() < deadline, "localstripe's event never credited"
                await asyncio.sleep(0.1)
        finally:
            # localstripe keeps webhooks for the session and cannot remove one: subscribe this
            # one to no event, so nothing later is sent to a port someone else may hold.
            localstripe.configure_webhook(
                f"{base}/stripe/webhook", WEBHOOK_SECRET, webhook_id=webhook_id, events=[]
            )

    # The event applied is localstripe's own one for this intent.
    events = await gateway.events_since(datetime.now(UTC) - timedelta(minutes=1))
    ours = [
        e.id for e in events
        if e.type == "payment_intent.succeeded" and e.object["id"] == payment.stripe_intent_id
    ]  # fmt: skip
    assert len(ours) == 1
    assert ours[0] in await _event_ids(engine)
    assert await _balance(uow, payment.user_id) == 4321
    assert [t.amount for t in await _top_up_transfers(engine, payment.id)] == [4321]
    assert await _issues(engine) == []
