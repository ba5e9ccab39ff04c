"""Payments, refunds, Stripe events and findings on real PostgreSQL: mapping, paging, locking."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from domain.identity.scopes import Role
from domain.ledger import book
from domain.ledger.accounts import AccountKind, platform, wallet
from domain.ledger.policy import LedgerPolicy
from domain.ledger.transfers import TransferCode
from domain.pagination import Page, PageRequest
from domain.payments.findings import Finding, IssueKind
from domain.payments.payments import PaymentStatus
from domain.payments.refunds import Refund, RefundStatus
from domain.ports import NewRefund

T = TypeVar("T")


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


async def _user(uow: Any) -> int:
    async with uow() as u:
        user = await u.users.add(f"{_unique('payer')}@example.com", None, Role.USER)
        await u.commit()
    return int(user.id)


async def _funded_hold(u: Any, user_id: int) -> int:
    """A refund's hold: credit the wallet, then reserve part of it as refunds in flight."""
    await book.move(u.ledger, platform(AccountKind.PROMOTIONAL_CREDIT, "USD"),
                    wallet(user_id, "USD"), 1000, TransferCode.CREDIT)  # fmt: skip
    hold = await book.open_hold(
        u.ledger, LedgerPolicy(), user_id, AccountKind.REFUNDS_IN_FLIGHT, 500, "USD",
        code=TransferCode.REFUND, reference=None, ttl=timedelta(days=1), now=datetime.now(UTC),
    )  # fmt: skip
    return int(hold.id)


async def _all_pages(fetch: Callable[[PageRequest], Awaitable[Page[T]]], size: int) -> list[T]:
    seen: list[T] = []
    after = None
    while True:
        page = await fetch(PageRequest(size, after))
        seen += [item for _, item in page.items]
        assert page.has_previous_page == (after is not None)
        if not page.has_next_page:
            return seen
        after = page.items[-1][0]


async def _payment_with_refunds(uow: Any, user_id: int, count: int) -> tuple[int, list[Refund]]:
    async with uow() as u:
        hold_id = await _funded_hold(u, user_id)
        payment = await u.payments.add(user_id, 5000, "USD")
        made = [
            await u.payments.add_refund(
                NewRefund(payment.id, user_id, 100 + i, "USD", f"reason {i}", hold_id, None)
            )
            for i in range(count)
        ]
        await u.commit()
    return payment.id, made


async def test_payment_round_trip_keeps_every_field(uow) -> None:
    user_id = await _user(uow)
    async with uow() as u:
        credit = await book.move(u.ledger, platform(AccountKind.STRIPE_CLEARING, "USD"),
                                 wallet(user_id, "USD"), 2500, TransferCode.TOP_UP)  # fmt: skip
        added = await u.payments.add(user_id, 2500, "USD")
        await u.commit()
    assert (added.user_id, added.amount, added.currency) == (user_id, 2500, "USD")
    assert added.status is PaymentStatus.PENDING
    assert (added.stripe_intent_id, added.stripe_checkout_id, added.checkout_url) == (None,) * 3
    assert (added.amount_received, added.amount_refunded, added.version) == (0, 0, 1)
    assert added.credit_transfer_id is None and added.failure_reason is None

    intent, checkout = _unique("pi"), _unique("cs")
    changed = replace(
        added, status=PaymentStatus.SUCCEEDED, stripe_intent_id=intent,
        stripe_checkout_id=checkout, checkout_url=f"https://checkout.example/{checkout}",
        amount_received=2500, amount_refunded=700, credit_transfer_id=credit.id,
        failure_reason="earlier attempt declined", version=2,
    )  # fmt: skip
    async with uow() as u:
        saved = await u.payments.save(changed)
        await u.commit()
    assert saved == replace(changed, updated_at=saved.updated_at)
    assert saved.updated_at > added.updated_at

    async with uow() as u:
        assert await u.payments.get(added.id) == saved
        assert await u.payments.get(added.id, for_update=True) == saved
        assert await u.payments.by_intent(intent) == saved
        assert await u.payments.by_intent(intent, for_update=True) == saved
        assert await u.payments.by_intent(_unique("pi")) is None
        assert await u.payments.get(added.id + 1_000_000) is None
        assert await u.payments.get_many([added.id, added.id + 1_000_000]) == {added.id: saved}
        assert await u.payments.get_many([]) == {}
    assert saved.refundable == 1800


async def test_of_user_pages_newest_first_and_only_that_user(uow) -> None:
    user_id, other_id = await _user(uow), await _user(uow)
    async with uow() as u:
        mine = [(await u.payments.add(user_id, 100 + i, "USD")).id for i in range(5)]
        await u.payments.add(other_id, 999, "USD")
        await u.commit()
    async with uow() as u:
        first = await u.payments.of_user(user_id, PageRequest(2, None))
        assert [key for key, _ in first.items] == mine[::-1][:2]
        assert first.has_next_page and not first.has_previous_page
        everything = await _all_pages(lambda p: u.payments.of_user(user_id, p), 2)
    assert [p.id for p in everything] == mine[::-1]
    assert [p.amount for p in everything] == [104, 103, 102, 101, 100]
    assert {p.user_id for p in everything} == {user_id}


async def test_refund_round_trip_lookup_and_save(uow) -> None:
    user_id = await _user(uow)
    requester = await _user(uow)
    async with uow() as u:
        hold_id = await _funded_hold(u, user_id)
        payment = await u.payments.add(user_id, 5000, "USD")
        added = await u.payments.add_refund(
            NewRefund(payment.id, user_id, 300, "USD", "duplicate charge", hold_id, requester)
        )
        await u.commit()
    assert (added.payment_id, added.user_id, added.amount, added.currency) == (
        payment.id, user_id, 300, "USD",
    )  # fmt: skip
    assert (added.reason, added.hold_id, added.requested_by) == (
        "duplicate charge", hold_id, requester,
    )  # fmt: skip
    assert added.status is RefundStatus.PENDING
    assert (added.stripe_refund_id, added.failure_reason, added.version) == (None, None, 1)

    stripe_id = _unique("re")
    changed = replace(added, status=RefundStatus.FAILED, stripe_refund_id=stripe_id,
                      failure_reason="card expired", version=3)  # fmt: skip
    async with uow() as u:
        saved = await u.payments.save_refund(changed)
        await u.commit()
    assert saved == replace(changed, updated_at=saved.updated_at)
    assert saved.updated_at > added.updated_at

    async with uow() as u:
        assert await u.payments.refund(added.id) == saved
        assert await u.payments.refund(added.id, for_update=True) == saved
        assert await u.payments.refund_by_stripe_id(stripe_id) == saved
        assert await u.payments.refund_by_stripe_id(stripe_id, for_update=True) == saved
        assert await u.payments.refund_by_stripe_id(_unique("re")) is None
        assert await u.payments.refund(added.id + 1_000_000) is None
        assert await u.payments.refunds_by_id([added.id, added.id + 1_000_000]) == {added.id: saved}
        assert await u.payments.refunds_by_id([]) == {}


async def test_refunds_of_user_newest_first(uow) -> None:
    user_id = await _user(uow)
    payment_id, made = await _payment_with_refunds(uow, user_id, 3)
    await _payment_with_refunds(uow, user_id, 1)
    async with uow() as u:
        newest_first = await _all_pages(lambda p: u.payments.refunds_of_user(user_id, p), 2)
    ids = [r.id for r in newest_first]
    assert ids == sorted(ids, reverse=True) and len(ids) == 4
    assert [r for r in newest_first if r.payment_id == payment_id] == made[::-1]


async def test_claim_unsettled_refunds_skips_rows_locked_elsewhere(uow) -> None:
    user_id = await _user(uow)
    _, made = await _payment_with_refunds(uow, user_id, 4)
    async with uow() as u:
        # One submitted (still unsettled), one settled (never claimed).
        await u.payments.save_refund(replace(made[1], status=RefundStatus.SUBMITTED, version=2))
        await u.payments.save_refund(replace(made[3], status=RefundStatus.SUCCEEDED, version=2))
        await u.commit()
    cutoff = datetime.now(UTC) + timedelta(seconds=5)
    mine = {r.id for r in made}

    async with uow() as holder:
        locked = await holder.payments.refund(made[0].id, for_update=True)
        assert locked is not None
        async with uow() as worker:
            claimed = await worker.payments.claim_unsettled_refunds(cutoff, 1000)
            ids = [r.id for r in claimed if r.id in mine]
            assert ids == [made[1].id, made[2].id]
            assert [r.status for r in claimed if r.id in mine] == [
                RefundStatus.SUBMITTED, RefundStatus.PENDING,
            ]  # fmt: skip
            all_ids = [r.id for r in claimed]
            assert all_ids == sorted(all_ids)
            # A second worker finds only what neither of the others holds.
            async with uow() as second:
                again = await second.payments.claim_unsettled_refunds(cutoff, 1000)
                assert not {r.id for r in again} & mine
        await holder.rollback()

    async with uow() as u:
        # Touched after the cutoff: not yet due.
        early = made[0].created_at - timedelta(seconds=1)
        assert not {r.id for r in await u.payments.claim_unsettled_refunds(early, 1000)} & mine
        limited = await u.payments.claim_unsettled_refunds(cutoff, 1)
        assert len(limited) == 1


async def test_record_event_once_and_known_events(uow) -> None:
    first, second, unknown = _unique("evt"), _unique("evt"), _unique("evt")
    created = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    async with uow() as u:
        assert await u.stripe.record_event(first, "payment_intent.succeeded", created, "applied")
        assert await u.stripe.record_event(second, "charge.refunded", created, "ignored")
        await u.commit()
    async with uow() as u:
        assert not await u.stripe.record_event(first, "payment_intent.succeeded", created, "x")
        assert await u.stripe.known_events([first, second, unknown]) == {first, second}
        assert await u.stripe.known_events([unknown]) == set()
        assert await u.stripe.known_events([]) == set()


async def test_flag_once_per_kind_and_object_and_issues_page_newest_first(uow) -> None:
    obj = _unique("pi")
    findings = [
        Finding(IssueKind.MISSING_CREDIT, obj, "paid, not credited", payment_id=7,
                expected="2500", actual="0"),
        Finding(IssueKind.AMOUNT_MISMATCH, obj, "amounts differ"),
        Finding(IssueKind.REFUND_OUTSIDE_PLATFORM, _unique("re"), "dashboard refund",
                refund_id=3),
    ]  # fmt: skip
    async with uow() as u:
        assert [await u.stripe.flag(f) for f in findings] == [True, True, True]
        await u.commit()
    async with uow() as u:
        assert not await u.stripe.flag(replace(findings[0], detail="seen again"))
        await u.commit()

    async with uow() as u:
        first = await u.stripe.issues(PageRequest(2, None))
        assert len(first.items) == 2 and first.has_next_page
        issues = await _all_pages(u.stripe.issues, 2)
    ids = [i.id for i in issues]
    assert ids == sorted(ids, reverse=True)
    ours = [i.finding for i in issues if i.finding in findings]
    assert ours == findings[::-1]  # the repeat changed nothing
    assert all(i.detected_at.tzinfo is not None for i in issues)
