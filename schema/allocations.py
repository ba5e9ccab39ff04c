"""Allocation types: a user's GPUs on a node, how to log in once they run, and the area's
inputs, payloads and error.

Only the owner (or an administrator holding `admin:read`) reaches an allocation (resolvers.access).
No type carries the hold behind it, the node's name, id or admin login, or anything of another
user: a running allocation shows only the host, port and Linux user to `ssh` to.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from domain.compute.allocations import Allocation as DomainAllocation
from domain.compute.allocations import AllocationErrorCode as DomainAllocationErrorCode
from domain.compute.allocations import AllocationState as DomainAllocationState
from domain.compute.allocations import FailureCode as DomainFailureCode
from domain.compute.allocations import StopReason as DomainStopReason
from domain.compute.records import AllocationEventKind as DomainAllocationEventKind
from schema.catalog import Sku
from schema.errors import Error
from schema.money import Money
from schema.relay import Connection, Node, to_global_id
from schema.ssh_keys import SshKey

# The domain's enums themselves, exposed as-is: one list of values, no copy to drift.
AllocationState = strawberry.enum(
    DomainAllocationState,
    description="Where an allocation is in its life: PLACED (GPUs reserved), PROVISIONING, "
    "RUNNING (log in now), STOPPING, then STOPPED, or FAILED with a reason.",
)
FailureCode = strawberry.enum(DomainFailureCode, description="Why an allocation failed.")
StopReason = strawberry.enum(
    DomainStopReason,
    description="Who stopped an allocation: USER (its owner), BALANCE (the wallet ran out), "
    "ADMIN (an administrator, with a reason sent to the owner), DRAINED (its node was drained "
    "and the drain's deadline came), SUSPENDED (the owner's account was suspended) or FAILED.",
)
AllocationEventKind = strawberry.enum(
    DomainAllocationEventKind,
    description="What an allocation event records: STATE_CHANGED, ATTEMPT_FAILED (a step "
    "failed and will be retried) or LOW_BALANCE (the next billing window could not be reserved).",
)
AllocationErrorCode = strawberry.enum(
    DomainAllocationErrorCode, description="Why an allocation request was refused."
)


@strawberry.type(description="Why an allocation failed.")
class AllocationFailure:
    code: FailureCode  # type: ignore[valid-type]
    message: str


@strawberry.type(
    description="Where to log in to a running allocation: `ssh -p port username@host`."
)
class SshLogin:
    host: str
    port: int
    username: str = strawberry.field(description="The Linux account made for this allocation.")


# The fields of Allocation that read more than its row, through the request's loaders
# (resolvers.loaders), so a page of allocations costs one query per field, not one per row.


async def _sku(root: Allocation, info: strawberry.Info) -> Sku:
    found = await info.context.loaders.sku.load(root.domain.sku_id)
    assert found is not None, "SKUs are retired, never deleted"
    return Sku.from_domain(found)


async def _connection(root: Allocation, info: strawberry.Info) -> SshLogin | None:
    allocation = root.domain
    if (allocation.state is not DomainAllocationState.RUNNING or allocation.node_id is None
            or allocation.username is None):  # fmt: skip
        return None
    node = await info.context.loaders.fleet_node.load(allocation.node_id)
    if node is None:
        return None
    return SshLogin(host=node.host, port=node.port, username=allocation.username)


async def _ssh_keys(root: Allocation, info: strawberry.Info) -> list[SshKey]:
    allocation = root.domain
    found = await info.context.loaders.ssh_key.load_many(list(allocation.ssh_key_ids))
    return [SshKey.from_domain(key) for key in found
            if key is not None and key.user_id == allocation.user_id]  # fmt: skip


@strawberry.type(description="One entry of an allocation's history.")
class AllocationEvent:
    kind: AllocationEventKind  # type: ignore[valid-type]
    state: AllocationState = strawberry.field(  # type: ignore[valid-type]
        description="The allocation's state after the event."
    )
    message: str
    at: datetime


async def _events(root: Allocation, info: strawberry.Info) -> list[AllocationEvent]:
    found = await info.context.loaders.allocation_events.load(root.domain.id) or []
    return [AllocationEvent(kind=DomainAllocationEventKind(e.kind), state=e.state,
                            message=e.message, at=e.at)
            for e in found]  # fmt: skip


@strawberry.type(description="GPUs of one node, yours until you stop them.")
class Allocation(Node):
    state: AllocationState  # type: ignore[valid-type]
    owner_id: strawberry.ID = strawberry.field(description="The User who owns it.")
    version: int = strawberry.field(description="Goes up on every change of the allocation.")
    sku: Sku = strawberry.field(resolver=_sku, description="What was ordered, as it is now.")
    hourly_price: Money = strawberry.field(
        description="The price per hour you accepted when creating it, which it is billed at "
        "for its whole life: a later change of the SKU's price applies to new allocations only."
    )
    gpu_count: int
    gpu_indices: list[int] = strawberry.field(
        description="The node's GPUs that are yours (CUDA_VISIBLE_DEVICES lists them)."
    )
    connection: SshLogin | None = strawberry.field(
        resolver=_connection, description="How to log in; null unless the state is RUNNING."
    )
    failure: AllocationFailure | None = strawberry.field(
        description="Why it failed; null unless it is failing or FAILED."
    )
    stop_reason: StopReason | None = strawberry.field(  # type: ignore[valid-type]
        description="Who stopped it; null until it is stopped."
    )
    created_at: datetime
    running_since: datetime | None
    ended_at: datetime | None
    ssh_keys: list[SshKey] = strawberry.field(
        resolver=_ssh_keys,
        description="The keys it was made with that you still have. Removing a key also takes "
        "it off the allocation: the node's authorized_keys is rewritten without it.",
    )
    events: list[AllocationEvent] = strawberry.field(
        resolver=_events, description="Its latest 50 events, newest first."
    )
    domain: strawberry.Private[DomainAllocation]

    @classmethod
    def from_domain(cls, allocation: DomainAllocation) -> Allocation:
        failure = allocation.failure
        return cls(
            id=to_global_id("Allocation", allocation.id),
            domain=allocation,
            state=allocation.state,
            owner_id=to_global_id("User", allocation.user_id),
            version=allocation.version,
            hourly_price=Money.from_domain(allocation.hourly_price),
            gpu_count=len(allocation.gpu_indices),
            gpu_indices=list(allocation.gpu_indices),
            failure=None if failure is None
            else AllocationFailure(code=failure.code, message=failure.message),
            stop_reason=None if allocation.stop_reason is None
            else DomainStopReason(allocation.stop_reason),
            created_at=allocation.created_at,
            running_since=allocation.running_since,
            ended_at=allocation.ended_at,
        )  # fmt: skip


AllocationConnection = Connection[Allocation]


@strawberry.input(description="Narrow your allocations; every given field must match.")
class AllocationFilter:
    states: list[AllocationState] | None = strawberry.field(  # type: ignore[valid-type]
        default=None, description="Any of these states; null or empty: every state."
    )


@strawberry.input(
    description="Narrow every user's allocations (admins); every given field must match."
)
class AdminAllocationFilter:
    states: list[AllocationState] | None = strawberry.field(  # type: ignore[valid-type]
        default=None, description="Any of these states; null or empty: every state."
    )
    user_id: strawberry.ID | None = strawberry.field(default=None, description="One owner's.")
    node_id: strawberry.ID | None = strawberry.field(default=None, description="On one FleetNode.")


@strawberry.input(description="Stop anyone's allocation (admins), saying why.")
class AdminStopAllocationInput:
    id: strawberry.ID
    reason: str = strawberry.field(
        description="1 to 500 characters; audited, and sent to the owner in a notification."
    )


@strawberry.input(
    description="GPUs to allocate now: the SKU's GPUs are placed on one node and its first "
    "billing window is reserved from your wallet, or the request is refused and nothing is kept."
)
class CreateAllocationInput:
    sku_id: strawberry.ID = strawberry.field(description="An active SKU.")
    ssh_key_ids: list[strawberry.ID] = strawberry.field(
        description="Your SSH keys (at least one) to log in with."
    )
    idempotency_key: str = strawberry.field(
        description="Your unique key for this request (1 to 255 printable characters): "
        "sending it again returns the same allocation, never a second one."
    )


@strawberry.type
class AllocationPayload:
    allocation: Allocation


@strawberry.type(description="One problem with an allocation request.")
class AllocationProblem:
    code: AllocationErrorCode  # type: ignore[valid-type]
    message: str
    field: str | None


@strawberry.type(description="An allocation request was refused; `problems` lists every reason.")
class AllocationError(Error):
    code: AllocationErrorCode  # type: ignore[valid-type]
    problems: list[AllocationProblem]


AllocationResult = Annotated[
    AllocationPayload | AllocationError, strawberry.union("AllocationResult")
]
