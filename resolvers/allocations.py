"""Allocation resolvers: create and stop the caller's allocations, read one or a page of them.

Reads need only the database. Writes need the compute kit, which is made with the fleet's (node
targets are sealed with the key service): without it they answer SERVICE_UNAVAILABLE, as the
fleet's writes do. The API never runs the engine: a new allocation is PLACED here, and the
worker provisions it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry
from strawberry import Info

from domain.compute import allocation_services, operator
from domain.compute.allocations import ENDED, AllocationErrorCode
from domain.compute.changes import ALLOCATIONS_TOPIC
from domain.compute.kit import ComputeKit
from domain.compute.records import AllocationFilter as DomainAllocationFilter
from domain.errors import DomainError, InvalidInput, Problem, ServiceUnavailable
from domain.pagination import PageRequest
from resolvers.access import fetch_node, visible
from schema.allocations import (
    AdminAllocationFilter,
    AdminStopAllocationInput,
    Allocation,
    AllocationConnection,
    AllocationError,
    AllocationFilter,
    AllocationPayload,
    AllocationProblem,
    CreateAllocationInput,
)
from schema.context import AppContext
from schema.errors import typed_error
from schema.relay import After, Before, First, Last, expect_global_id
from schema.sent_ids import quoting

_CODES = frozenset(AllocationErrorCode)


def _kit(info: Info[AppContext, None]) -> ComputeKit:
    if info.context.compute is None:
        raise ServiceUnavailable("key service")
    return info.context.compute


def allocation_error(exc: DomainError) -> AllocationError:
    """The typed error; a refusal whose code the area's enum lacks (none is known to reach here)
    stays a GraphQL error carrying that code, rather than failing to serialise."""
    if any(problem.code not in _CODES for problem in exc.problems):
        raise exc
    return typed_error(exc, AllocationError, AllocationProblem)


def _ids(request: CreateAllocationInput) -> tuple[int, list[int]]:
    """The SKU's and the keys' database ids; both fields' malformed ids are reported at once."""
    problems: list[Problem] = []
    sku_id = 0
    try:
        sku_id = expect_global_id(request.sku_id, "Sku", "skuId")
    except InvalidInput as exc:
        problems += exc.problems
    key_ids = []
    for key in request.ssh_key_ids:
        try:
            key_ids.append(expect_global_id(key, "SshKey", "sshKeyIds"))
        except InvalidInput as exc:
            problems += exc.problems[:1]
            break  # one problem for the list: the client fixes them all the same way
    if problems:
        raise InvalidInput(problems)
    return sku_id, key_ids


# --- Queries ----------------------------------------------------------------------------------


async def allocation(info: Info[AppContext, None], id: strawberry.ID) -> Allocation | None:  # noqa: A002
    found: Allocation | None = await fetch_node(
        info, "Allocation", expect_global_id(id, "Allocation")
    )
    return found


async def allocations(
    info: Info[AppContext, None],
    first: First = None,
    after: After = None,
    last: Last = None,
    before: Before = None,
    filter: AllocationFilter | None = None,  # noqa: A002 - the GraphQL argument is called filter
) -> AllocationConnection:
    ctx = info.context
    assert ctx.principal.user_id is not None  # COMPUTE_READ: signed in
    wanted = filter or AllocationFilter()
    page = await allocation_services.list_allocations(
        ctx.uow(), ctx.principal.user_id, DomainAllocationFilter(states=wanted.states),
        PageRequest.parse(first, after, last, before),
    )  # fmt: skip
    page.items[:] = [(k, a) for k, a in page.items if visible(ctx.principal, "Allocation", a)]
    return AllocationConnection.from_page(page, Allocation.from_domain)


async def admin_allocations(
    info: Info[AppContext, None],
    first: First = None,
    after: After = None,
    last: Last = None,
    before: Before = None,
    filter: AdminAllocationFilter | None = None,  # noqa: A002
) -> AllocationConnection:
    wanted = filter or AdminAllocationFilter()
    user_id = (
        None
        if wanted.user_id is None
        else expect_global_id(wanted.user_id, "User", "filter.userId")
    )
    node_id = (
        None
        if wanted.node_id is None
        else expect_global_id(wanted.node_id, "FleetNode", "filter.nodeId")
    )
    page = await operator.search_allocations(
        info.context.uow(),
        DomainAllocationFilter(states=wanted.states, user_id=user_id, node_id=node_id),
        PageRequest.parse(first, after, last, before),
    )
    return AllocationConnection.from_page(page, Allocation.from_domain)


# --- Mutations --------------------------------------------------------------------------------


async def create_allocation(
    info: Info[AppContext, None],
    input: CreateAllocationInput,  # noqa: A002
) -> AllocationPayload | AllocationError:
    ctx = info.context
    kit = _kit(info)
    try:
        sku_id, key_ids = _ids(input)
        with quoting(input.sku_id, sku_id, "skuId"):
            made = await allocation_services.create_allocation(
                kit, ctx.principal, sku_id, key_ids, input.idempotency_key, ctx.meta
            )
    except DomainError as exc:
        return allocation_error(exc)
    ctx.loaders.allocation.prime(made.id, made, force=True)
    return AllocationPayload(allocation=Allocation.from_domain(made))


async def stop_allocation(
    info: Info[AppContext, None],
    id: strawberry.ID,  # noqa: A002
) -> AllocationPayload | AllocationError:
    ctx = info.context
    kit = _kit(info)
    try:
        allocation_id = expect_global_id(id, "Allocation")
        with quoting(id, allocation_id):
            stopped = await allocation_services.stop_allocation(
                kit, ctx.principal, allocation_id, ctx.meta
            )
    except DomainError as exc:
        return allocation_error(exc)
    ctx.loaders.allocation.prime(allocation_id, stopped, force=True)  # later reads see the stop
    return AllocationPayload(allocation=Allocation.from_domain(stopped))


async def admin_stop_allocation(
    info: Info[AppContext, None],
    input: AdminStopAllocationInput,  # noqa: A002
) -> AllocationPayload | AllocationError:
    ctx = info.context
    kit = _kit(info)
    try:
        allocation_id = expect_global_id(input.id, "Allocation")
        with quoting(input.id, allocation_id):
            stopped = await operator.admin_stop_allocation(
                kit, ctx.principal, allocation_id, input.reason, ctx.meta
            )
    except DomainError as exc:
        return allocation_error(exc)
    ctx.loaders.allocation.prime(allocation_id, stopped, force=True)
    return AllocationPayload(allocation=Allocation.from_domain(stopped))


async def allocation_updated(
    info: Info[AppContext, None],
    id: strawberry.ID,  # noqa: A002
) -> AsyncGenerator[Allocation, None]:
    """One allocation the caller may see, each time it changes, from any API process: first as
    it is now, then after every change of state, until it has ended. Another user's id is
    refused (NOT_FOUND) before anything is streamed."""
    ctx = info.context
    key = expect_global_id(id, "Allocation")
    # Listen first, then read: a change made in between arrives as an event, not lost.
    async with ctx.events.subscribe(ALLOCATIONS_TOPIC) as stream:
        current: Allocation | None = await fetch_node(info, "Allocation", key)
        assert current is not None  # fetch_node refuses what the caller may not see
        yield current
        if current.domain.state in ENDED:
            return
        version = current.domain.version
        async for message in stream:
            if int(message["payload"].get("allocationId", -1)) != key:
                continue
            ctx.loaders.allocation.clear(key)  # read it afresh, not from this request's cache
            fresh: Allocation | None = await fetch_node(info, "Allocation", key)
            if fresh is None or fresh.domain.version <= version:
                continue  # an older event arriving late: what it says was already sent
            version = fresh.domain.version
            yield fresh
            if fresh.domain.state in ENDED:
                return
