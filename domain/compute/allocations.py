"""An allocation: a user's GPUs on one node, and the state machine that provisions, runs and
tears them down.

requested -> placed (GPUs assigned, hold opened) -> provisioning -> running -> stopping ->
stopped. Failing is a way through `stopping` too: the reason is recorded and the same teardown
undoes whatever was done (the half-made user, the GPUs, the hold), ending in `failed`. So there
is one teardown path, and a worker that dies anywhere leaves a state the engine finishes.

`state` is the source of truth; every change goes through `transition`, which checks the edge
and bumps the version. The engine acts on a row only if it is still in the state and version it
read, so a repeated or late message changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from domain.errors import Conflict, NotFound, Problem
from domain.money import Money


class AllocationState(StrEnum):
    REQUESTED = "requested"
    PLACED = "placed"
    PROVISIONING = "provisioning"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


class AllocationTrigger(StrEnum):
    PLACE = "place"
    PROVISION = "provision"  # the engine starts work on the node
    PROVISIONED = "provisioned"
    STOP = "stop"  # the user, the billing (balance exhausted) or an admin
    FAIL = "fail"  # given up: tear down what was done, then FAILED
    TORN_DOWN = "torn_down"


class AllocationErrorCode(StrEnum):
    NOT_FOUND = "NOT_FOUND"
    INVALID_ID = "INVALID_ID"
    SKU_NOT_FOUND = "SKU_NOT_FOUND"
    SKU_RETIRED = "SKU_RETIRED"
    NO_SSH_KEYS = "NO_SSH_KEYS"
    SSH_KEY_NOT_FOUND = "SSH_KEY_NOT_FOUND"
    TOO_MANY_SSH_KEYS = "TOO_MANY_SSH_KEYS"
    NO_CAPACITY = "NO_CAPACITY"
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    SPEND_LIMIT_REACHED = "SPEND_LIMIT_REACHED"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    INVALID_IDEMPOTENCY_KEY = "INVALID_IDEMPOTENCY_KEY"
    TRANSITION_NOT_ALLOWED = "TRANSITION_NOT_ALLOWED"
    REASON_REQUIRED = "REASON_REQUIRED"


class StopReason(StrEnum):
    """Who or what stopped an allocation (stored as its value)."""

    USER = "user"  # its owner asked
    BALANCE = "balance"  # the wallet could not pay for the next window
    ADMIN = "admin"  # an administrator stopped it
    DRAINED = "drained"  # its node was drained and the drain's deadline passed
    SUSPENDED = "suspended"  # its owner's account was suspended
    FAILED = "failed"  # it failed


class FailureCode(StrEnum):
    """Why an allocation failed, for the user and the operator."""

    NODE_UNREACHABLE = "NODE_UNREACHABLE"
    PROVISIONING_FAILED = "PROVISIONING_FAILED"
    DEADLINE_PASSED = "DEADLINE_PASSED"
    NODE_RETIRED = "NODE_RETIRED"


@dataclass(frozen=True, slots=True)
class Failure:
    code: FailureCode
    message: str


@dataclass(frozen=True, slots=True)
class Allocation:
    id: int
    user_id: int
    sku_id: int
    # The price the user accepted when creating it: billing and holds use this, never the
    # SKU's current price (a SKU price change applies to new allocations only).
    hourly_price: Money
    state: AllocationState
    version: int
    node_id: int | None
    gpu_indices: tuple[int, ...]
    username: str | None  # the Linux account on the node, made by the platform
    hold_id: int | None
    ssh_key_ids: tuple[int, ...]
    failure: Failure | None
    stop_reason: str | None  # a StopReason's value
    attempts: int  # failed tries of the current step
    next_attempt_at: datetime | None  # when the engine may act; None: nothing to do
    deadline: datetime | None  # the current step is given up after this
    created_at: datetime
    updated_at: datetime
    running_since: datetime | None = None
    billed_until: datetime | None = None  # running time is accounted up to here
    billable_seconds: float = 0.0  # running time billed so far (an unreachable node's aside)
    low_balance_since: datetime | None = None  # the next window could not be reserved since
    ended_at: datetime | None = None
    # The engine's lease generation (domain/leases.py): the fencing token of the worker that
    # holds the row, and of its node commands. Read-only here: only the lease calls change it,
    # and it is no part of the allocation's value (two reads of an unchanged row are equal).
    lease_token: int = field(default=0, compare=False)


_S, _T = AllocationState, AllocationTrigger

_EDGES: dict[tuple[AllocationState, AllocationTrigger], AllocationState] = {
    (_S.REQUESTED, _T.PLACE): _S.PLACED,
    (_S.PLACED, _T.PROVISION): _S.PROVISIONING,
    (_S.PROVISIONING, _T.PROVISIONED): _S.RUNNING,
    **{(s, _T.STOP): _S.STOPPING for s in (_S.PLACED, _S.PROVISIONING, _S.RUNNING)},
    **{(s, _T.FAIL): _S.STOPPING for s in (_S.PLACED, _S.PROVISIONING, _S.RUNNING)},
    (_S.STOPPING, _T.FAIL): _S.STOPPING,  # a stop that cannot finish records why
}

# States in which the engine has work to do.
ACTIVE = (_S.PLACED, _S.PROVISIONING, _S.STOPPING)
ENDED = (_S.STOPPED, _S.FAILED)


def allocation_not_found(allocation_id: int | str) -> NotFound:
    return NotFound(Problem(AllocationErrorCode.NOT_FOUND,
                            f"No allocation with id {allocation_id}.", "id"))  # fmt: skip


def next_state(allocation: Allocation, trigger: AllocationTrigger) -> AllocationState:
    """Where `trigger` moves the allocation; raises `Conflict` (TRANSITION_NOT_ALLOWED)."""
    if trigger is _T.TORN_DOWN and allocation.state is _S.STOPPING:
        return _S.FAILED if allocation.failure is not None else _S.STOPPED
    to = _EDGES.get((allocation.state, trigger))
    if to is None:
        raise Conflict(Problem(
            AllocationErrorCode.TRANSITION_NOT_ALLOWED,
            f"Allocation {allocation.id} is {allocation.state.name}; it cannot "
            f"{trigger.value.replace('_', ' ')}.", "id"))  # fmt: skip
    return to


def transition(allocation: Allocation, trigger: AllocationTrigger, now: datetime) -> Allocation:
    """The allocation after `trigger`: the one place its state changes. The version goes up on
    every call; a new step starts with no failed attempts. Set the other fields the step
    changes (node, failure, schedule) with `replace` before or after."""
    to = next_state(allocation, trigger)
    ended = now if to in ENDED else allocation.ended_at
    return replace(allocation, state=to, version=allocation.version + 1, updated_at=now,
                   attempts=0 if to is not allocation.state else allocation.attempts,
                   ended_at=ended, next_attempt_at=now if to in ACTIVE else None)  # fmt: skip
