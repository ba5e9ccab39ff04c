"""The ledger on real PostgreSQL: balances follow transfers, `verify` proves it, and the database
itself refuses overdrafts, edits of history, double reversals and mixed currencies."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.errors import Conflict, DomainError, InvalidInput, NotFound
from domain.identity.scopes import Role
from domain.ledger import book
from domain.ledger.accounts import Account, AccountKind, Balance, platform, wallet
from domain.ledger.errors import InsufficientFunds, LedgerErrorCode
from domain.ledger.holds import Capture, Expire, Extend, Hold, HoldStatus, Void
from domain.ledger.policy import LedgerPolicy
from domain.ledger.transfers import Phase, Transfer, TransferCode, TransferSpec
from infra.db.money_tables import ledger_holds, ledger_transfers
from infra.db.uow import SqlUnitOfWork

Uow = Callable[[], SqlUnitOfWork]
POLICY = LedgerPolicy()
HOUR = timedelta(hours=1)
PROMO = platform(AccountKind.PROMOTIONAL_CREDIT, "USD")
REVENUE = platform(AccountKind.COMPUTE_REVENUE, "USD")


async def new_user(uow: Uow, email: str) -> int:
    async with uow() as u:
        user = await u.users.add(email, None, Role.USER)
        await u.commit()
    return user.id


async def credit(uow: Uow, user_id: int, amount: int, currency: str = "USD") -> Transfer:
    async with uow() as u:
        moved = await book.move(u.ledger, platform(AccountKind.PROMOTIONAL_CREDIT, currency),
                                wallet(user_id, currency), amount, TransferCode.CREDIT)  # fmt: skip
        await u.commit()
    return moved


async def funded(uow: Uow, email: str, amount: int) -> tuple[int, Account]:
    user_id = await new_user(uow, email)
    await credit(uow, user_id, amount)
    async with uow() as u:
        account = (await u.ledger.accounts([wallet(user_id, "USD")]))[wallet(user_id, "USD")]
    return user_id, account


async def sums(uow: Uow, account_id: int) -> Balance:
    async with uow() as u:
        return (await u.ledger.balances([account_id]))[account_id]


async def open_hold(uow: Uow, user_id: int, amount: int, *, policy: LedgerPolicy = POLICY,
                    code: TransferCode = TransferCode.USAGE,
                    counterparty: AccountKind = AccountKind.COMPUTE_REVENUE,
                    ttl: timedelta = HOUR, now: datetime | None = None,
                    reference: str | None = "allocation:1") -> Hold:  # fmt: skip
    async with uow() as u:
        hold = await book.open_hold(u.ledger, policy, user_id, counterparty, amount, "USD",
                                    code=code, reference=reference, ttl=ttl,
                                    now=now or datetime.now(UTC))  # fmt: skip
        await u.commit()
    return hold


async def act(uow: Uow, hold_id: int, action: object, now: datetime | None = None,
              policy: LedgerPolicy | None = None) -> Hold:  # fmt: skip
    async with uow() as u:
        hold, _ = await book.act(u.ledger, hold_id, action, now or datetime.now(UTC), policy)  # type: ignore[arg-type]
        await u.commit()
    return hold


async def problems(uow: Uow) -> list[str]:
    async with uow() as u:
        return (await u.ledger.verify()).problems


async def count(engine: AsyncEngine, table: object) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())  # type: ignore[arg-type]


def code(exc: pytest.ExceptionInfo[DomainError]) -> str:
    return exc.value.problems[0].code


# -- the round trip ------------------------------------------------------------------------------


async def test_credit_hold_capture_and_void_keep_balances_and_verify_clean(uow, engine) -> None:
    user_id, account = await funded(uow, "a@example.com", 1000)
    assert await sums(uow, account.id) == Balance(credits_posted=1000)

    a = await open_hold(uow, user_id, 300)
    assert (a.amount, a.captured, a.status) == (300, 0, HoldStatus.OPEN)
    b = await sums(uow, account.id)
    assert (b.balance, b.held, b.available) == (1000, 300, 700)

    a = await act(uow, a.id, Capture(100))
    a = await act(uow, a.id, Capture(50))
    b = await sums(uow, account.id)
    assert (b.balance, b.held, b.available) == (850, 150, 700)

    a = await act(uow, a.id, Capture(20, final=True))
    assert (a.status, a.captured, a.remaining) == (HoldStatus.CAPTURED, 170, 0)
    b = await sums(uow, account.id)
    assert (b.balance, b.held, b.available) == (830, 0, 830)

    second = await open_hold(uow, user_id, 200, reference="allocation:2")
    assert (await sums(uow, account.id)).available == 630
    voided = await act(uow, second.id, Void())
    assert voided.status is HoldStatus.VOIDED
    assert voided.resolved_at is not None
    b = await sums(uow, account.id)
    assert (b.balance, b.held, b.available) == (830, 0, 830)

    async with uow() as u:
        found = await u.ledger.accounts([PROMO, REVENUE])
        promo, revenue = found[PROMO], found[REVENUE]
        platform_sums = await u.ledger.balances([promo.id, revenue.id])
        by_reference = await u.ledger.transfers_for("allocation:1")
        stored = await u.ledger.holds([a.id, second.id])
    assert platform_sums[revenue.id] == Balance(credits_posted=170)  # summed over its shards
    assert platform_sums[promo.id].balance == -1000
    assert [(t.spec.phase, t.spec.amount) for t in by_reference] == [
        (Phase.PENDING, 300), (Phase.POST_PENDING, 100), (Phase.POST_PENDING, 50),
        (Phase.POST_PENDING, 20), (Phase.VOID_PENDING, 130),
    ]  # fmt: skip
    assert stored[a.id] == a
    assert stored[second.id].status is HoldStatus.VOIDED

    async with uow() as u:
        check = await u.ledger.verify()
    assert check.problems == []
    assert check.accounts_checked == 3
    assert check.transfers_checked == await count(engine, ledger_transfers) == 8


async def test_verify_reports_a_tampered_projection_and_hold(uow, engine) -> None:
    user_id, account = await funded(uow, "t@example.com", 500)
    hold = await open_hold(uow, user_id, 100)
    await act(uow, hold.id, Capture(40))
    assert await problems(uow) == []

    async with engine.begin() as conn:
        await conn.execute(text(
            "UPDATE ledger_balances SET credits_posted = credits_posted + 7 WHERE account_id = :a"
        ), {"a": account.id})  # fmt: skip
    found = await problems(uow)
    assert any(p.startswith(f"account {account.id}: ") for p in found), found
    assert any(p.startswith("USD: accounts net to 7 posted") for p in found), found

    async with engine.begin() as conn:
        await conn.execute(text(
            "UPDATE ledger_balances SET credits_posted = credits_posted - 7 WHERE account_id = :a"
        ), {"a": account.id})  # fmt: skip
        await conn.execute(text("UPDATE ledger_holds SET captured = 10 WHERE id = :h"),
                           {"h": hold.id})  # fmt: skip
    found = await problems(uow)
    assert found == [
        f"hold {hold.id} (open): row says 100 held, 10 captured; "
        "transfers say 100 held, 40 captured, 0 released"
    ]


async def test_transfers_cannot_be_changed_or_removed(uow, engine) -> None:
    await funded(uow, "h@example.com", 500)
    statements = [
        "UPDATE ledger_transfers SET amount = amount + 1",
        "DELETE FROM ledger_transfers",
        "TRUNCATE ledger_transfers CASCADE",
    ]
    for statement in statements:
        with pytest.raises(DBAPIError) as caught:
            async with engine.begin() as conn:
                await conn.execute(text(statement))
        assert "ledger_transfers is append-only" in str(caught.value.orig)
        assert getattr(caught.value.orig, "sqlstate", None) == "42501"
    async with engine.connect() as conn:
        amounts = (await conn.execute(select(ledger_transfers.c.amount))).scalars().all()
    assert amounts == [500]
    assert await problems(uow) == []


# -- overdraft ---------------------------------------------------------------------------------


async def test_a_hold_beyond_the_available_balance_is_refused_and_leaves_no_row(
    uow, engine
) -> None:
    user_id, account = await funded(uow, "poor@example.com", 100)
    await open_hold(uow, user_id, 30)
    with pytest.raises(InsufficientFunds) as caught:
        await open_hold(uow, user_id, 71)
    assert code(caught) == LedgerErrorCode.INSUFFICIENT_FUNDS
    assert (caught.value.account_id, caught.value.available, caught.value.needed) == (
        account.id, 70, 71,
    )  # fmt: skip
    assert await count(engine, ledger_holds) == 1

    # A caller whose transaction goes on after the refusal commits no trace of it.
    async with uow() as u:
        with pytest.raises(InsufficientFunds):
            await book.open_hold(u.ledger, POLICY, user_id, AccountKind.COMPUTE_REVENUE, 500,
                                 "USD", code=TransferCode.USAGE, reference=None, ttl=HOUR,
                                 now=datetime.now(UTC))  # fmt: skip
        await book.open_hold(u.ledger, POLICY, user_id, AccountKind.COMPUTE_REVENUE, 70, "USD",
                             code=TransferCode.USAGE, reference=None, ttl=HOUR,
                             now=datetime.now(UTC))  # fmt: skip
        await u.commit()
    assert await count(engine, ledger_holds) == 2
    b = await sums(uow, account.id)
    assert (b.balance, b.held, b.available) == (100, 100, 0)
    with pytest.raises(InsufficientFunds):
        await open_hold(uow, user_id, 1)
    assert await problems(uow) == []


async def test_the_database_refuses_an_overdraft_the_python_check_never_saw(uow, engine) -> None:
    user_id, account = await funded(uow, "bypass@example.com", 100)
    await open_hold(uow, user_id, 40)

    async with uow() as u:
        revenue = (await u.ledger.accounts([REVENUE]))[REVENUE]
    too_much = TransferSpec(debit=account.id, credit=revenue.id, amount=61, currency="USD",
                            code=TransferCode.USAGE)  # fmt: skip
    # Straight to the repository, skipping book.post's lock and check: once after looking the
    # accounts up in the same unit of work, once in a fresh one that never saw them.
    async with uow() as u:
        await u.ledger.accounts([wallet(user_id, "USD"), REVENUE])
        with pytest.raises(InsufficientFunds) as caught:
            await u.ledger.write([too_much])
    assert code(caught) == LedgerErrorCode.INSUFFICIENT_FUNDS
    async with uow() as u:
        with pytest.raises(InsufficientFunds):
            await u.ledger.write([too_much])

    b = await sums(uow, account.id)
    assert (b.balance, b.held, b.available) == (100, 40, 60)
    assert await count(engine, ledger_transfers) == 2  # the credit and the hold's reservation

    # Exactly the available balance is allowed by the same constraint.
    async with uow() as u:
        written = await u.ledger.write([TransferSpec(
            debit=account.id, credit=revenue.id, amount=60, currency="USD",
            code=TransferCode.USAGE)])  # fmt: skip
        await u.commit()
    assert written[0].spec.amount == 60
    assert (await sums(uow, account.id)).available == 0
    assert await problems(uow) == []


# -- reversals -----------------------------------------------------------------------------------


async def test_a_reversal_is_linked_and_happens_once(uow, engine) -> None:
    user_id, account = await funded(uow, "rev@example.com", 1)
    granted = await credit(uow, user_id, 250)
    async with uow() as u:
        back = await book.reverse(u.ledger, granted.id, "granted by mistake")
        await u.commit()
    assert back.spec.reverses_id == granted.id
    assert back.spec.code is TransferCode.REVERSAL
    assert (back.spec.debit, back.spec.credit) == (granted.spec.credit, granted.spec.debit)
    assert (back.spec.amount, back.spec.memo) == (250, "granted by mistake")
    assert (await sums(uow, account.id)).balance == 1

    async with uow() as u:
        with pytest.raises(Conflict) as caught:
            await book.reverse(u.ledger, granted.id, "again")
        assert (await u.ledger.reversal_of(granted.id)) == back
    assert code(caught) == LedgerErrorCode.ALREADY_REVERSED

    hold = await open_hold(uow, user_id, 1)
    async with uow() as u:
        (opening,) = await u.ledger.transfers_for("allocation:1")
        assert opening.spec.hold_id == hold.id
        with pytest.raises(NotFound) as missing:
            await book.reverse(u.ledger, opening.id, "a reservation is not a movement")
    assert code(missing) == LedgerErrorCode.TRANSFER_NOT_FOUND
    assert (await sums(uow, account.id)).balance == 1
    assert await problems(uow) == []


async def test_concurrent_reversals_of_one_transfer_leave_one(uow, engine) -> None:
    user_id, account = await funded(uow, "race@example.com", 1000)
    granted = await credit(uow, user_id, 300)

    async def reverse() -> Transfer:
        async with uow() as u:
            back = await book.reverse(u.ledger, granted.id, None)
            await asyncio.sleep(0.05)  # both have checked "not reversed yet" before either commits
            await u.commit()
        return back

    results = await asyncio.gather(*(reverse() for _ in range(4)), return_exceptions=True)
    won = [r for r in results if isinstance(r, Transfer)]
    lost = [r for r in results if not isinstance(r, Transfer)]
    assert len(won) == 1
    assert all(isinstance(r, Conflict) for r in lost), lost
    assert {r.problems[0].code for r in lost if isinstance(r, Conflict)} == {
        LedgerErrorCode.ALREADY_REVERSED
    }
    assert (await sums(uow, account.id)).balance == 1000
    assert await problems(uow) == []


# -- spend limit -------------------------------------------------------------------------------


async def test_the_hourly_spend_limit_and_a_per_account_override(uow, engine) -> None:
    policy = LedgerPolicy(default_hourly_spend_limit=500)
    user_id, account = await funded(uow, "spender@example.com", 10_000)
    first = await open_hold(uow, user_id, 300, policy=policy)
    with pytest.raises(Conflict) as caught:
        await open_hold(uow, user_id, 201, policy=policy)
    assert code(caught) == LedgerErrorCode.SPEND_LIMIT_REACHED
    # Capturing what was reserved does not count the same money twice.
    await act(uow, first.id, Capture(300))
    await open_hold(uow, user_id, 200, policy=policy)  # 300 + 200 = the limit exactly
    # Refunds are not spending.
    await open_hold(uow, user_id, 900, policy=policy, code=TransferCode.REFUND,
                    counterparty=AccountKind.REFUNDS_IN_FLIGHT)  # fmt: skip

    async with uow() as u:
        changed = await u.ledger.set_spend_limit(account.id, 1000)
        await u.commit()
    assert changed.hourly_spend_limit == 1000
    third = await open_hold(uow, user_id, 450, policy=policy)  # 950 <= 1000
    with pytest.raises(Conflict) as extended:
        await act(uow, third.id, Extend(third.expires_at, add_amount=51), policy=policy)
    assert code(extended) == LedgerErrorCode.SPEND_LIMIT_REACHED
    third = await act(uow, third.id, Extend(third.expires_at, add_amount=50), policy=policy)
    assert third.amount == 500

    async with uow() as u:
        await u.ledger.set_spend_limit(account.id, None)  # back to the default of 500
        await u.commit()
    with pytest.raises(Conflict):
        await open_hold(uow, user_id, 1, policy=policy)
    b = await sums(uow, account.id)
    assert (b.balance, b.held) == (10_000 - 300, 200 + 900 + 500)
    assert await count(engine, ledger_holds) == 4
    assert await problems(uow) == []


# -- expiry --------------------------------------------------------------------------------------


async def test_expired_holds_are_claimed_once_and_released(uow, engine) -> None:
    user_id, account = await funded(uow, "late@example.com", 1000)
    now = datetime.now(UTC)
    hold = await open_hold(uow, user_id, 400, ttl=timedelta(minutes=1), now=now)
    hold = await act(uow, hold.id, Capture(100), now=now)
    later = now + timedelta(minutes=2)

    async with uow() as u:
        assert await u.ledger.claim_expired_holds(now + timedelta(seconds=30), 10) == []
    with pytest.raises(Conflict) as caught:
        await act(uow, hold.id, Capture(10), now=later)
    assert code(caught) == LedgerErrorCode.HOLD_EXPIRED

    async with uow() as first:
        claimed = await first.ledger.claim_expired_holds(later, 10)
        assert [h.id for h in claimed] == [hold.id]
        async with uow() as second:  # a second worker skips the row the first has locked
            assert await second.ledger.claim_expired_holds(later, 10) == []
        for h in claimed:
            released, transfers = await book.act(first.ledger, h.id, Expire(), later)
        await first.commit()
    assert released.status is HoldStatus.EXPIRED
    assert [(t.spec.phase, t.spec.amount) for t in transfers] == [(Phase.VOID_PENDING, 300)]
    b = await sums(uow, account.id)
    assert (b.balance, b.held, b.available) == (900, 0, 900)
    async with uow() as u:
        assert await u.ledger.claim_expired_holds(later, 10) == []
    assert await problems(uow) == []


async def test_refund_holds_wait_for_stripe_not_for_the_clock(uow, engine) -> None:
    user_id, _ = await funded(uow, "refund-hold@example.com", 1000)
    now = datetime.now(UTC)
    refund = await open_hold(uow, user_id, 300, code=TransferCode.REFUND,
                             counterparty=AccountKind.REFUNDS_IN_FLIGHT,
                             ttl=timedelta(minutes=1), now=now, reference=None)  # fmt: skip
    usage = await open_hold(uow, user_id, 200, ttl=timedelta(minutes=1), now=now)
    async with uow() as u:
        due = await u.ledger.claim_expired_holds(now + timedelta(minutes=5), 10)
    # Money on its way back to the card must not become spendable again by itself.
    assert [h.id for h in due] == [usage.id]
    assert refund.id not in [h.id for h in due]


# -- metering ticks --------------------------------------------------------------------------------


async def test_act_many_captures_a_tick_all_or_nothing(uow, engine) -> None:
    users = [await funded(uow, f"m{i}@example.com", 1000) for i in range(3)]
    holds = [(await open_hold(uow, user_id, 100)).id for user_id, _ in users for _ in range(4)]
    now = datetime.now(UTC)

    async with uow() as u:
        ticked = await book.act_many(u.ledger, [(h, Capture(10)) for h in holds], now)
        await u.commit()
    assert [h.captured for h in ticked] == [10] * 12
    assert all(h.status is HoldStatus.OPEN for h in ticked)
    for _, account in users:
        b = await sums(uow, account.id)
        assert (b.balance, b.held, b.available) == (960, 360, 600)
    written = await count(engine, ledger_transfers)
    assert written == 3 + 12 + 12

    # One action over its hold's remaining refuses the whole batch.
    bad = [(h, Capture(95 if i == 7 else 10)) for i, h in enumerate(holds)]
    async with uow() as u:
        with pytest.raises(Conflict) as caught:
            await book.act_many(u.ledger, bad, now)
        await u.commit()  # even a caller that commits anyway writes nothing
    assert code(caught) == LedgerErrorCode.AMOUNT_EXCEEDS_HOLD
    assert await count(engine, ledger_transfers) == written
    async with uow() as u:
        assert {h.captured for h in (await u.ledger.holds(holds)).values()} == {10}
    with pytest.raises(InvalidInput) as twice:  # a hold twice in one batch
        async with uow() as u:
            await book.act_many(u.ledger, [(holds[0], Capture(1)), (holds[0], Capture(1))], now)
    assert code(twice) == LedgerErrorCode.INVALID_BATCH

    # Final captures and voids in one batch close the holds and release the rest.
    closing = [(h, Capture(20, final=True) if i % 2 else Void()) for i, h in enumerate(holds)]
    async with uow() as u:
        closed = await book.act_many(u.ledger, closing, now)
        await u.commit()
    assert {h.status for h in closed} == {HoldStatus.CAPTURED, HoldStatus.VOIDED}
    for _, account in users:
        b = await sums(uow, account.id)
        assert (b.balance, b.held) == (1000 - 40 - 2 * 20, 0)
    assert await problems(uow) == []


# -- currencies and inputs ---------------------------------------------------------------------


async def test_a_transfer_between_currencies_cannot_be_written(uow, engine) -> None:
    user_id, usd = await funded(uow, "fx@example.com", 100)
    eur_revenue = platform(AccountKind.COMPUTE_REVENUE, "EUR")
    async with uow() as u:
        eur = (await u.ledger.accounts([eur_revenue]))[eur_revenue]
        await u.commit()
    for currency, constraint in (("USD", "fk_ledger_transfers_credit"),
                                 ("EUR", "fk_ledger_transfers_debit")):  # fmt: skip
        async with uow() as u:
            await u.ledger.accounts([wallet(user_id, "USD")])
            with pytest.raises(IntegrityError) as caught:
                await u.ledger.write([TransferSpec(debit=usd.id, credit=eur.id, amount=10,
                                                   currency=currency, code=TransferCode.USAGE)])  # fmt: skip
        assert constraint in str(caught.value.orig)
    assert await count(engine, ledger_transfers) == 1
    assert (await sums(uow, usd.id)).balance == 100
    assert await problems(uow) == []


async def test_bad_inputs_are_refused_before_anything_is_written(uow, engine) -> None:
    user_id, _ = await funded(uow, "in@example.com", 100)
    async with uow() as u:
        with pytest.raises(InvalidInput) as unknown:
            await book.move(u.ledger, platform(AccountKind.PROMOTIONAL_CREDIT, "XXX"),
                            wallet(user_id, "XXX"), 5, TransferCode.CREDIT)  # fmt: skip
        with pytest.raises(InvalidInput) as mixed:
            await book.move(u.ledger, PROMO, wallet(user_id, "EUR"), 5, TransferCode.CREDIT)
        with pytest.raises(InvalidInput) as zero:
            await book.move(u.ledger, PROMO, wallet(user_id, "USD"), 0, TransferCode.CREDIT)
    assert code(unknown) == LedgerErrorCode.UNKNOWN_CURRENCY
    assert code(zero) == LedgerErrorCode.INVALID_AMOUNT
    assert code(mixed) == LedgerErrorCode.CURRENCY_MISMATCH
    for ttl in (timedelta(0), POLICY.max_hold_ttl + timedelta(seconds=1)):
        with pytest.raises(InvalidInput) as caught:
            await open_hold(uow, user_id, 5, ttl=ttl)
        assert code(caught) == LedgerErrorCode.INVALID_EXPIRY
    with pytest.raises(NotFound) as missing:
        await act(uow, 999_999, Void())
    assert code(missing) == LedgerErrorCode.HOLD_NOT_FOUND
    assert await count(engine, ledger_holds) == 0
    assert await count(engine, ledger_transfers) == 1


async def test_metering_api_open_capture_extend_void(uow, engine) -> None:
    """The calls allocations and volumes meter with: open_hold, capture, extend, void."""
    user_id, account = await funded(uow, "meter@example.com", 2000)
    now = datetime.now(UTC)
    hold = await open_hold(uow, user_id, 600, ttl=timedelta(minutes=10), now=now)
    async with uow() as u:
        ticked = await book.capture(u.ledger, hold.id, 100, now)
        longer = await book.extend(u.ledger, POLICY, hold.id, now + timedelta(minutes=30), now,
                                   add_amount=400)  # fmt: skip
        done = await book.void(u.ledger, hold.id, now)
        await u.commit()
    assert (ticked.captured, ticked.status) == (100, HoldStatus.OPEN)
    assert (longer.amount, longer.expires_at) == (1000, now + timedelta(minutes=30))
    assert (done.status, done.captured) == (HoldStatus.VOIDED, 100)
    b = await sums(uow, account.id)
    assert (b.balance, b.held, b.available) == (1900, 0, 1900)
    assert await problems(uow) == []
