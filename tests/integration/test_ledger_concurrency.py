"""The ledger under concurrency and under random sequences of operations, on real PostgreSQL.

A wallet is never overdrawn, whatever runs at the same time; every refusal is a typed ledger
error; the balance equals the sum of what succeeded; and a simple Python model of one wallet
agrees with the database after every step of any sequence Hypothesis can find.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.errors import Conflict, DomainError
from domain.ledger import book
from domain.ledger.accounts import AccountKind, Balance, platform, wallet
from domain.ledger.errors import InsufficientFunds, LedgerErrorCode
from domain.ledger.holds import Capture, Expire, Extend, Hold, HoldStatus, Void
from domain.ledger.policy import LedgerPolicy
from domain.ledger.transfers import Phase, TransferCode
from domain.retry import retrying
from infra.db.engine import make_engine
from infra.db.uow import SqlUnitOfWork

T = TypeVar("T")
UNLIMITED = LedgerPolicy(default_hourly_spend_limit=10**15)
HOUR = timedelta(hours=1)
CLEARING = platform(AccountKind.STRIPE_CLEARING, "USD")
# Allocations reference their holds, so they go too (the tables are empty in these tests).
LEDGER_TABLES = ("allocation_events", "allocations", "refunds", "payments", "ledger_transfers",
                 "ledger_holds", "ledger_balances", "ledger_accounts")  # fmt: skip
# What a refused operation may say: it clashed with the wallet's or the hold's state.
REFUSALS = {
    LedgerErrorCode.INSUFFICIENT_FUNDS,
    LedgerErrorCode.HOLD_NOT_OPEN,
    LedgerErrorCode.AMOUNT_EXCEEDS_HOLD,
}


async def add_user(engine: AsyncEngine) -> int:
    async with engine.begin() as conn:
        row = await conn.execute(text("INSERT INTO users (email) VALUES (:e) RETURNING id"),
                                 {"e": f"{uuid.uuid4().hex}@example.com"})  # fmt: skip
        return int(row.scalar_one())


# -- (a) a hundred concurrent operations on one wallet ----------------------------------------


async def test_a_hundred_concurrent_operations_never_overdraw_one_wallet(
    database_url, engine
) -> None:
    # `engine` cleaned the tables; this test needs more connections than its pool of 4.
    big = make_engine(database_url, pool_size=20)
    try:
        await _hundred_operations(big)
    finally:
        await big.dispose()


async def _hundred_operations(big: AsyncEngine) -> None:
    user_id = await add_user(big)
    mine = wallet(user_id, "USD")
    rng = random.Random(20261126)
    now = datetime.now(UTC)

    async with SqlUnitOfWork(big) as u:
        await book.move(u.ledger, CLEARING, mine, 2000, TransferCode.TOP_UP)
        wallet_id = (await u.ledger.accounts([mine]))[mine].id
        await u.commit()
    setup_holds: list[int] = []
    for _ in range(30):  # 1500 of the 2000 held before the storm starts
        async with SqlUnitOfWork(big) as u:
            h = await book.open_hold(u.ledger, UNLIMITED, user_id, AccountKind.COMPUTE_REVENUE,
                                     50, "USD", code=TransferCode.USAGE, reference="setup",
                                     ttl=HOUR, now=now)  # fmt: skip
            await u.commit()
        setup_holds.append(h.id)
    async with SqlUnitOfWork(big) as u:
        start = (await u.ledger.balances([wallet_id]))[wallet_id]

    observed: list[int] = []
    effects: list[Balance] = []
    refused: list[BaseException] = []
    succeeded: dict[str, int] = {}

    async def in_uow(kind: str, body: Callable[[Any], Awaitable[Balance]]) -> None:
        async def attempt() -> Balance:
            async with SqlUnitOfWork(big) as u:
                effect = await body(u.ledger)
                after = (await u.ledger.balances([wallet_id]))[wallet_id]
                observed.append(after.available)  # as this transaction leaves it
                await u.commit()
            return effect

        try:
            effects.append(await retrying(attempt))
            succeeded[kind] = succeeded.get(kind, 0) + 1
        except Exception as exc:
            refused.append(exc)

    def top_up(amount: int) -> Coroutine[Any, Any, None]:
        async def body(ledger: Any) -> Balance:
            await book.move(ledger, CLEARING, mine, amount, TransferCode.TOP_UP)
            return Balance(credits_posted=amount)

        return in_uow("top_up", body)

    def hold(amount: int, counterparty: AccountKind,
             code: TransferCode) -> Coroutine[Any, Any, None]:  # fmt: skip
        async def body(ledger: Any) -> Balance:
            await book.open_hold(ledger, UNLIMITED, user_id, counterparty, amount, "USD",
                                 code=code, reference=None, ttl=HOUR, now=now)  # fmt: skip
            return Balance(debits_pending=amount)

        return in_uow(str(code), body)

    def capture(hold_id: int, amount: int, final: bool) -> Coroutine[Any, Any, None]:
        async def body(ledger: Any) -> Balance:
            after, _ = await book.act(ledger, hold_id, Capture(amount, final), now)
            released = after.amount - after.captured if after.status is not HoldStatus.OPEN else 0
            return Balance(debits_posted=amount, debits_pending=-amount - released)

        return in_uow("capture", body)

    def void(hold_id: int) -> Coroutine[Any, Any, None]:
        async def body(ledger: Any) -> Balance:
            after, _ = await book.act(ledger, hold_id, Void(), now)
            return Balance(debits_pending=-(after.amount - after.captured))

        return in_uow("void", body)

    ops: list[Coroutine[Any, Any, None]] = []
    kinds = ["top_up"] * 20 + ["usage"] * 25 + ["refund"] * 15 + ["capture"] * 20 + ["void"] * 20
    rng.shuffle(kinds)
    for kind in kinds:
        if kind == "top_up":
            ops.append(top_up(rng.randint(50, 150)))
        elif kind == "usage":
            ops.append(hold(rng.randint(100, 300), AccountKind.COMPUTE_REVENUE, TransferCode.USAGE))
        elif kind == "refund":
            ops.append(hold(rng.randint(100, 200), AccountKind.REFUNDS_IN_FLIGHT,
                            TransferCode.REFUND))  # fmt: skip
        elif kind == "capture":
            ops.append(capture(rng.choice(setup_holds), rng.randint(0, 60), rng.random() < 0.3))
        else:
            ops.append(void(rng.choice(setup_holds)))
    assert len(ops) == 100
    await asyncio.gather(*ops)

    # Every refusal is a ledger conflict a client can act on; nothing else went wrong.
    assert all(isinstance(e, Conflict) for e in refused), refused
    assert {e.problems[0].code for e in refused} <= REFUSALS  # type: ignore[attr-defined]
    # More was asked for than could ever be available, so the guard had to refuse some.
    assert any(isinstance(e, InsufficientFunds) for e in refused)
    assert succeeded["top_up"] == 20  # a credit can always be written (contention is retried)
    assert len(effects) + len(refused) == 100
    assert observed and min(observed) >= 0

    expected = start
    for effect in effects:
        expected = expected + effect
    async with SqlUnitOfWork(big) as u:
        final = (await u.ledger.balances([wallet_id]))[wallet_id]
        every = await u.ledger.holds(await _hold_ids(big))
    open_holds = [h for h in every.values() if h.status is HoldStatus.OPEN]
    assert final == expected
    assert final.available >= 0
    assert final.held == sum(h.remaining for h in open_holds)
    async with SqlUnitOfWork(big) as u:
        assert (await u.ledger.verify()).problems == []


async def _hold_ids(engine: AsyncEngine) -> list[int]:
    async with engine.connect() as conn:
        return list((await conn.execute(text("SELECT id FROM ledger_holds"))).scalars())


# -- (b) a state machine against a model of one wallet ----------------------------------------


@dataclass
class ModelHold:
    amount: int
    captured: int
    expires_at: datetime
    open: bool = True

    @property
    def remaining(self) -> int:
        return self.amount - self.captured if self.open else 0


@dataclass(frozen=True)
class ModelTransfer:
    id: int
    wallet_change: int  # what it did to the wallet's balance: + credit, - debit


class LedgerMachine(RuleBasedStateMachine):
    """Top up, open, capture, void, extend, expire and reverse at random; the database and the
    model must agree on the wallet after every step, and refuse the same things."""

    database_url = ""
    holds = Bundle("holds")
    transfers = Bundle("transfers")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.engine = make_engine(self.database_url, pool_size=2)
        self.now = datetime.now(UTC)
        self.balance = 0
        self.model: dict[int, ModelHold] = {}
        self.reversed: set[int] = set()
        self.user_id, self.wallet_id = self.run(self._reset())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        async def check() -> list[str]:
            async with SqlUnitOfWork(self.engine) as u:
                return (await u.ledger.verify()).problems

        try:
            assert self.run(check()) == []
        finally:
            self.run(self.engine.dispose())
            self.loop.close()

    async def _reset(self) -> tuple[int, int]:
        async with self.engine.begin() as conn:
            await conn.execute(text("SET LOCAL session_replication_role = replica"))
            await conn.execute(text(f"TRUNCATE {', '.join(LEDGER_TABLES)} RESTART IDENTITY"))
        user_id = await add_user(self.engine)
        async with SqlUnitOfWork(self.engine) as u:
            account = (await u.ledger.accounts([wallet(user_id, "USD")]))[wallet(user_id, "USD")]
            await u.commit()
        return user_id, account.id

    @property
    def held(self) -> int:
        return sum(h.remaining for h in self.model.values())

    @property
    def available(self) -> int:
        return self.balance - self.held

    def attempt(self, body: Callable[[Any], Awaitable[T]]) -> T | str:
        """Run `body(ledger)` in a unit of work that commits; a refusal comes back as its code."""

        async def go() -> T:
            async with SqlUnitOfWork(self.engine) as u:
                result = await body(u.ledger)
                await u.commit()
            return result

        try:
            return self.run(go())
        except DomainError as exc:
            return exc.problems[0].code

    def refusal_for_hold(self, hold: ModelHold, *, releasing: bool = False) -> str | None:
        if not hold.open:
            return LedgerErrorCode.HOLD_NOT_OPEN
        if self.now >= hold.expires_at and not releasing:  # an expired hold may be voided
            return LedgerErrorCode.HOLD_EXPIRED
        return None

    # -- rules ---------------------------------------------------------------------------------

    @initialize(target=transfers, amount=st.integers(300, 3000))
    def first_top_up(self, amount: int) -> ModelTransfer:
        return self.top_up(amount)

    @rule(target=transfers, amount=st.integers(1, 500))
    def top_up(self, amount: int) -> ModelTransfer:
        got = self.attempt(lambda ledger: book.move(
            ledger, CLEARING, wallet(self.user_id, "USD"), amount, TransferCode.TOP_UP))  # fmt: skip
        assert not isinstance(got, str), got
        self.balance += amount
        return ModelTransfer(got.id, amount)

    @rule(target=holds, amount=st.integers(1, 400), ttl=st.integers(5, 240))
    def open_hold(self, amount: int, ttl: int) -> Any:
        got = self.attempt(lambda ledger: book.open_hold(
            ledger, UNLIMITED, self.user_id, AccountKind.COMPUTE_REVENUE, amount, "USD",
            code=TransferCode.USAGE, reference=None, ttl=timedelta(minutes=ttl), now=self.now))  # fmt: skip
        if amount > self.available:
            assert got == LedgerErrorCode.INSUFFICIENT_FUNDS
            return multiple()
        assert isinstance(got, Hold), got
        assert (got.amount, got.expires_at) == (amount, self.now + timedelta(minutes=ttl))
        self.model[got.id] = ModelHold(amount, 0, got.expires_at)
        return got.id

    @rule(target=transfers, hold_id=holds, amount=st.integers(0, 300), final=st.booleans())
    def capture(self, hold_id: int, amount: int, final: bool) -> Any:
        got = self.attempt(lambda ledger: book.act(ledger, hold_id, Capture(amount, final),
                                                   self.now))  # fmt: skip
        m = self.model[hold_id]
        expected = self.refusal_for_hold(m)
        if expected is None and amount == 0 and not final:
            expected = LedgerErrorCode.INVALID_AMOUNT
        if expected is None and amount > m.remaining:
            expected = LedgerErrorCode.AMOUNT_EXCEEDS_HOLD
        if expected is not None:
            assert got == expected
            return multiple()
        assert not isinstance(got, str), got
        after, written = got
        m.captured += amount
        self.balance -= amount
        if final or m.remaining == 0:
            m.open = False
        assert (after.captured, after.status is HoldStatus.OPEN) == (m.captured, m.open)
        posted = [t for t in written if t.spec.phase is Phase.POST_PENDING]
        return ModelTransfer(posted[0].id, -amount) if posted else multiple()

    @rule(hold_id=holds)
    def void(self, hold_id: int) -> None:
        got = self.attempt(lambda ledger: book.act(ledger, hold_id, Void(), self.now))
        m = self.model[hold_id]
        expected = self.refusal_for_hold(m, releasing=True)
        if expected is not None:
            assert got == expected
            return
        assert not isinstance(got, str), got
        assert got[0].status is HoldStatus.VOIDED
        m.open = False

    @rule(hold_id=holds, minutes=st.integers(-30, 120), add=st.integers(0, 300))
    def extend(self, hold_id: int, minutes: int, add: int) -> None:
        m = self.model[hold_id]
        until = m.expires_at + timedelta(minutes=minutes)
        got = self.attempt(lambda ledger: book.act(ledger, hold_id, Extend(until, add),
                                                   self.now, UNLIMITED))  # fmt: skip
        expected = self.refusal_for_hold(m)
        if expected is None and minutes < 0:
            expected = LedgerErrorCode.INVALID_EXPIRY
        if expected is None and add > self.available:
            expected = LedgerErrorCode.INSUFFICIENT_FUNDS
        if expected is not None:
            assert got == expected
            return
        assert not isinstance(got, str), got
        m.amount += add
        m.expires_at = until
        assert (got[0].amount, got[0].expires_at) == (m.amount, m.expires_at)

    @rule(hold_id=holds)
    def expire_one(self, hold_id: int) -> None:
        got = self.attempt(lambda ledger: book.act(ledger, hold_id, Expire(), self.now))
        m = self.model[hold_id]
        if not m.open:
            assert got == LedgerErrorCode.HOLD_NOT_OPEN
            return
        if self.now < m.expires_at:
            assert got == LedgerErrorCode.HOLD_NOT_EXPIRED
            return
        assert not isinstance(got, str), got
        assert got[0].status is HoldStatus.EXPIRED
        m.open = False

    @rule()
    def expiry_job(self) -> None:
        async def sweep(ledger: Any) -> list[int]:
            claimed = await ledger.claim_expired_holds(self.now, 100)
            for h in claimed:
                await book.act(ledger, h.id, Expire(), self.now)
            return [h.id for h in claimed]

        got = self.attempt(sweep)
        due = [i for i, h in sorted(self.model.items()) if h.open and self.now >= h.expires_at]
        assert got == due
        for i in due:
            self.model[i].open = False

    @rule(minutes=st.integers(1, 60))
    def advance(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)

    @rule(transfer=transfers)
    def reverse(self, transfer: ModelTransfer) -> None:
        got = self.attempt(lambda ledger: book.reverse(ledger, transfer.id, None))
        if transfer.id in self.reversed:
            expected: str | None = LedgerErrorCode.ALREADY_REVERSED
        elif transfer.wallet_change > self.available:  # taking a credit back overdraws
            expected = LedgerErrorCode.INSUFFICIENT_FUNDS
        else:
            expected = None
        if expected is not None:
            assert got == expected
            return
        assert not isinstance(got, str), got
        assert got.spec.reverses_id == transfer.id
        self.reversed.add(transfer.id)
        self.balance -= transfer.wallet_change

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    def wallet_matches_the_model(self) -> None:
        async def read() -> Balance:
            async with SqlUnitOfWork(self.engine) as u:
                return (await u.ledger.balances([self.wallet_id]))[self.wallet_id]

        sums = self.run(read())
        assert (sums.balance, sums.held, sums.available) == (
            self.balance, self.held, self.available,
        )  # fmt: skip
        assert sums.available >= 0


def test_random_operation_sequences_agree_with_a_model(database_url) -> None:
    LedgerMachine.database_url = database_url
    quick = settings(max_examples=15, stateful_step_count=25, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
    run_state_machine_as_test(LedgerMachine, settings=quick)
