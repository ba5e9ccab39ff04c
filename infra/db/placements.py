"""The placement repository: which GPUs are free, and the assignments that hand them out.

A GPU is free when it is present and has no active assignment (released_at IS NULL). The
partial unique index `uq_gpu_assignments_active` is what finally keeps a GPU from being handed
out twice; the queries here only make losing that race rare.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.errors import Contention
from domain.fleet.nodes import NodeState
from domain.fleet.placement import GpuRequest, NodeCapacity
from domain.fleet.records import CapacityRow, GpuAssignment

# Two pieces recur below: the model rule of `domain.fleet.inventory.model_matches` (equal, or
# the SKU's model followed by ' ' or '-'), and "no active assignment", served by the partial
# unique index on (node_id, gpu_index).

_MODEL_MATCHES = """(upper(n.gpu_model) = :model
            OR starts_with(upper(n.gpu_model), CAST(:model AS text) || ' ')
            OR starts_with(upper(n.gpu_model), CAST(:model AS text) || '-'))"""

# The tightest fits first, found through `ix_nodes_placement` on the trigger-kept free count;
# only the `limit` nodes chosen have their free indices read.
_CANDIDATES = text(f"""
    SELECT n.id, n.region,
           array_agg(g.gpu_index ORDER BY g.gpu_index) AS free
      FROM (SELECT n.id, n.region, n.gpus_free FROM nodes n
             WHERE n.state = 'ready' AND n.region = :region AND n.gpus_free >= :count
               AND {_MODEL_MATCHES}
             ORDER BY n.gpus_free, n.id
             LIMIT :limit) n
      JOIN node_gpus g ON g.node_id = n.id AND g.present
     WHERE NOT EXISTS (SELECT 1 FROM gpu_assignments a
                        WHERE a.node_id = g.node_id AND a.gpu_index = g.gpu_index
                          AND a.released_at IS NULL)
     GROUP BY n.id, n.region, n.gpus_free
     ORDER BY n.gpus_free, n.id
""")  # noqa: S608 - a constant fragment, no input

# The most free GPUs any ready node of the region and model has: how far off a refused
# request is.
_LARGEST_FREE = text(f"""
    SELECT coalesce(max(n.gpus_free), 0) FROM nodes n
     WHERE n.state = 'ready' AND n.region = :region AND {_MODEL_MATCHES}
""")  # noqa: S608 - a constant fragment, no input

# Locking and reading are two statements on purpose: under READ COMMITTED a statement reads
# other tables as of its start, so a SELECT that waited for the node lock would not see the
# assignments its predecessor committed; the next statement does.
_LOCK = text("SELECT id, region, gpu_model FROM nodes WHERE id = :id AND state = 'ready' "
             "FOR UPDATE")  # fmt: skip
_TRY_LOCK = text("SELECT id, region, gpu_model FROM nodes WHERE id = :id AND state = 'ready' "
                 "FOR UPDATE SKIP LOCKED")  # fmt: skip
_FREE_ON = text("""
    SELECT g.gpu_index FROM node_gpus g
     WHERE g.node_id = :id AND g.present
       AND NOT EXISTS (SELECT 1 FROM gpu_assignments a
                        WHERE a.node_id = g.node_id AND a.gpu_index = g.gpu_index
                          AND a.released_at IS NULL)
     ORDER BY g.gpu_index
""")

_ASSIGN = text("""
    INSERT INTO gpu_assignments (node_id, gpu_index, holder)
    SELECT CAST(:node_id AS bigint), i, CAST(:holder AS text) FROM unnest(CAST(:idx AS int[])) i
    RETURNING *
""")

# Locks are taken in one order everywhere: the node row, then its assignments (placement locks
# the node, then inserts). Releasing in the other order would deadlock with a placement that
# waits on the released row's unique-index entry while holding the node the trigger updates.
_LOCK_HOLDER_NODES = text("""
    SELECT id FROM nodes WHERE id IN (SELECT node_id FROM gpu_assignments
                                       WHERE holder = :holder AND released_at IS NULL)
     ORDER BY id FOR UPDATE
""")
_RELEASE = text("""
    UPDATE gpu_assignments SET released_at = now()
     WHERE holder = :holder AND released_at IS NULL
""")

_HELD_BY = text("""
    SELECT * FROM gpu_assignments WHERE holder = :holder AND released_at IS NULL
     ORDER BY node_id, gpu_index
""")

_ACTIVE_ON = text(
    "SELECT count(*) FROM gpu_assignments WHERE node_id = :id AND released_at IS NULL"
)

# Assignments are counted on present GPUs only, so `total - allocated` is exactly what
# placement sees as free (an assignment on a vanished GPU shows up as a GPU_MISSING node).
_CAPACITY = text("""
    SELECT n.id, n.name, n.region, n.state, coalesce(n.gpu_model, '') AS gpu_model,
           count(g.gpu_index) AS total, count(a.id) AS allocated
      FROM nodes n
      LEFT JOIN node_gpus g ON g.node_id = n.id AND g.present
      LEFT JOIN gpu_assignments a
        ON a.node_id = g.node_id AND a.gpu_index = g.gpu_index AND a.released_at IS NULL
     WHERE n.state <> 'retired'
     GROUP BY n.id
     ORDER BY n.region, n.name
""")

# Every SKU at once: free GPUs per ready node of the wanted regions, matched to each SKU.
_AVAILABLE = text("""
    WITH want AS (
        SELECT * FROM unnest(CAST(:sku AS bigint[]), CAST(:model AS text[]),
                             CAST(:region AS text[]), CAST(:count AS int[]))
                   AS w(sku_id, model, region, per_unit)
    ), free AS (
        SELECT n.id, n.region, n.gpu_model, count(*) AS free
          FROM nodes n
          JOIN node_gpus g ON g.node_id = n.id AND g.present
         WHERE n.state = 'ready' AND n.region = ANY(CAST(:region AS text[]))
           AND NOT EXISTS (SELECT 1 FROM gpu_assignments a
                            WHERE a.node_id = g.node_id AND a.gpu_index = g.gpu_index
                              AND a.released_at IS NULL)
         GROUP BY n.id
    )
    SELECT w.sku_id, coalesce(sum(f.free / w.per_unit), 0) AS available
      FROM want w
      LEFT JOIN free f
        ON f.region = w.region
       AND (upper(f.gpu_model) = w.model OR starts_with(upper(f.gpu_model), w.model || ' ')
            OR starts_with(upper(f.gpu_model), w.model || '-'))
     GROUP BY w.sku_id
""")


def _to_assignment(row: Any) -> GpuAssignment:
    return GpuAssignment(id=row.id, node_id=row.node_id, gpu_index=row.gpu_index,
                         holder=row.holder, created_at=row.created_at,
                         released_at=row.released_at)  # fmt: skip


class SqlPlacementRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def candidates(self, request: GpuRequest, limit: int) -> Sequence[NodeCapacity]:
        rows = await self._conn.execute(_CANDIDATES, {
            "region": request.region, "model": request.gpu_model.upper(),
            "count": request.gpu_count, "limit": limit,
        })  # fmt: skip
        # The node matched the request's model by prefix; name it as the request does so the
        # pure `place` (which compares models exactly) takes it.
        return [NodeCapacity(row.id, row.region, request.gpu_model, frozenset(row.free))
                for row in rows]  # fmt: skip

    async def largest_free(self, request: GpuRequest) -> int:
        params = {"region": request.region, "model": request.gpu_model.upper()}
        return int((await self._conn.execute(_LARGEST_FREE, params)).scalar_one())

    async def lock_node(self, node_id: int, *, wait: bool = True) -> NodeCapacity | None:
        row = (await self._conn.execute(_LOCK if wait else _TRY_LOCK, {"id": node_id})).first()
        if row is None:
            return None
        free = (await self._conn.execute(_FREE_ON, {"id": node_id})).scalars()
        return NodeCapacity(row.id, row.region, row.gpu_model or "", frozenset(free))

    async def assign(
        self, node_id: int, indices: Sequence[int], holder: str
    ) -> list[GpuAssignment]:
        if not indices:
            return []
        params = {"node_id": node_id, "idx": list(indices), "holder": holder}
        try:
            rows = (await self._conn.execute(_ASSIGN, params)).all()
        except IntegrityError as exc:
            if "uq_gpu_assignments_active" in str(exc.orig):
                raise Contention(f"a GPU of node {node_id} was assigned concurrently") from exc
            raise
        return sorted((_to_assignment(r) for r in rows), key=lambda a: a.gpu_index)

    async def release(self, holder: str) -> int:
        await self._conn.execute(_LOCK_HOLDER_NODES, {"holder": holder})
        result = await self._conn.execute(_RELEASE, {"holder": holder})
        return int(result.rowcount)

    async def held_by(self, holder: str) -> Sequence[GpuAssignment]:
        """The holder's active assignments."""
        rows = await self._conn.execute(_HELD_BY, {"holder": holder})
        return [_to_assignment(r) for r in rows]

    async def active_on(self, node_id: int) -> int:
        return int((await self._conn.execute(_ACTIVE_ON, {"id": node_id})).scalar_one())

    async def capacity(self) -> Sequence[CapacityRow]:
        rows = await self._conn.execute(_CAPACITY)
        return [
            CapacityRow(
                node_id=r.id,
                node_name=r.name,
                region=r.region,
                state=NodeState(r.state),
                gpu_model=r.gpu_model,
                total=r.total,
                allocated=r.allocated,
            )
            for r in rows
        ]

    async def available(self, skus: Sequence[tuple[int, str, str, int]]) -> dict[int, int]:
        wanted = {sku_id: (model, region, count) for sku_id, model, region, count in skus}
        if not wanted:
            return {}
        rows = await self._conn.execute(_AVAILABLE, {
            "sku": list(wanted), "model": [m.upper() for m, _, _ in wanted.values()],
            "region": [r for _, r, _ in wanted.values()],
            "count": [c for _, _, c in wanted.values()],
        })  # fmt: skip
        return {row.sku_id: int(row.available) for row in rows}
