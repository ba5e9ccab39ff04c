"""Values the allocation repository takes and returns besides the allocation itself."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from domain.compute.allocations import AllocationState
from domain.money import Money


class AllocationEventKind(StrEnum):
    """What an entry of an allocation's history records (stored as its value)."""

    STATE_CHANGED = "state_changed"
    ATTEMPT_FAILED = "attempt_failed"  # a step failed and will be retried
    LOW_BALANCE = "low_balance"  # the next billing window could not be reserved
    KEYS_CHANGED = "keys_changed"  # an SSH key was removed; the node is updated


@dataclass(frozen=True, slots=True)
class NewAllocation:
    user_id: int
    sku_id: int
    hourly_price: Money  # the SKU's price now: what the user accepts
    ssh_key_ids: Sequence[int]
    public_keys: Sequence[str]  # snapshot of the keys' OpenSSH lines


@dataclass(frozen=True, slots=True)
class AllocationFilter:
    states: Sequence[AllocationState] | None = None
    user_id: int | None = None  # `search` only (admins): one owner's
    node_id: int | None = None  # `search` only (admins): on one node


@dataclass(frozen=True, slots=True)
class AllocationEvent:
    """One entry of an allocation's history: a change of state, a failed attempt, a warning."""

    id: int
    allocation_id: int
    kind: str  # an AllocationEventKind's value
    state: AllocationState  # the state after the event
    message: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Metered:
    """What a metering tick reads and writes of a running allocation: its billing, not the
    whole allocation (a tick handles thousands)."""

    id: int
    user_id: int
    version: int
    node_id: int | None
    hold_id: int
    hourly_price_minor: int  # the price its owner accepted
    billed_until: datetime | None  # running time is accounted up to here
    billable_seconds: float
    low_balance_since: datetime | None
