"""What allocations need from outside, built once by the composition root, and their policy."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from domain.fleet.kit import FleetKit
from domain.ledger.policy import LedgerPolicy
from domain.ports import NodeOperations, UnitOfWork
from domain.retry import doubling


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class AllocationPolicy:
    user_prefix: str = "gc"  # Linux accounts are "<prefix><allocation id>"
    # The hold reserves this much running time ahead; metering captures and extends it.
    billing_window: timedelta = timedelta(hours=1)
    hold_slack: timedelta = timedelta(minutes=15)  # the hold outlives its window by this much
    # A hold that covers less than the window ahead is topped up to the window and this much
    # more, so most ticks only capture (a top-up is a transfer and a spend-limit read).
    reserve_step: timedelta = timedelta(minutes=5)
    provision_deadline: timedelta = timedelta(minutes=10)  # then provisioning is given up
    retry_base: timedelta = timedelta(seconds=1)
    retry_max: timedelta = timedelta(minutes=2)
    lease: timedelta = timedelta(minutes=2)  # a claimed step not finished by then is redone
    keep_home: bool = False  # on teardown, keep the user's home directory on the node
    # When the next window cannot be reserved, the owner is warned, and after this it stops.
    low_balance_grace: timedelta = timedelta(minutes=10)

    def retry_after(self, attempts: int) -> timedelta:
        """Exponential backoff: base, 2 x base, ... capped."""
        return doubling(self.retry_base, attempts, self.retry_max)


def usage_cost(hourly_price_minor: int, seconds: float) -> int:
    """What `seconds` of running cost, in minor units, rounded up to a whole unit. Billing is
    cumulative (cost of all seconds so far minus what was captured), so rounding never adds
    up across ticks."""
    return math.ceil(hourly_price_minor * max(seconds, 0.0) / 3600)


@dataclass(frozen=True)
class ComputeKit:
    uow: Callable[[], UnitOfWork]
    fleet: FleetKit  # node targets: the sealed admin keys, the CA
    ops: NodeOperations
    ledger: LedgerPolicy = field(default_factory=LedgerPolicy)
    policy: AllocationPolicy = field(default_factory=AllocationPolicy)
    clock: Callable[[], datetime] = _now
