"""Reconciliation against the real localstripe and PostgreSQL: each way Stripe and our records
can disagree is found, recorded once, and never "fixed" by the reconciler itself.

localstripe is flushed before each test, so its listings hold only that test's objects (the
webhooks registered by other tests survive a flush; they are fire-and-forget and point nowhere
that records anything here).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.audit.records import RequestMeta
from domain.identity.principal import Principal, PrincipalKind
from domain.identity.scopes import ROLE_SCOPES, Role
from domain.ledger.policy import LedgerPolicy
from domain.payments.findings import Finding, IssueKind
from domain.payments.gateway import GatewayEvent
from domain.payments.payments import Payment, PaymentStatus
from domain.payments.reconcile import reconcile
from domain.payments.refunding import refund_payment
from domain.payments.refunds import RefundStatus
from domain.payments.topups import TopUpPolicy, create_top_up
from domain.payments.webhooks import apply_event
from infra.stripe.gateway import StripeGateway
from infra.stripe.signatures import verify_event
from tests.support import stripe_events
from tests.support.localstripe import LocalStripe

SECRET = "whsec_reconcile_tests"
LATER = timedelta(hours=1)  # "now" for a run that counts every event as long settled


@pytest.fixture
async def gateway(localstripe: LocalStripe) -> AsyncIterator[StripeGateway]:
    localstripe.flush()
    made = StripeGateway(localstripe.api_key, localstripe.url, timeout_seconds=10)
    yield made
    await made.aclose()


@pytest.fixture
def since() -> datetime:
    # Stripe's `created` is whole seconds; start the window before this test made anything.
    return datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=2)


# -- helpers ----------------------------------------------------------------------------------


async def _user(uow: Any, role: Role = Role.USER) -> Principal:
    async with uow() as u:
        user = await u.users.add(f"{role}-{uuid.uuid4().hex[:10]}@example.com", None, role)
        await u.commit()
    return Principal(PrincipalKind.SESSION, user.id, role, ROLE_SCOPES[role])


async def _top_up(uow: Any, gateway: StripeGateway, amount: int = 2500) -> Payment:
    buyer = await _user(uow)
    made = await create_top_up(
        uow(), gateway, TopUpPolicy(), buyer, amount, "USD", f"topup-{uuid.uuid4()}"
    )
    assert made.payment.stripe_intent_id is not None
    return made.payment


def _verified(event: dict[str, Any]) -> GatewayEvent:
    body = stripe_events.body_of(event)
    header = stripe_events.sign(body, SECRET, int(time.time()))
    return verify_event(body, header, [SECRET], tolerance_seconds=300)


async def _localstripe_event(
    gateway: StripeGateway, since: datetime, intent_id: str
) -> GatewayEvent:
    """localstripe's own payment_intent.succeeded for the intent (it sends it to webhooks)."""
    found = [e for e in await gateway.events_since(since)
             if e.type == "payment_intent.succeeded" and e.object.get("id") == intent_id]  # fmt: skip
    assert len(found) == 1, found
    return found[0]


async def _paid_and_credited(
    uow: Any, gateway: StripeGateway, localstripe: LocalStripe, since: datetime,
    amount: int = 2500,
) -> Payment:  # fmt: skip
    """Paid at localstripe, credited by applying localstripe's own event."""
    payment = await _top_up(uow, gateway, amount)
    assert payment.stripe_intent_id is not None
    await localstripe.pay(payment.stripe_intent_id)
    event = await _localstripe_event(gateway, since, payment.stripe_intent_id)
    assert await apply_event(uow(), event) == "applied"
    return await _payment(uow, payment.id)


def _succeeded_event(payment: Payment, amount: int | None = None) -> GatewayEvent:
    """A signed succeeded event of our own making (not one localstripe has)."""
    return _verified(stripe_events.payment_intent(
        "succeeded", intent_id=payment.stripe_intent_id,
        amount=payment.amount if amount is None else amount,
        metadata={"gpucloud_payment": str(payment.id)},
    ))  # fmt: skip


async def _payment(uow: Any, payment_id: int) -> Payment:
    async with uow() as u:
        found = await u.payments.get(payment_id)
    assert found is not None
    return found


def _summary(findings: list[Finding]) -> list[tuple[str, str, int | None, int | None]]:
    return sorted((str(f.kind), f.stripe_object_id, f.payment_id, f.refund_id) for f in findings)


async def _rows(engine: AsyncEngine, sql: str) -> list[tuple[Any, ...]]:
    async with engine.connect() as conn:
        return [tuple(r) for r in await conn.execute(text(sql))]


async def _issues(engine: AsyncEngine) -> list[tuple[Any, ...]]:
    return sorted(await _rows(
        engine, "SELECT kind, stripe_object_id, payment_id, refund_id FROM reconciliation_issues"
    ))  # fmt: skip


async def _money_state(engine: AsyncEngine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row that holds a status or an amount, whole."""
    tables = ("payments", "refunds", "ledger_balances", "ledger_transfers", "ledger_holds",
              "ledger_accounts", "stripe_events", "outbox", "audit_events")  # fmt: skip
    return {t: sorted(await _rows(engine, f"SELECT * FROM {t}"), key=repr) for t in tables}


# -- each kind of finding ---------------------------------------------------------------------


async def test_paid_at_stripe_but_never_credited_is_missing_credit(
    uow: Any, engine: AsyncEngine, gateway: StripeGateway, localstripe: LocalStripe,
    since: datetime,
) -> None:  # fmt: skip
    payment = await _top_up(uow, gateway, 3000)
    assert payment.stripe_intent_id is not None
    await localstripe.pay(payment.stripe_intent_id)

    found = await reconcile(uow(), gateway, since, datetime.now(UTC))

    assert _summary(found) == [("missing_credit", payment.stripe_intent_id, payment.id, None)]
    assert (found[0].expected, found[0].actual) == ("succeeded", "requires_payment")
    assert await _issues(engine) == [("missing_credit", payment.stripe_intent_id, payment.id, None)]


async def test_paid_intent_naming_a_payment_we_do_not_have_is_unknown(
    uow: Any, engine: AsyncEngine, gateway: StripeGateway, localstripe: LocalStripe,
    since: datetime,
) -> None:  # fmt: skip
    ours = await gateway.create_payment_intent(
        1200, "USD", idempotency_key=f"k-{uuid.uuid4()}", metadata={"gpucloud_payment": "999999"}
    )
    not_ours = await gateway.create_payment_intent(
        1300, "USD", idempotency_key=f"k-{uuid.uuid4()}", metadata={"shop": "elsewhere"}
    )
    await localstripe.pay(ours.id)
    await localstripe.pay(not_ours.id)  # another product on the same account: not our business

    found = await reconcile(uow(), gateway, since, datetime.now(UTC))

    assert _summary(found) == [("unknown_payment", ours.id, None, None)]
    assert found[0].actual == "1200 USD"
    assert await _issues(engine) == [("unknown_payment", ours.id, None, None)]


async def test_refund_made_at_stripe_directly_is_outside_the_platform(
    uow: Any, engine: AsyncEngine, gateway: StripeGateway, localstripe: LocalStripe,
    since: datetime,
) -> None:  # fmt: skip
    payment = await _paid_and_credited(uow, gateway, localstripe, since, 2500)
    assert payment.stripe_intent_id is not None
    outside = await gateway.create_refund(
        payment.stripe_intent_id, 600, idempotency_key=f"k-{uuid.uuid4()}", metadata={}
    )

    found = await reconcile(uow(), gateway, since, datetime.now(UTC))

    # Once, though both the refund and its balance transaction show it.
    assert _summary(found) == [("refund_outside_platform", outside.id, None, None)]
    assert found[0].actual == "600 USD"
    assert await _issues(engine) == [("refund_outside_platform", outside.id, None, None)]


async def test_credit_for_an_intent_stripe_never_collected(
    uow: Any, engine: AsyncEngine, gateway: StripeGateway, since: datetime
) -> None:
    payment = await _top_up(uow, gateway, 2000)  # never paid at localstripe
    assert await apply_event(uow(), _succeeded_event(payment)) == "applied"  # forged, applied
    assert (await _payment(uow, payment.id)).status is PaymentStatus.SUCCEEDED

    found = await reconcile(uow(), gateway, since, datetime.now(UTC))

    assert _summary(found) == [
        ("credit_without_payment", payment.stripe_intent_id, payment.id, None)
    ]
    assert (found[0].expected, found[0].actual) == ("requires_payment_method", "succeeded")


async def test_settled_event_never_applied_is_undelivered(
    uow: Any, engine: AsyncEngine, gateway: StripeGateway, localstripe: LocalStripe,
    since: datetime,
) -> None:  # fmt: skip
    payment = await _top_up(uow, gateway, 1800)
    assert payment.stripe_intent_id is not None
    await localstripe.pay(payment.stripe_intent_id)
    theirs = await _localstripe_event(gateway, since, payment.stripe_intent_id)
    # Credited by another event (so no missing credit); localstripe's own was never applied.
    assert await apply_event(uow(), _succeeded_event(payment)) == "applied"

    within_grace = await reconcile(uow(), gateway, since, datetime.now(UTC))
    settled = await reconcile(uow(), gateway, since, datetime.now(UTC) + LATER)

    assert within_grace == []  # it may still be on its way
    assert _summary(settled) == [("undelivered_event", theirs.id, None, None)]
    assert "payment_intent.succeeded" in settled[0].detail


async def test_refund_we_think_failed_but_stripe_paid_is_a_status_mismatch(
    uow: Any, engine: AsyncEngine, gateway: StripeGateway, localstripe: LocalStripe,
    since: datetime,
) -> None:  # fmt: skip
    payment = await _paid_and_credited(uow, gateway, localstripe, since, 2500)
    admin = await _user(uow, Role.ADMIN)
    refund = await refund_payment(
        uow(), gateway, LedgerPolicy(), admin, RequestMeta(), payment.id, 700, "asked",
        f"r-{uuid.uuid4()}",
    )  # fmt: skip
    assert refund.status is RefundStatus.SUCCEEDED and refund.stripe_refund_id is not None
    failed = _verified(stripe_events.refund(
        "failed", payment_intent=str(payment.stripe_intent_id), amount=700,
        refund_id=refund.stripe_refund_id, metadata={"gpucloud_refund": str(refund.id)},
    ))  # fmt: skip
    assert await apply_event(uow(), failed) == "applied"

    found = await reconcile(uow(), gateway, since, datetime.now(UTC))

    assert _summary(found) == [("refund_status_mismatch", refund.stripe_refund_id, None, refund.id)]
    assert (found[0].expected, found[0].actual) == ("succeeded", "failed")


# -- what reconciliation must not do ----------------------------------------------------------


async def test_paid_applied_and_refunded_through_the_platform_is_clean(
    uow: Any, engine: AsyncEngine, gateway: StripeGateway, localstripe: LocalStripe,
    since: datetime,
) -> None:  # fmt: skip
    payment = await _paid_and_credited(uow, gateway, localstripe, since, 4000)
    admin = await _user(uow, Role.ADMIN)
    refund = await refund_payment(
        uow(), gateway, LedgerPolicy(), admin, RequestMeta(), payment.id, 1500, "asked",
        f"r-{uuid.uuid4()}",
    )  # fmt: skip
    assert refund.status is RefundStatus.SUCCEEDED
    unpaid = await _top_up(uow, gateway, 900)  # opened and abandoned: not a disagreement
    assert unpaid.status is PaymentStatus.REQUIRES_PAYMENT

    found = await reconcile(uow(), gateway, since, datetime.now(UTC) + LATER)

    assert found == []
    assert await _issues(engine) == []


async def _disagreements(
    uow: Any, gateway: StripeGateway, localstripe: LocalStripe, since: datetime
) -> list[tuple[str, str]]:
    """One of each kind of finding; returns (kind, Stripe object named) for each expected one."""
    missing = await _top_up(uow, gateway, 1000)
    assert missing.stripe_intent_id is not None
    await localstripe.pay(missing.stripe_intent_id)
    unknown = await gateway.create_payment_intent(
        1100, "USD", idempotency_key=f"k-{uuid.uuid4()}", metadata={"gpucloud_payment": "424242"}
    )
    await localstripe.pay(unknown.id)
    credited = await _paid_and_credited(uow, gateway, localstripe, since, 1200)
    assert credited.stripe_intent_id is not None
    outside = await gateway.create_refund(
        credited.stripe_intent_id, 300, idempotency_key=f"k-{uuid.uuid4()}", metadata={}
    )
    forged = await _top_up(uow, gateway, 1300)
    assert await apply_event(uow(), _succeeded_event(forged)) == "applied"
    # Once settled, localstripe's events for the two intents nobody credited were never applied.
    never_applied = [await _localstripe_event(gateway, since, intent_id)
                     for intent_id in (missing.stripe_intent_id, unknown.id)]  # fmt: skip
    return sorted([
        (str(IssueKind.MISSING_CREDIT), missing.stripe_intent_id),
        (str(IssueKind.UNKNOWN_PAYMENT), unknown.id),
        (str(IssueKind.REFUND_OUTSIDE_PLATFORM), outside.id),
        (str(IssueKind.CREDIT_WITHOUT_PAYMENT), str(forged.stripe_intent_id)),
        *((str(IssueKind.UNDELIVERED_EVENT), event.id) for event in never_applied),
    ])  # fmt: skip


async def test_each_finding_is_recorded_once_across_runs(
    uow: Any, engine: AsyncEngine, gateway: StripeGateway, localstripe: LocalStripe,
    since: datetime,
) -> None:  # fmt: skip
    expected = await _disagreements(uow, gateway, localstripe, since)
    now = datetime.now(UTC) + LATER

    first = await reconcile(uow(), gateway, since, now)
    second = await reconcile(uow(), gateway, since, now)

    assert sorted((str(f.kind), f.stripe_object_id) for f in first) == expected
    assert second == []
    assert sorted((k, o) for k, o, _, _ in await _issues(engine)) == expected


async def test_reconcile_changes_no_balance_and_no_status(
    uow: Any, engine: AsyncEngine, gateway: StripeGateway, localstripe: LocalStripe,
    since: datetime,
) -> None:  # fmt: skip
    expected = await _disagreements(uow, gateway, localstripe, since)
    before = await _money_state(engine)

    found = await reconcile(uow(), gateway, since, datetime.now(UTC) + LATER)

    assert len(found) == len(expected) == 6
    assert await _money_state(engine) == before


async def test_a_top_up_paid_through_checkout_leaves_its_unused_intent_unflagged(
    uow: Any, gateway: StripeGateway, localstripe: LocalStripe, since: datetime
) -> None:
    payment = await _top_up(uow, gateway, amount=1800)
    checkout = _verified(stripe_events.checkout_completed(
        payment_intent="pi_checkout_paid", amount_total=1800,
        metadata={"gpucloud_payment": str(payment.id)},
    ))  # fmt: skip
    assert await apply_event(uow(), checkout) == "applied"

    # The top-up's own intent stays unpaid at Stripe: another way to pay, not used.
    assert await reconcile(uow(), gateway, since, datetime.now(UTC)) == []

    # Paid as well, it is money nobody credited.
    assert payment.stripe_intent_id is not None
    await localstripe.pay(payment.stripe_intent_id)
    found = await reconcile(uow(), gateway, since, datetime.now(UTC))
    assert _summary(found) == [("missing_credit", payment.stripe_intent_id, payment.id, None)]
