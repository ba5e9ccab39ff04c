"""Actors: take ids or small messages, do one thing, and are safe to run twice."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dramatiq
import structlog

from domain.compute.engine import advance
from domain.compute.kit import ComputeKit
from domain.fleet.checks import check_node
from domain.fleet.kit import FleetKit

log = structlog.get_logger(__name__)

CHECK_NODE = "check_node"
# Work on a node: a node that fails is an outcome recorded and retried by the caller's own
# state (its lease brings the row back); an error here is ours (the database away): retry a
# little. Ten minutes at most: SSH commands have their own timeouts well within that.
_NODE_WORK: dict[str, Any] = {
    "max_retries": 3,
    "min_backoff": 1_000,
    "max_backoff": 30_000,
    "time_limit": 10 * 60 * 1000,
}
ADVANCE_ALLOCATION = "advance_allocation"


@dataclass
class ActorDeps:
    """Kits are made lazily inside the worker's event-loop thread, not at import."""

    # Builds the fleet kit (engine, KMS, SSH connector) on the actors' event loop at first use.
    fleet_factory: Callable[[], FleetKit] | None = None
    compute_factory: Callable[[FleetKit], ComputeKit] | None = None
    _fleet: FleetKit | None = field(default=None, init=False)
    _compute: ComputeKit | None = field(default=None, init=False)

    def fleet(self) -> FleetKit:
        if self._fleet is None:
            if self.fleet_factory is None:
                raise RuntimeError("this worker has no fleet kit (GPUCLOUD_KMS_KEY_FILE unset)")
            self._fleet = self.fleet_factory()
        return self._fleet

    def compute(self) -> ComputeKit:
        if self._compute is None:
            if self.compute_factory is None:
                raise RuntimeError("this worker has no compute kit (GPUCLOUD_KMS_KEY_FILE unset)")
            self._compute = self.compute_factory(self.fleet())
        return self._compute


@dataclass(frozen=True)
class Actors:
    check_node: dramatiq.Actor[Any, Any]
    advance_allocation: dramatiq.Actor[Any, Any]


def register_actors(broker: dramatiq.Broker, deps: ActorDeps) -> Actors:
    async def check(node_id: int, token: int | None = None) -> None:
        # Safe to run twice: it works only under the lease `token` the Dispatcher claimed, and
        # changes the node only through `transition`.
        node = await check_node(deps.fleet(), node_id, token)
        if node is not None:
            log.info("fleet.node_checked", node_id=node_id, state=str(node.state),
                     health=str(node.health), version=node.version)  # fmt: skip

    async def advance_one(allocation_id: int, token: int | None = None) -> None:
        # Safe to run twice: it works only under the lease `token` the Dispatcher claimed, and
        # a step is stored only if the row is still as it was read, under that lease.
        allocation = await advance(deps.compute(), allocation_id, token)
        if allocation is not None:
            log.info("engine.advanced", allocation_id=allocation_id,
                     state=str(allocation.state), version=allocation.version)  # fmt: skip

    return Actors(
        advance_allocation=dramatiq.actor(
            actor_name=ADVANCE_ALLOCATION,
            broker=broker,
            queue_name="allocations",
            **_NODE_WORK,
        )(advance_one),
        check_node=dramatiq.actor(
            actor_name=CHECK_NODE,
            broker=broker,
            queue_name="fleet",
            **_NODE_WORK,
        )(check),
    )
