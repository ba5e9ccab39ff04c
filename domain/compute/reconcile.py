"""The reconciler: compare what the database says each node should have with what it has, and
repair the drift. An account no allocation owns is removed; a running allocation's account that
is missing, or holds other GPUs than its own, is ensured again, and failed if that is refused.
Every repair is an audit row.

Allocations the engine is working on (placed, provisioning, stopping) are left to it. The
database is read after the node, so an account made or removed in between is never mistaken
for drift.

Every command carries a fence like the engine's (domain/leases.py): the allocation's current
lease generation. An ensure that races a stop is therefore refused on the node (the stop
revoked the lease, so the teardown's generation is newer, and it left a tombstone): the
reconciler can never bring back an account whose teardown has begun.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from domain.audit.records import WORKER, audit
from domain.compute.accounts import AccountSpec, is_account_name
from domain.compute.allocations import (
    Allocation,
    AllocationState,
    Failure,
    FailureCode,
)
from domain.compute.changes import store
from domain.compute.engine import give_up, locked_as_seen
from domain.compute.kit import ComputeKit
from domain.fleet.nodes import NodeState
from domain.fleet.remote import FenceRefused, NodeFailure
from domain.fleet.targets import node_target
from domain.identity.principal import SYSTEM
from domain.ports import UnitOfWork

# Nodes we talk to for this; an unreachable or quarantined one waits for the fleet's probe.
_REACHABLE = (NodeState.READY, NodeState.CORDONED, NodeState.DRAINING, NodeState.UNHEALTHY)


@dataclass
class Repairs:
    orphans_removed: list[str] = field(default_factory=list)
    accounts_restored: list[str] = field(default_factory=list)
    allocations_failed: list[int] = field(default_factory=list)


async def reconcile_node(kit: ComputeKit, node_id: int) -> Repairs:
    repairs = Repairs()
    uow = kit.uow()
    async with uow:
        node = await uow.nodes.get(node_id)
        if node is None or node.state not in _REACHABLE:
            return repairs
        target = await node_target(kit.fleet, uow, node, f"reconcile:node-{node_id}")
    try:
        found = {a.username: a for a in await kit.ops.accounts(target)}
    except NodeFailure:
        return repairs  # the fleet's probe marks the node; try again next time
    async with uow:
        allocations = {a.username: a for a in await uow.allocations.on_node(node_id) if a.username}
        fences = await _fences(uow, kit.policy.user_prefix, set(found) - set(allocations))
        keys = await uow.allocations.public_keys([a.id for a in allocations.values()
                                                   if a.state is AllocationState.RUNNING])  # fmt: skip
    for username in sorted(set(found) - set(allocations)):
        try:
            await kit.ops.remove_account(
                target, username, fences.get(username, 0), keep_home=kit.policy.keep_home
            )
        except NodeFailure:
            continue
        await _audit(kit, "node.orphan_account_removed", ("node", node_id),
                     {"username": username, "gpus": list(found[username].gpu_indices)})  # fmt: skip
        repairs.orphans_removed.append(username)
    for username, allocation in sorted(allocations.items()):
        if allocation.state is not AllocationState.RUNNING:
            continue  # the engine's
        seen = found.get(username)
        if seen is not None and set(seen.gpu_indices) == set(allocation.gpu_indices):
            continue
        spec = AccountSpec(username, keys[allocation.id], allocation.gpu_indices)
        try:
            await kit.ops.ensure_account(target, spec, allocation.lease_token)
        except FenceRefused:
            continue  # stopped meanwhile: its teardown owns the account now
        except NodeFailure as exc:
            if await _fail(kit, allocation, str(exc)):
                repairs.allocations_failed.append(allocation.id)
            continue
        await _audit(kit, "allocation.account_restored", ("allocation", allocation.id), {
            "username": username, "was": None if seen is None else list(seen.gpu_indices),
            "gpus": list(allocation.gpu_indices)})  # fmt: skip
        repairs.accounts_restored.append(username)
    return repairs


async def _fences(uow: UnitOfWork, prefix: str, usernames: set[str]) -> dict[str, int]:
    """Orphans' fences: their allocations' last lease generations (0 for a name we never made)."""
    ids = {int(name[len(prefix) :]): name for name in usernames if is_account_name(prefix, name)}
    found = await uow.allocations.get_many(list(ids))
    return {ids[i]: allocation.lease_token for i, allocation in found.items()}


async def _audit(kit: ComputeKit, action: str, target: tuple[str, object],
                 after: dict[str, object]) -> None:  # fmt: skip
    uow = kit.uow()
    async with uow:
        await uow.audit.append(audit(SYSTEM, WORKER, action, target, after=after))
        await uow.commit()


async def _fail(kit: ComputeKit, seen: Allocation, why: str) -> bool:
    now = kit.clock()
    uow = kit.uow()
    async with uow:
        before = await locked_as_seen(uow, seen)
        if before is None:
            return False
        failure = Failure(FailureCode.PROVISIONING_FAILED,
                          f"its account could not be restored: {why}")  # fmt: skip
        after = await give_up(uow, kit, before, failure, now)
        await store(uow, before, after, "allocation.failed_by_reconciler", now=now)
        await uow.commit()
        return True
