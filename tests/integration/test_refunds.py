"""Refunds end to end on real PostgreSQL and the real localstripe: `refund_payment`, `submit`,
`settle_refunds` and refund events, with Stripe slowed, cut off or refusing through a
FaultProxy. Every test checks what Stripe holds, what the ledger holds, or both.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.audit.records import RequestMeta
from domain.errors import Conflict
from domain.identity.principal import Principal, PrincipalKind
from domain.identity.scopes import ROLE_SCOPES, Role
from domain.ledger import book
from domain.ledger.accounts import AccountKind, Balance, platform, wallet
from domain.ledger.errors import InsufficientFunds
from domain.ledger.holds import HoldStatus
from domain.ledger.policy import LedgerPolicy
from domain.ledger.transfers import TransferCode
from domain.payments.gateway import GatewayEvent, GatewayRefund
from domain.payments.payments import Payment, PaymentStatus
from domain.payments.refunding import refund_payment, settle_refunds
from domain.payments.refunds import Refund, RefundStatus
from domain.payments.topups import TopUpPolicy, create_top_up
from domain.payments.webhooks import apply_event
from infra.stripe.gateway import StripeGateway
from infra.stripe.signatures import verify_event
from tests.support import stripe_events
from tests.support.fault_proxy import FaultProxy
from tests.support.localstripe import LocalStripe

SECRET = "whsec_refund_tests"
POST_REFUNDS = r"^POST /v1/refunds$"
ANY_REFUNDS = r"^(POST|GET) /v1/refunds$"
POLICY = LedgerPolicy()
META = RequestMeta(request_id="req-refund-test", client_ip="203.0.113.9", user_agent="pytest")


@pytest.fixture
async def gateway(localstripe: LocalStripe) -> AsyncIterator[StripeGateway]:
    made = StripeGateway(localstripe.api_key, localstripe.url, timeout_seconds=10)
    yield made
    await made.aclose()


@pytest.fixture
async def proxy(localstripe: LocalStripe) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(localstripe.url) as running:
        yield running


@pytest.fixture
async def proxied(proxy: FaultProxy, localstripe: LocalStripe) -> AsyncIterator[StripeGateway]:
    """A gateway that reaches localstripe only through the proxy, and gives up after 0.5 s."""
    made = StripeGateway(localstripe.api_key, proxy.url, timeout_seconds=0.5)
    yield made
    await made.aclose()


# -- helpers ----------------------------------------------------------------------------------


async def _user(uow: Any, role: Role = Role.USER) -> int:
    async with uow() as u:
        user = await u.users.add(f"{role}-{uuid.uuid4().hex[:10]}@example.com", None, role)
        await u.commit()
    return int(user.id)


async def _admin(uow: Any) -> Principal:
    admin_id = await _user(uow, Role.ADMIN)
    return Principal(PrincipalKind.SESSION, admin_id, Role.ADMIN, ROLE_SCOPES[Role.ADMIN])


def _verified(event: dict[str, Any]) -> GatewayEvent:
    """A built event, signed and verified the way the webhook route verifies it."""
    body = stripe_events.body_of(event)
    header = stripe_events.sign(body, SECRET, int(time.time()))
    return verify_event(body, header, [SECRET], tolerance_seconds=300)


async def _paid(
    uow: Any, gateway: StripeGateway, localstripe: LocalStripe, amount: int = 5000
) -> Payment:
    """A top-up paid at localstripe and credited by applying the succeeded event."""
    user_id = await _user(uow)
    buyer = Principal(PrincipalKind.SESSION, user_id, Role.USER, ROLE_SCOPES[Role.USER])
    made = await create_top_up(
        uow(), gateway, TopUpPolicy(), buyer, amount, "USD", f"topup-{uuid.uuid4()}"
    )
    intent_id = made.payment.stripe_intent_id
    assert intent_id is not None
    paid = await localstripe.pay(intent_id)
    assert paid["status"] == "succeeded"
    # The intent as localstripe holds it, as the object of the event Stripe sends.
    obj = (await localstripe.api("GET", f"/v1/payment_intents/{intent_id}")).json()
    event = _verified(stripe_events.event("payment_intent.succeeded", obj))
    assert await apply_event(uow(), event) == "applied"
    payment = await _payment(uow, made.payment.id)
    assert payment.status is PaymentStatus.SUCCEEDED and payment.refundable == amount
    return payment


async def _refund(
    uow: Any, gateway: StripeGateway, admin: Principal, payment: Payment, amount: int,
    key: str | None = None, reason: str = "customer asked",
) -> Refund:  # fmt: skip
    return await refund_payment(
        uow(), gateway, POLICY, admin, META, payment.id, amount, reason,
        key or f"refund-{uuid.uuid4()}",
    )  # fmt: skip


async def _payment(uow: Any, payment_id: int) -> Payment:
    async with uow() as u:
        found = await u.payments.get(payment_id)
    assert found is not None
    return found


async def _stored(uow: Any, refund_id: int) -> Refund:
    async with uow() as u:
        found = await u.payments.refund(refund_id)
    assert found is not None
    return found


async def _wallet(uow: Any, user_id: int) -> Balance:
    async with uow() as u:
        account = await u.ledger.find_account(wallet(user_id, "USD"))
        assert account is not None
        return (await u.ledger.balances([account.id]))[account.id]


async def _hold(uow: Any, hold_id: int) -> Any:
    async with uow() as u:
        return (await u.ledger.holds([hold_id]))[hold_id]


async def _account_id(uow: Any, kind: AccountKind) -> int:
    async with uow() as u:
        found = await u.ledger.find_account(platform(kind, "USD"))
    assert found is not None
    return int(found.id)


async def _verify_clean(uow: Any) -> None:
    async with uow() as u:
        check = await u.ledger.verify()  # first statement of its transaction
    assert check.problems == []
    assert check.transfers_checked > 0


async def _rows(engine: AsyncEngine, sql: str, **params: Any) -> list[Any]:
    async with engine.connect() as conn:
        return list(await conn.execute(text(sql), params))


async def _stripe_refunds(gateway: StripeGateway, intent_id: str | None) -> list[GatewayRefund]:
    assert intent_id is not None
    return [r for r in await gateway.refunds_since(datetime(2000, 1, 1, tzinfo=UTC))
            if r.payment_intent == intent_id]  # fmt: skip


def _posts(proxy: FaultProxy) -> int:
    return sum(1 for s in proxy.seen if (s.method, s.path) == ("POST", "/v1/refunds"))


def _refund_event(
    refund: Refund, payment: Payment, status: str, stripe_id: str | None = None
) -> GatewayEvent:
    assert payment.stripe_intent_id is not None
    return _verified(stripe_events.refund(
        status, payment_intent=payment.stripe_intent_id, amount=refund.amount,
        refund_id=stripe_id or refund.stripe_refund_id,
        metadata={"gpucloud_refund": str(refund.id), "gpucloud_payment": str(payment.id)},
    ))  # fmt: skip


# -- the refund that works --------------------------------------------------------------------


async def test_refund_succeeds_and_moves_the_money_back_through_stripe(
    uow: Any, engine: AsyncEngine, gateway: StripeGateway, localstripe: LocalStripe
) -> None:
    payment = await _paid(uow, gateway, localstripe, amount=5000)
    admin = await _admin(uow)

    refund = await _refund(uow, gateway, admin, payment, 2000, reason="  duplicate charge ")

    assert refund.status is RefundStatus.SUCCEEDED
    assert (refund.amount, refund.reason, refund.requested_by) == (
        2000, "duplicate charge", admin.user_id,
    )  # fmt: skip
    at_stripe = await _stripe_refunds(gateway, payment.stripe_intent_id)
    assert [(r.id, r.amount, r.status) for r in at_stripe] == [
        (refund.stripe_refund_id, 2000, "succeeded")
    ]
    assert at_stripe[0].metadata["gpucloud_refund"] == str(refund.id)
    # The wallet paid it: balance and available both down, nothing left held.
    balance = await _wallet(uow, payment.user_id)
    assert (balance.balance, balance.available, balance.held) == (3000, 3000, 0)
    hold = await _hold(uow, refund.hold_id)
    assert (hold.status, hold.captured, hold.amount) == (HoldStatus.CAPTURED, 2000, 2000)
    settled = await _rows(
        engine,
        "SELECT debit_account_id, credit_account_id, amount, phase FROM ledger_transfers "
        "WHERE reference = :ref AND code = 'refund'",
        ref=refund.reference,
    )
    assert [tuple(r) for r in settled] == [(
        await _account_id(uow, AccountKind.REFUNDS_IN_FLIGHT),
        await _account_id(uow, AccountKind.STRIPE_CLEARING), 2000, "posted",
    )]  # fmt: skip
    stored = await _payment(uow, payment.id)
    assert (stored.amount_refunded, stored.refundable) == (2000, 3000)
    audit = await _rows(
        engine,
        "SELECT actor_type, actor_user_id, target_type, target_id, request_id, client_ip, after "
        "FROM audit_events WHERE action = 'billing.refund.requested'",
    )
    assert len(audit) == 1
    row = audit[0]
    assert (row.actor_type, row.actor_user_id, row.target_type, row.target_id) == (
        "user", admin.user_id, "payment", str(payment.id),
    )  # fmt: skip
    assert (row.request_id, row.client_ip) == (META.request_id, META.client_ip)
    after = row.after if isinstance(row.after, dict) else json.loads(row.after)
    assert after == {"refundId": refund.id, "amount": 2000, "currency": "USD",
                     "reason": "duplicate charge", "userId": payment.user_id}  # fmt: skip
    await _verify_clean(uow)


# -- Stripe misbehaves ------------------------------------------------------------------------


async def test_timeout_after_stripe_made_the_refund_gives_exactly_one_refund(
    uow: Any, gateway: StripeGateway, proxied: StripeGateway, proxy: FaultProxy,
    localstripe: LocalStripe,
) -> None:  # fmt: skip
    payment = await _paid(uow, gateway, localstripe, amount=4000)
    admin = await _admin(uow)
    # localstripe makes the refund; its answer is held past our 0.5 s timeout.
    proxy.delay_after_forward(3, matching=POST_REFUNDS)

    refund = await _refund(uow, proxied, admin, payment, 1500)

    assert refund.status is RefundStatus.SUCCEEDED  # found by looking, not by asking again
    at_stripe = await _stripe_refunds(gateway, payment.stripe_intent_id)
    assert [(r.id, r.amount) for r in at_stripe] == [(refund.stripe_refund_id, 1500)]
    assert _posts(proxy) == 1
    balance = await _wallet(uow, payment.user_id)
    assert (balance.balance, balance.held) == (2500, 0)
    await _verify_clean(uow)


async def test_stripe_unreachable_leaves_it_pending_until_the_settling_job(
    uow: Any, gateway: StripeGateway, proxied: StripeGateway, proxy: FaultProxy,
    localstripe: LocalStripe,
) -> None:  # fmt: skip
    payment = await _paid(uow, gateway, localstripe, amount=3000)
    admin = await _admin(uow)
    proxy.drop_before_forward(matching=ANY_REFUNDS)

    refund = await _refund(uow, proxied, admin, payment, 1000)

    assert refund.status is RefundStatus.PENDING and refund.stripe_refund_id is None
    assert _posts(proxy) == 1 and proxy.requests["/v1/refunds"] == 2  # the POST and the look
    assert await _stripe_refunds(gateway, payment.stripe_intent_id) == []
    held = await _wallet(uow, payment.user_id)
    assert (held.balance, held.available, held.held) == (3000, 2000, 1000)
    assert (await _hold(uow, refund.hold_id)).status is HoldStatus.OPEN
    assert (await _payment(uow, payment.id)).refundable == 2000  # not refundable twice

    proxy.pass_through()
    looked_at = await settle_refunds(uow(), proxied, quiet_for=timedelta(0))

    assert looked_at == 1
    done = await _stored(uow, refund.id)
    assert done.status is RefundStatus.SUCCEEDED
    at_stripe = await _stripe_refunds(gateway, payment.stripe_intent_id)
    assert [(r.id, r.amount) for r in at_stripe] == [(done.stripe_refund_id, 1000)]
    settled = await _wallet(uow, payment.user_id)
    assert (settled.balance, settled.available, settled.held) == (2000, 2000, 0)
    assert (await _hold(uow, refund.hold_id)).status is HoldStatus.CAPTURED
    assert await settle_refunds(uow(), proxied, quiet_for=timedelta(0)) == 0
    await _verify_clean(uow)


async def test_stripe_refusal_fails_the_refund_and_releases_everything(
    uow: Any, engine: AsyncEngine, gateway: StripeGateway, proxied: StripeGateway,
    proxy: FaultProxy, localstripe: LocalStripe,
) -> None:  # fmt: skip
    payment = await _paid(uow, gateway, localstripe, amount=3000)
    admin = await _admin(uow)
    proxy.fail_with(400, matching=POST_REFUNDS)

    refund = await _refund(uow, proxied, admin, payment, 1200)

    assert refund.status is RefundStatus.FAILED
    assert refund.failure_reason is not None and "Stripe refused" in refund.failure_reason
    assert _posts(proxy) == 1  # a refusal is not retried
    assert await _stripe_refunds(gateway, payment.stripe_intent_id) == []
    hold = await _hold(uow, refund.hold_id)
    assert (hold.status, hold.captured) == (HoldStatus.VOIDED, 0)
    balance = await _wallet(uow, payment.user_id)
    assert (balance.balance, balance.available, balance.held) == (3000, 3000, 0)
    stored = await _payment(uow, payment.id)
    assert (stored.amount_refunded, stored.refundable) == (0, 3000)
    assert await _rows(engine, "SELECT id FROM ledger_transfers WHERE code = 'refund' "
                               "AND phase = 'posted'") == []  # fmt: skip
    await _verify_clean(uow)


# -- refund events after the fact ---------------------------------------------------------------


async def test_refund_failing_after_success_is_reversed_and_a_late_success_is_stale(
    uow: Any, engine: AsyncEngine, gateway: StripeGateway, localstripe: LocalStripe
) -> None:
    payment = await _paid(uow, gateway, localstripe, amount=5000)
    admin = await _admin(uow)
    refund = await _refund(uow, gateway, admin, payment, 1800)
    assert refund.status is RefundStatus.SUCCEEDED
    assert (await _wallet(uow, payment.user_id)).balance == 3200
    capture = await _rows(
        engine, "SELECT id FROM ledger_transfers WHERE hold_id = :hold AND phase = 'post_pending'",
        hold=refund.hold_id,
    )  # fmt: skip
    settlement = await _rows(
        engine, "SELECT id FROM ledger_transfers WHERE reference = :ref AND code = 'refund'",
        ref=refund.reference,
    )  # fmt: skip
    assert len(capture) == len(settlement) == 1

    outcome = await apply_event(uow(), _refund_event(refund, payment, "failed"))

    assert outcome == "applied"
    failed = await _stored(uow, refund.id)
    assert failed.status is RefundStatus.FAILED
    assert failed.failure_reason == "expired_or_canceled_card"
    reversals = await _rows(
        engine, "SELECT reverses_id, amount FROM ledger_transfers WHERE code = 'reversal' "
                "ORDER BY reverses_id",
    )  # fmt: skip
    assert sorted((r.reverses_id, r.amount) for r in reversals) == sorted(
        [(capture[0].id, 1800), (settlement[0].id, 1800)]
    )
    balance = await _wallet(uow, payment.user_id)
    assert (balance.balance, balance.available, balance.held) == (5000, 5000, 0)
    assert (await _payment(uow, payment.id)).refundable == 5000
    await _verify_clean(uow)
    transfers_before = await _rows(engine, "SELECT id FROM ledger_transfers ORDER BY id")

    late = await apply_event(uow(), _refund_event(refund, payment, "succeeded"))

    assert late == "stale"
    assert (await _stored(uow, refund.id)).status is RefundStatus.FAILED
    assert await _rows(engine, "SELECT id FROM ledger_transfers ORDER BY id") == transfers_before
    assert (await _wallet(uow, payment.user_id)).balance == 5000
    await _verify_clean(uow)


async def test_pending_refund_then_failure_event_voids_the_hold(
    uow: Any, engine: AsyncEngine, gateway: StripeGateway, proxied: StripeGateway,
    proxy: FaultProxy, localstripe: LocalStripe,
) -> None:  # fmt: skip
    payment = await _paid(uow, gateway, localstripe, amount=2500)
    admin = await _admin(uow)
    proxy.drop_before_forward(matching=ANY_REFUNDS)
    refund = await _refund(uow, proxied, admin, payment, 900)
    assert refund.status is RefundStatus.PENDING
    assert (await _wallet(uow, payment.user_id)).available == 1600

    outcome = await apply_event(
        uow(), _refund_event(refund, payment, "failed", stripe_id=stripe_events.new_id("re"))
    )

    assert outcome == "applied"
    assert (await _stored(uow, refund.id)).status is RefundStatus.FAILED
    hold = await _hold(uow, refund.hold_id)
    assert (hold.status, hold.captured) == (HoldStatus.VOIDED, 0)
    balance = await _wallet(uow, payment.user_id)
    assert (balance.balance, balance.available, balance.held) == (2500, 2500, 0)
    assert (await _payment(uow, payment.id)).refundable == 2500
    assert await _rows(engine, "SELECT id FROM ledger_transfers WHERE code IN "
                               "('refund', 'reversal') AND phase = 'posted'") == []  # fmt: skip
    # Nothing is left for the settling job, and it asks Stripe nothing.
    proxy.pass_through()
    assert await settle_refunds(uow(), proxied, quiet_for=timedelta(0)) == 0
    assert await _stripe_refunds(gateway, payment.stripe_intent_id) == []
    await _verify_clean(uow)


# -- bounds -----------------------------------------------------------------------------------


def _code(exc: BaseException) -> str:
    assert isinstance(exc, Conflict), repr(exc)
    return str(exc.problems[0].code)


async def _nothing_written(engine: AsyncEngine) -> None:
    assert await _rows(engine, "SELECT id FROM refunds") == []
    assert (
        await _rows(engine, "SELECT id FROM audit_events WHERE action LIKE 'billing.refund%'") == []
    )
    assert await _rows(engine, "SELECT key FROM idempotency_keys WHERE operation = "
                               "'refundPayment'") == []  # fmt: skip
    assert await _rows(engine, "SELECT id FROM ledger_holds WHERE code = 'refund'") == []


async def test_more_than_refundable_is_refused(
    uow: Any, engine: AsyncEngine, gateway: StripeGateway, localstripe: LocalStripe
) -> None:
    payment = await _paid(uow, gateway, localstripe, amount=2000)
    admin = await _admin(uow)

    with pytest.raises(Conflict) as caught:
        await _refund(uow, gateway, admin, payment, 2001)

    assert _code(caught.value) == "AMOUNT_EXCEEDS_REFUNDABLE"
    await _nothing_written(engine)
    assert await _stripe_refunds(gateway, payment.stripe_intent_id) == []
    assert (await _payment(uow, payment.id)).refundable == 2000


async def test_unpaid_payment_is_not_refundable(
    uow: Any, engine: AsyncEngine, gateway: StripeGateway
) -> None:
    user_id = await _user(uow)
    buyer = Principal(PrincipalKind.SESSION, user_id, Role.USER, ROLE_SCOPES[Role.USER])
    made = await create_top_up(
        uow(), gateway, TopUpPolicy(), buyer, 2000, "USD", f"topup-{uuid.uuid4()}"
    )
    admin = await _admin(uow)

    with pytest.raises(Conflict) as caught:
        await _refund(uow, gateway, admin, made.payment, 500)

    assert _code(caught.value) == "NOT_REFUNDABLE"
    await _nothing_written(engine)


async def test_two_concurrent_refunds_over_the_payment_one_wins(
    uow: Any, engine: AsyncEngine, gateway: StripeGateway, localstripe: LocalStripe
) -> None:
    payment = await _paid(uow, gateway, localstripe, amount=3000)
    admin = await _admin(uow)

    results = await asyncio.gather(
        _refund(uow, gateway, admin, payment, 2000),
        _refund(uow, gateway, admin, payment, 2000),
        return_exceptions=True,
    )

    won = [r for r in results if isinstance(r, Refund)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(won) == 1 and len(lost) == 1
    assert won[0].status is RefundStatus.SUCCEEDED
    assert _code(lost[0]) == "AMOUNT_EXCEEDS_REFUNDABLE"
    assert [r.amount for r in await _stripe_refunds(gateway, payment.stripe_intent_id)] == [2000]
    assert len(await _rows(engine, "SELECT id FROM refunds")) == 1
    assert (await _wallet(uow, payment.user_id)).balance == 1000
    assert (await _payment(uow, payment.id)).refundable == 1000
    await _verify_clean(uow)


async def test_same_key_twice_is_one_refund(
    uow: Any, engine: AsyncEngine, gateway: StripeGateway, localstripe: LocalStripe
) -> None:
    payment = await _paid(uow, gateway, localstripe, amount=3000)
    admin = await _admin(uow)
    key = f"refund-{uuid.uuid4()}"

    first = await _refund(uow, gateway, admin, payment, 700, key=key)
    again = await _refund(uow, gateway, admin, payment, 700, key=key)

    assert first.id == again.id
    assert again.status is RefundStatus.SUCCEEDED
    assert [r.id for r in await _stripe_refunds(gateway, payment.stripe_intent_id)] == [
        first.stripe_refund_id
    ]
    assert len(await _rows(engine, "SELECT id FROM refunds")) == 1
    assert (await _wallet(uow, payment.user_id)).balance == 2300

    with pytest.raises(Conflict) as caught:
        await _refund(uow, gateway, admin, payment, 800, key=key)

    assert _code(caught.value) == "IDEMPOTENCY_KEY_REUSED"
    assert len(await _rows(engine, "SELECT id FROM refunds")) == 1
    assert len(await _stripe_refunds(gateway, payment.stripe_intent_id)) == 1
    await _verify_clean(uow)


async def test_money_already_held_for_usage_cannot_be_refunded(
    uow: Any, engine: AsyncEngine, gateway: StripeGateway, localstripe: LocalStripe
) -> None:
    payment = await _paid(uow, gateway, localstripe, amount=3000)
    admin = await _admin(uow)
    async with uow() as u:  # a running machine has reserved most of the top-up
        await book.open_hold(
            u.ledger, POLICY, payment.user_id, AccountKind.COMPUTE_REVENUE, 2500, "USD",
            code=TransferCode.USAGE, reference="allocation:1", ttl=timedelta(hours=1),
            now=datetime.now(UTC),
        )  # fmt: skip
        await u.commit()
    before = await _wallet(uow, payment.user_id)

    with pytest.raises(InsufficientFunds):
        await _refund(uow, gateway, admin, payment, 1000)

    await _nothing_written(engine)
    assert await _wallet(uow, payment.user_id) == before
    assert (await _payment(uow, payment.id)).amount_refunded == 0
    assert await _stripe_refunds(gateway, payment.stripe_intent_id) == []
    # What is still available can be refunded.
    refund = await _refund(uow, gateway, admin, payment, 500)
    assert refund.status is RefundStatus.SUCCEEDED
    await _verify_clean(uow)
