"""The provisioning engine: one step of an allocation's life at a time, safe to run twice.

`advance` works under the allocation's lease (domain/leases.py): the Dispatcher claimed it, or
a direct call takes it here; a heartbeat renews it while the step runs, so a step slower than
the lease is still worked on by one worker only. It reads the allocation, does the node work
its state calls for (every node operation is an "ensure", serialized per account on the node
and fenced with the lease generation), then stores the outcome only if the row is still in the
state, version and lease generation it read. A superseded worker (its lease revoked by a stop,
or lapsed and claimed anew) therefore changes nothing, on the node or in the database, and a
worker that died halfway leaves a row that comes due again when its lease ends.

A step that fails is retried with backoff until its deadline; then provisioning is given up
(FAIL), which tears down through the same path as a stop. Teardown itself is never given up:
the node may hold a user with GPU access, so it is retried (capped backoff) until it is gone.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime

from domain.compute.accounts import AccountSpec
from domain.compute.allocations import (
    ACTIVE,
    Allocation,
    AllocationState,
    AllocationTrigger,
    Failure,
    FailureCode,
    StopReason,
    transition,
)
from domain.compute.changes import store
from domain.compute.kit import ComputeKit
from domain.compute.records import AllocationEventKind
from domain.compute.settlement import settle
from domain.fleet.nodes import NodeState
from domain.fleet.placement_services import release_gpus
from domain.fleet.remote import FenceRefused, NodeFailure, NodeTarget, NodeUnreachable
from domain.fleet.targets import node_target
from domain.leases import under_lease
from domain.ports import UnitOfWork

_S, _T = AllocationState, AllocationTrigger
log = logging.getLogger(__name__)


def holder(allocation_id: int) -> str:
    """Whose GPU assignments these are (domain/fleet/placement_services.py)."""
    return f"allocation:{allocation_id}"


async def advance(
    kit: ComputeKit, allocation_id: int, token: int | None = None
) -> Allocation | None:
    """Do the allocation's next step under lease `token` (the Dispatcher's claim; None: take
    the lease here, if nobody holds it). Returns the allocation as stored after; None if it is
    gone, or this worker does not hold its lease (superseded, or another holds it)."""
    return await under_lease(
        kit.uow,
        lambda uow: uow.allocations,
        allocation_id,
        token,
        kit.policy.lease,
        f"allocation {allocation_id}",
        lambda lease: _step(kit, allocation_id, lease),
    )


async def _step(kit: ComputeKit, allocation_id: int, lease: int) -> Allocation | None:
    uow = kit.uow()
    async with uow:
        current = await uow.allocations.get(allocation_id)
        if current is not None and current.lease_token != lease:
            return None  # revoked between taking the lease and reading the row
        rekeying = current is not None and rekey_due(current)  # operator control: keys changed
        if (
            current is None
            or (current.state not in ACTIVE and not rekeying)
            or current.node_id is None
        ):
            return current
        node = await uow.nodes.get(current.node_id)
        assert node is not None  # nodes are retired, never deleted
        # Only provisioning (and a rekey) writes the keys; a teardown needs none.
        keys = (
            (await uow.allocations.public_keys([allocation_id]))[allocation_id]
            if rekeying or current.state in (_S.PLACED, _S.PROVISIONING)
            else []
        )
        # Nothing talks to a node whose host key changed: it may not be ours any more.
        target = (None if node.state is NodeState.QUARANTINED
                  else await node_target(kit.fleet, uow, node, f"provision:allocation-{current.id}"))  # fmt: skip
    if rekeying:
        return await rekey(kit, current, target, keys, lease)
    if current.state is _S.PLACED:
        moved = await _move(kit, current, _T.PROVISION)
        if moved is None:
            return None
        current = moved
    if current.state is _S.PROVISIONING:
        assert current.username is not None
        account = AccountSpec(current.username, keys, current.gpu_indices)
        return await _on_node(
            kit,
            current,
            lambda: kit.ops.ensure_account(_reachable(target), account, fence=lease),
            lambda seen: _move(kit, seen, _T.PROVISIONED),
        )
    assert current.username is not None
    user = current.username
    return await _on_node(
        kit,
        current,
        lambda: kit.ops.remove_account(
            _reachable(target), user, fence=lease, keep_home=kit.policy.keep_home
        ),
        lambda seen: _move(kit, seen, _T.TORN_DOWN),
    )


async def _on_node(
    kit: ComputeKit,
    seen: Allocation,
    command: Callable[[], Awaitable[None]],
    then: Callable[[Allocation], Awaitable[Allocation | None]],
) -> Allocation | None:
    """Run the step's node command, then `then(seen)` to store its outcome. A failure is a failed
    attempt (retried with backoff); a fence refusal means the node has seen a newer generation:
    whoever holds it now carries the step on, so nothing is stored (and nothing was done)."""
    try:
        await command()
    except FenceRefused as exc:
        log.info(
            "allocation %s: node refused generation %s (%s); outcome discarded",
            seen.id,
            seen.lease_token,
            exc,
        )
        return None
    except NodeFailure as exc:
        return await _failed_attempt(kit, seen, exc)
    return await then(seen)


# --- Operator control (issue 16, item 6): a RUNNING allocation whose keys changed ----------


def rekey_due(allocation: Allocation) -> bool:
    return allocation.state is _S.RUNNING and allocation.next_attempt_at is not None


async def rekey(
    kit: ComputeKit, seen: Allocation, target: NodeTarget | None, keys: list[str], lease: int
) -> Allocation | None:
    """Re-run `ensure_account` with the allocation's stored `keys` (an SSH key was removed:
    domain/compute/key_revocation.py), fenced with the lease like every step, then clear
    `next_attempt_at` if the row is still as seen (same version and lease generation: a key
    change meanwhile bumps the version and the row comes due again); a failure is retried with
    backoff, as any step. Returns the allocation as stored."""
    assert seen.username is not None
    account = AccountSpec(seen.username, keys, seen.gpu_indices)
    # A fence refusal: stopped meanwhile, the teardown owns the account.
    return await _on_node(
        kit,
        seen,
        lambda: kit.ops.ensure_account(_reachable(target), account, fence=lease),
        lambda row: _rekeyed(kit, row, len(keys)),
    )


async def _rekeyed(kit: ComputeKit, seen: Allocation, keys: int) -> Allocation | None:
    now = kit.clock()
    uow = kit.uow()
    async with uow:
        before = await locked_as_seen(uow, seen)
        if before is None:
            return None
        after = replace(
            before, version=before.version + 1, updated_at=now, attempts=0, next_attempt_at=None
        )
        note = (AllocationEventKind.KEYS_CHANGED, f"the node has its {keys} key(s) now")
        saved = await store(uow, before, after, "allocation.rekeyed", now=now, note=note)
        await uow.commit()
        return saved


def _reachable(target: NodeTarget | None) -> NodeTarget:
    if target is None:
        raise NodeUnreachable("the node is quarantined (its host key changed); not contacted")
    return target


async def locked_as_seen(uow: UnitOfWork, seen: Allocation) -> Allocation | None:
    """Lock the allocation (in the caller's transaction) and return it if it is still in the
    state, version and lease generation `seen` had; None when it moved or its lease passed to
    another worker meanwhile, so the caller does nothing (the fenced write of an outcome)."""
    now = await uow.allocations.get(seen.id, for_update=True)
    if now is None or (now.state, now.version, now.lease_token) != (
        seen.state,
        seen.version,
        seen.lease_token,
    ):
        log.info(
            "allocation %s: outcome discarded, it moved on (version %s -> %s, generation %s -> %s)",
            seen.id,
            seen.version,
            None if now is None else now.version,
            seen.lease_token,
            None if now is None else now.lease_token,
        )
        return None
    return now


async def give_up(uow: UnitOfWork, kit: ComputeKit, before: Allocation, failure: Failure,
                  now: datetime) -> Allocation:  # fmt: skip
    """The allocation failing for `failure`: its money settled (nothing billed unless it ran)
    and on its way through the teardown to FAILED. The caller stores it."""
    failing = replace(before, failure=Failure(failure.code, failure.message[:500]))
    await settle(uow, kit, failing, now)
    return replace(transition(failing, _T.FAIL, now), stop_reason=StopReason.FAILED)


async def _move(kit: ComputeKit, seen: Allocation, trigger: AllocationTrigger) -> Allocation | None:
    """Apply `trigger` if the allocation is still as we saw it; None when it moved meanwhile
    (another worker, or the user stopped it: the next claim takes it from there)."""
    now = kit.clock()
    uow = kit.uow()
    async with uow:
        before = await locked_as_seen(uow, seen)
        if before is None:
            return None
        after = transition(before, trigger, now)
        if trigger is _T.PROVISION:
            after = replace(after, deadline=now + kit.policy.provision_deadline)
        elif trigger is _T.PROVISIONED:
            after = replace(after, running_since=now, billed_until=now, deadline=None)
        elif trigger is _T.TORN_DOWN:
            await release_gpus(uow, holder(before.id))
            await settle(uow, kit, before, now)  # a no-op unless the stop did not settle it
            after = replace(after, deadline=None)
        saved = await store(uow, before, after, f"allocation.{trigger.value}", now=now)
        await uow.commit()
        return saved


async def _failed_attempt(kit: ComputeKit, seen: Allocation, exc: NodeFailure) -> Allocation | None:
    """Count the failure and schedule a retry; past the deadline, give provisioning up."""
    now = kit.clock()
    uow = kit.uow()
    async with uow:
        before = await locked_as_seen(uow, seen)
        if before is None:
            return None
        attempts = before.attempts + 1
        past_deadline = (before.state is _S.PROVISIONING and before.deadline is not None
                         and now >= before.deadline)  # fmt: skip
        if past_deadline:
            code = (FailureCode.NODE_UNREACHABLE if isinstance(exc, NodeUnreachable)
                    else FailureCode.PROVISIONING_FAILED)  # fmt: skip
            after = await give_up(uow, kit, before, Failure(code, str(exc)), now)
        else:
            # Same state: the version still goes up, so a late twin of this attempt is void.
            after = replace(before, version=before.version + 1, attempts=attempts,
                            updated_at=now, next_attempt_at=now + kit.policy.retry_after(attempts))  # fmt: skip
        note = (AllocationEventKind.ATTEMPT_FAILED, f"attempt {attempts} failed: {str(exc)[:300]}")
        saved = await store(uow, before, after, "allocation.failed", now=now, note=note)
        await uow.commit()
        return saved
