"""Billing while running, against real PostgreSQL and the real ledger, with the clock in the
test's hands: each tick bills the time since the last to the second and keeps the hold a window
ahead; a balance that cannot is warned, then stopped after the grace, billed to the second and
never below zero; time on a node unreachable past the grace is not billed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncssh
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.audit.records import RequestMeta
from domain.catalog.services import add_sku
from domain.catalog.sku import SkuSpec
from domain.compute.allocation_services import create_allocation
from domain.compute.allocations import Allocation, AllocationState, AllocationTrigger, transition
from domain.compute.kit import AllocationPolicy, ComputeKit, usage_cost
from domain.compute.metering import meter
from domain.compute.ssh_key_services import add_ssh_key
from domain.identity.principal import Principal
from domain.identity.scopes import Role
from domain.ledger.accounts import wallet
from domain.ledger.holds import HoldStatus
from domain.ledger.policy import LedgerPolicy
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


async def _running(uow: Uow, settings: Settings, root: Path, funds: int) -> Running:
    node = await seed_node(uow(), "gpu-m", gpus=8)
    clock = Clock()
    fleet_kit = replace(kit_for(uow, LocalKms.create(root / "keys.json"),
                                fleet_settings(root, "gpctm")), clock=clock)  # fmt: skip
    kit = make_compute_kit(fleet_settings(root, "gpctm"), settings.compute, fleet_kit,
                           LedgerPolicy(default_hourly_spend_limit=10**9))  # fmt: skip
    kit = replace(kit, clock=clock, policy=AllocationPolicy(
        billing_window=WINDOW, hold_slack=timedelta(minutes=5),
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
    placed = await create_allocation(kit, user, 1, [key.id], "m", META)
    assert placed.node_id == node.id
    async with uow() as u:  # provisioned (the node work is tested in test_allocation_lifecycle)
        provisioning = transition(placed, AllocationTrigger.PROVISION, clock.now)
        running = transition(provisioning, AllocationTrigger.PROVISIONED, clock.now)
        running = await u.allocations.save(replace(
            running, version=placed.version + 1, running_since=clock.now,
            billed_until=clock.now))  # fmt: skip
        await u.commit()
    return Running(kit, clock, user, running)


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
    assert await _hold(r) == (HoldStatus.OPEN, 90 + 600, 90)  # a full window ahead again
    r.clock.tick(30.5)
    await meter(r.kit)
    assert (await _hold(r))[2] == usage_cost(PRICE, 120.5) == 121  # to the second, rounded once
    assert await _available(r) == 100_000 - 121 - 600


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
