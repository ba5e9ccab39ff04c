"""Placement as a use case: pick GPUs for a request and record them, inside the caller's
transaction (an allocation's creation will call `reserve_gpus` in its own unit of work, so the
GPUs, the hold and the allocation are stored together or not at all).

The decision is made on a snapshot by the pure `place`; the chosen node's row is then locked
and its free GPUs read afresh, and the decision is made again on that. Two requests racing for
the same node are thus served one after the other, and the database's one-active-assignment-
per-GPU index stands behind it all.

No deadlock: everything that changes assignments locks the node row first (releasing too), and
a placement waits for a node lock only while it holds none; otherwise it gives up the whole
transaction as `Contention`, which the caller's `retrying` runs again.
"""

from __future__ import annotations

from dataclasses import replace

from domain.errors import Contention
from domain.fleet.placement import GpuRequest, NoCapacity, Placement, place, ranked
from domain.ports import UnitOfWork

# How many best-fitting nodes one snapshot brings: enough that losing a race for the best one
# rarely needs a second snapshot, few enough that the query stays cheap on a large fleet.
CANDIDATES = 8


async def reserve_gpus(uow: UnitOfWork, request: GpuRequest, holder: str) -> Placement | NoCapacity:
    """Assign `request.gpu_count` GPUs of one ready node to `holder`, or say there is no
    capacity. Call inside `async with uow`; the caller commits. A clash the locks did not
    prevent surfaces as `Contention`, and the caller's `retrying` runs the whole transaction
    again."""
    passed: set[int] = set()  # nodes found full once locked; not offered again this time
    while True:
        snapshot = await uow.placements.candidates(request, CANDIDATES + len(passed))
        best_first = [n for n in ranked(snapshot, request) if n.node_id not in passed]
        if not best_first:
            return NoCapacity(request, await uow.placements.largest_free(request))
        # Concurrent requests all see the same best fit. Rather than queue on that node, each
        # takes the best-fitting node no other placement holds right now, and waits for one
        # only when every candidate is held.
        busy: list[int] = []
        for candidate in best_first:
            decided = await _decide_locked(uow, request, candidate.node_id, wait=False)
            if decided is None:
                busy.append(candidate.node_id)
            elif isinstance(decided, Placement):
                await uow.placements.assign(decided.node_id, decided.gpu_indices, holder)
                return decided
            else:
                passed.add(candidate.node_id)
        if not busy:
            continue  # every candidate was full once locked: look again past them
        if passed:
            # We hold locks on full nodes; waiting for another now could close a cycle with a
            # placement that holds what we wait for. Start the transaction over instead.
            raise Contention("every node that fits is being placed on")
        # Holding no lock, we can wait for the best busy node without risking a deadlock.
        decided = await _decide_locked(uow, request, busy[0], wait=True)
        if isinstance(decided, Placement):
            await uow.placements.assign(decided.node_id, decided.gpu_indices, holder)
            return decided
        passed.add(busy[0])


async def _decide_locked(uow: UnitOfWork, request: GpuRequest, node_id: int,
                         *, wait: bool) -> Placement | NoCapacity | None:  # fmt: skip
    """Lock the node and decide on its free GPUs read afresh. None when, not waiting, the lock
    was held by another transaction (or the node left READY)."""
    fresh = await uow.placements.lock_node(node_id, wait=wait)
    if fresh is None:
        return None if not wait else NoCapacity(request, 0)
    # The node matched the request's model in the snapshot, and a ready node's model does not
    # change (only a new bootstrap records GPUs); name it as the request does, as the snapshot
    # did, so `place` compares like with like ("H100" vs "H100 80GB HBM3").
    return place([replace(fresh, gpu_model=request.gpu_model)], request)


async def release_gpus(uow: UnitOfWork, holder: str) -> int:
    """End the holder's assignments (in the caller's transaction); returns how many."""
    return await uow.placements.release(holder)
