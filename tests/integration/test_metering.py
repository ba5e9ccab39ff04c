"""Billing while running, against real PostgreSQL and the real ledger, with the clock in the
test's hands: each tick bills the time since the last to the second and keeps the hold a window
ahead; a balance that cannot is warned, then stopped after the grace, billed to the second and
never below zero; time on a node unreachable past the grace is not billed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncssh
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.audit.records import RequestMeta
from domain.catalog.services import add_sku, update_sku
from domain.catalog.sku import SkuChanges, SkuSpec
from domain.compute.allocation_services import create_allocation, stop_allocation
from domain.compute.allocations import Allocation, AllocationState, AllocationTrigger, transition
from domain.compute.kit import AllocationPolicy, ComputeKit, usage_cost
from domain.compute.metering import meter
from domain.compute.ssh_key_services import add_ssh_key
from domain.identity.principal import Principal
from domain.identity.scopes import Role
from domain.ledger.accounts import wallet
from domain.ledger.holds import HoldStatus
from domain.ledger.policy import LedgerPolicy
from domain.money import Money
from domain.ports import UnitOfWork
from infra.crypto.local_kms import LocalKms
from infra.nodes.factory import make_compute_kit
from infra.nodes.keys import AsyncsshKeyCodec
from infra.settings import Settings
from tests.support.compute import credit, signed_in
from tests.support.fleet import fleet_settings, kit_for, seed_node

META = RequestMeta(request_id="test")
PRICE = 3600  # per hour: one minor unit per second
WINDOW = timedelta(minutes=10)  # the hold covers 600 units ahead
STEP = timedelta(minutes=1)  # topped up 60 units beyond when it covers less
START = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
Uow = Callable[[], UnitOfWork]


@dataclass
class Clock:
    now: datetime = START

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass(frozen=True)
class Running:
    kit: ComputeKit
    clock: Clock
    user: Principal
    allocation: Allocation


@dataclass(frozen=True)
class Setup:
    kit: ComputeKit
    clock: Clock
    user: Principal
    key_id: int


async def _setup(uow: Uow, settings: Settings, root: Path, funds: int, gpus: int = 8) -> Setup:
    await seed_node(uow(), "gpu-m", gpus=gpus)
    clock = Clock()
    fleet_kit = replace(kit_for(uow, LocalKms.create(root / "keys.json"),
                                fleet_settings(root, "gpctm")), clock=clock)  # fmt: skip
    kit = make_compute_kit(fleet_settings(root, "gpctm"), settings.compute, fleet_kit,
                           LedgerPolicy(default_hourly_spend_limit=10**9))  # fmt: skip
    kit = replace(kit, clock=clock, policy=AllocationPolicy(
        billing_window=WINDOW, hold_slack=timedelta(minutes=5), reserve_step=STEP,
        low_balance_grace=timedelta(minutes=3)))  # fmt: skip
    await add_sku(uow(), SkuSpec.create(
        name="h200x1", gpu_model="H200", gpu_count=1, vcpus=8, ram_gib=64, disk_gib=100,
        region="eu-west", hourly_price_minor=PRICE, currency="USD"))  # fmt: skip
    async with uow() as u:
        made = await u.users.add("grace@example.com", None, Role.USER)
        await credit(u.ledger, made.id, funds)
        await u.commit()
    user = signed_in(made.id)
    public = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    key = await add_ssh_key(uow(), AsyncsshKeyCodec(), user, "k", public, META)
    return Setup(kit, clock, user, key.id)


async def _create(s: Setup, idempotency_key: str = "m") -> Allocation:
    return await create_allocation(s.kit, s.user, 1, [s.key_id], idempotency_key, META)


async def _provisioned(s: Setup, placed: Allocation) -> Running:
    """As the engine leaves it once the node work is done (tested in test_allocation_lifecycle)."""
    async with s.kit.uow() as u:
        provisioning = transition(placed, AllocationTrigger.PROVISION, s.clock.now)
        running = transition(provisioning, AllocationTrigger.PROVISIONED, s.clock.now)
        running = await u.allocations.save(
            replace(
                running,
                version=placed.version + 1,
                running_since=s.clock.now,
                billed_until=s.clock.now,
            )
        )
        await u.commit()
    return Running(s.kit, s.clock, s.user, running)


async def _running(uow: Uow, settings: Settings, root: Path, funds: int) -> Running:
    s = await _setup(uow, settings, root, funds)
    return await _provisioned(s, await _create(s))


async def _hold(r: Running) -> tuple[HoldStatus, int, int]:
    assert r.allocation.hold_id is not None
    async with r.kit.uow() as u:
        hold = (await u.ledger.holds([r.allocation.hold_id]))[r.allocation.hold_id]
    return hold.status, hold.amount, hold.captured


async def _available(r: Running) -> int:
    async with r.kit.uow() as u:
        account = await u.ledger.accounts([wallet(r.user.user_id or 0, "USD")])
        acc = account[wallet(r.user.user_id or 0, "USD")]
        return (await u.ledger.balances([acc.id]))[acc.id].available


async def _get(r: Running) -> Allocation:
    async with r.kit.uow() as u:
        found = await u.allocations.get(r.allocation.id)
    assert found is not None
    return found


async def test_each_tick_bills_the_time_and_keeps_a_window_reserved(
    uow: Uow, settings: Settings, tmp_path: Path
) -> None:
    r = await _running(uow, settings, tmp_path, funds=100_000)
    assert await _hold(r) == (HoldStatus.OPEN, 600, 0)
    r.clock.tick(90)
    totals = await meter(r.kit)
    assert (totals.metered, totals.captured) == (1, 90)
    # 510 ahead is less than the window: topped up to the window and a step beyond.
    assert await _hold(r) == (HoldStatus.OPEN, 90 + 600 + 60, 90)
    r.clock.tick(30.5)
    await meter(r.kit)
    # To the second, rounded once; 629 ahead is a window: no top-up.
    assert usage_cost(PRICE, 120.5) == 121
    assert await _hold(r) == (HoldStatus.OPEN, 750, 121)
    assert await _available(r) == 100_000 - 750


async def test_an_exhausted_balance_is_warned_then_stopped_and_never_below_zero(
    uow: Uow, settings: Settings, tmp_path: Path, engine: AsyncEngine
) -> None:
    r = await _running(uow, settings, tmp_path, funds=700)  # the first window and 100 more
    r.clock.tick(200)
    first = await meter(r.kit)  # 200 billed; 200 + 600 cannot be reserved: warned
    assert (first.captured, first.warned, first.stopped) == (200, 1, 0)
    warned = await _get(r)
    assert warned.state is AllocationState.RUNNING and warned.low_balance_since == r.clock.now
    r.clock.tick(120)  # within the 3-minute grace
    assert (await meter(r.kit)).stopped == 0
    r.clock.tick(61)  # past it
    last = await meter(r.kit)
    stopped = await _get(r)
    assert last.stopped == 1 and stopped.state is AllocationState.STOPPING
    assert stopped.stop_reason == "balance"
    status, _, captured = await _hold(r)
    # Billed to the second (this tick captured the last 61 s), the rest released.
    assert status is not HoldStatus.OPEN and captured == 381
    assert await _available(r) == 700 - 381 >= 0
    async with engine.connect() as conn:
        names = (await conn.execute(text("SELECT name FROM outbox WHERE topic = 'allocations' "
                                         "ORDER BY id"))).scalars().all()  # fmt: skip
    assert "allocation.low_balance" in names


async def test_time_on_a_node_unreachable_past_the_grace_is_not_billed(
    uow: Uow, settings: Settings, tmp_path: Path, engine: AsyncEngine
) -> None:
    r = await _running(uow, settings, tmp_path, funds=100_000)
    grace = r.kit.fleet.policy.unreachable_grace
    async with engine.begin() as conn:  # the node has been unreachable for longer than that
        await conn.execute(text("UPDATE nodes SET unreachable_since = :since"),
                           {"since": r.clock.now - grace - timedelta(seconds=1)})  # fmt: skip
    r.clock.tick(300)
    await meter(r.kit)
    assert (await _hold(r))[2] == 0 and (await _get(r)).billable_seconds == 0
    async with engine.begin() as conn:  # it is back
        await conn.execute(text("UPDATE nodes SET unreachable_since = NULL"))
    r.clock.tick(60)
    await meter(r.kit)
    assert (await _hold(r))[2] == 60


async def _set_price(r: Running, price: int) -> None:
    await update_sku(r.kit.uow(), 1, SkuChanges.create(hourly_price_minor=price))


@pytest.mark.parametrize("new_price", [PRICE * 10, PRICE // 4], ids=["raise", "cut"])
async def test_a_price_change_while_running_bills_at_the_agreed_price(
    uow: Uow, settings: Settings, tmp_path: Path, new_price: int
) -> None:
    r = await _running(uow, settings, tmp_path, funds=100_000)
    r.clock.tick(60)
    await meter(r.kit)
    await _set_price(r, new_price)
    for _ in range(3):
        r.clock.tick(60)
        await meter(r.kit)
    # Every second at the price accepted (1 a second); the hold, topped up at 60 and 180 s to a
    # window and a step ahead at that price too, covers a window.
    assert await _hold(r) == (HoldStatus.OPEN, 180 + 600 + 60, 240)
    got = await _get(r)
    assert got.hourly_price == Money(PRICE, "USD") and got.billable_seconds == 240
    r.clock.tick(30)
    await stop_allocation(r.kit, r.user, r.allocation.id, META)  # settled at that price too
    status, _, captured = await _hold(r)
    assert status is not HoldStatus.OPEN and captured == 270
    assert await _available(r) == 100_000 - 270


async def test_a_price_change_during_provisioning_keeps_the_price_accepted(
    uow: Uow, settings: Settings, tmp_path: Path
) -> None:
    s = await _setup(uow, settings, tmp_path, funds=100_000)
    placed = await _create(s)  # accepted at PRICE
    await update_sku(s.kit.uow(), 1, SkuChanges.create(hourly_price_minor=PRICE * 3))
    later = await _create(s, "n")  # made after the change: the new price
    assert (placed.hourly_price.amount_minor, later.hourly_price.amount_minor) == (PRICE, PRICE * 3)
    r = await _provisioned(s, placed)  # reaches RUNNING after the change
    r.clock.tick(100)
    await meter(r.kit)
    assert await _hold(r) == (HoldStatus.OPEN, 100 + 600 + 60, 100)
    async with uow() as u:
        holds = await u.ledger.holds([later.hold_id or 0])
    assert holds[later.hold_id or 0].amount == 3 * 600  # its first window at its own price


async def test_two_meterers_at_once_bill_each_second_once(
    uow: Uow, settings: Settings, tmp_path: Path
) -> None:
    s = await _setup(uow, settings, tmp_path, funds=1_000_000)
    made = [await _provisioned(s, await _create(s, f"k{i}")) for i in range(8)]
    ticks = 0
    for seconds in (30, 45, 60):
        s.clock.tick(seconds)
        ticks += seconds
        # Two workers over the same rows, in chunks of 2 so they interleave; twice each.
        both = await asyncio.gather(*(meter(s.kit, chunk=2) for _ in range(4)))
        assert sum(t.captured for t in both) == 8 * seconds
        assert sum(t.metered for t in both) == 8  # each row by one of them
        for r in made:
            assert (await _hold(r))[2] == ticks  # one unit a second, each second once
    async with uow() as u:
        check = await u.ledger.verify()
    assert check.problems == []


async def test_a_worker_with_an_older_clock_bills_nothing_twice(
    uow: Uow, settings: Settings, tmp_path: Path
) -> None:
    r = await _running(uow, settings, tmp_path, funds=100_000)
    r.clock.tick(120)
    await meter(r.kit)
    late = replace(r.kit, clock=lambda: START + timedelta(seconds=60))
    assert (await meter(late)).captured == 0
    r.clock.tick(30)
    await meter(r.kit)
    assert (await _hold(r))[2] == 150 and (await _get(r)).billable_seconds == 150


async def test_a_wallet_that_covers_one_extension_of_two_refuses_only_the_other(
    uow: Uow, settings: Settings, tmp_path: Path
) -> None:
    s = await _setup(uow, settings, tmp_path, funds=2 * 600 + 150)
    first = await _provisioned(s, await _create(s, "a"))
    second = await _provisioned(s, await _create(s, "b"))
    s.clock.tick(100)  # each owes 100; each wants 100 more reserved: only 150 is free
    totals = await meter(s.kit)
    assert (totals.metered, totals.captured, totals.warned) == (2, 200, 1)
    assert await _hold(first) == (HoldStatus.OPEN, 700, 100)
    assert await _hold(second) == (HoldStatus.OPEN, 600, 100)
    assert (await _get(first)).low_balance_since is None
    assert (await _get(second)).low_balance_since == s.clock.now
    assert await _available(first) == 50


async def test_an_extension_past_the_hourly_spend_limit_is_refused_and_warned(
    uow: Uow, settings: Settings, tmp_path: Path
) -> None:
    r = await _running(uow, settings, tmp_path, funds=100_000)
    async with uow() as u:  # the first window (600) and 50 more per hour
        found = await u.ledger.accounts([wallet(r.user.user_id or 0, "USD")])
        await u.ledger.set_spend_limit(found[wallet(r.user.user_id or 0, "USD")].id, 650)
        await u.commit()
    r.clock.tick(40)
    assert (await meter(r.kit)).warned == 0  # 40 more reserved: 640 this hour
    r.clock.tick(40)
    totals = await meter(r.kit)  # 40 more would make 680
    assert (totals.captured, totals.warned) == (40, 1)
    assert await _hold(r) == (HoldStatus.OPEN, 640, 80)
    assert (await _get(r)).low_balance_since == r.clock.now


async def test_a_hold_is_kept_alive_while_its_node_is_unreachable_and_nothing_is_billed(
    uow: Uow, settings: Settings, tmp_path: Path, engine: AsyncEngine
) -> None:
    r = await _running(uow, settings, tmp_path, funds=100_000)
    async with engine.begin() as conn:
        since = {"since": r.clock.now - timedelta(hours=1)}
        await conn.execute(text("UPDATE nodes SET unreachable_since = :since"), since)
    for _ in range(6):  # 30 minutes, twice the hold's first life (window and slack)
        r.clock.tick(300)
        await meter(r.kit)
        async with uow() as u:
            hold = (await u.ledger.holds([r.allocation.hold_id or 0]))[r.allocation.hold_id or 0]
        assert hold.status is HoldStatus.OPEN and hold.expires_at >= r.clock.now + WINDOW
    assert (hold.amount, hold.captured) == (600, 0)


async def test_a_hold_past_its_expiry_stops_its_allocation_and_holds_back_no_other(
    uow: Uow, settings: Settings, tmp_path: Path, engine: AsyncEngine
) -> None:
    s = await _setup(uow, settings, tmp_path, funds=100_000)
    lapsed = await _provisioned(s, await _create(s, "a"))
    other = await _provisioned(s, await _create(s, "b"))
    async with engine.begin() as conn:  # no tick ran for longer than its window and slack
        past = {"id": lapsed.allocation.hold_id, "at": s.clock.now - timedelta(seconds=1)}
        await conn.execute(text("UPDATE ledger_holds SET expires_at = :at WHERE id = :id"), past)
    s.clock.tick(60)
    assert (await meter(s.kit)).warned == 1  # it cannot be captured or extended any more
    s.clock.tick(200)  # past the 3-minute grace
    totals = await meter(s.kit)
    assert (totals.metered, totals.stopped) == (2, 1)
    assert (await _get(lapsed)).state is AllocationState.STOPPING
    assert (await _hold(lapsed))[0] is HoldStatus.VOIDED  # released, the unbilled time free
    assert await _hold(other) == (HoldStatus.OPEN, 260 + 600 + 60, 260)  # billed all along
    async with uow() as u:
        assert (await u.ledger.verify()).problems == []
