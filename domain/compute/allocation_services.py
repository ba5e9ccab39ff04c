"""Allocation use cases a user drives: create (placed at once: GPUs assigned and a hold opened,
or a typed refusal and nothing written), stop, and the reads.

Creating is idempotent under the client's key: a repeat returns the first allocation, the same
key for another request is refused. The engine (domain/compute/engine.py) takes it from PLACED.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from domain.audit.records import RequestMeta
from domain.catalog.sku import Sku, SkuStatus
from domain.compute.accounts import account_name
from domain.compute.allocations import (
    Allocation,
    AllocationErrorCode,
    AllocationState,
    AllocationTrigger,
    StopReason,
    allocation_not_found,
    transition,
)
from domain.compute.changes import store
from domain.compute.engine import holder
from domain.compute.kit import ComputeKit, usage_cost
from domain.compute.records import AllocationFilter, NewAllocation
from domain.compute.settlement import settle
from domain.errors import Conflict, InvalidInput, NotFound, Problem
from domain.fleet.placement import GpuRequest, NoCapacity
from domain.fleet.placement_services import reserve_gpus
from domain.idempotency import Keyed, check_key, once, request_hash
from domain.identity.principal import Principal
from domain.ledger import book
from domain.ledger.accounts import AccountKind
from domain.ledger.errors import InsufficientFunds, LedgerErrorCode
from domain.ledger.transfers import TransferCode
from domain.pagination import Page, PageRequest
from domain.ports import UnitOfWork
from domain.retry import retrying

OPERATION = "create_allocation"
MAX_KEYS = 20


def _problem(code: AllocationErrorCode, message: str, field: str | None = None) -> Problem:
    return Problem(code, message, field)


def _orderable(sku: Sku | None, sku_id: int) -> Sku:
    if sku is None:
        raise NotFound(_problem(AllocationErrorCode.SKU_NOT_FOUND, f"No SKU with id {sku_id}.",
                                "skuId"))  # fmt: skip
    if sku.status is not SkuStatus.ACTIVE:
        raise Conflict(_problem(AllocationErrorCode.SKU_RETIRED,
                                f"SKU {sku.name} is retired; pick another.", "skuId"))  # fmt: skip
    return sku


async def create_allocation(
    kit: ComputeKit, user: Principal, sku_id: int, ssh_key_ids: Sequence[int],
    idempotency_key: str, meta: RequestMeta,
) -> Allocation:  # fmt: skip
    """Place the SKU's GPUs for the user and reserve the first billing window, in one
    transaction; refusals (NO_CAPACITY, INSUFFICIENT_FUNDS, SPEND_LIMIT_REACHED, bad SKU or
    keys) leave nothing behind."""
    assert user.user_id is not None
    user_id = user.user_id
    check_key(idempotency_key)
    key_ids = sorted(set(ssh_key_ids))
    if not key_ids:
        raise InvalidInput(_problem(AllocationErrorCode.NO_SSH_KEYS,
                                    "Give at least one of your SSH keys.", "sshKeyIds"))  # fmt: skip
    if len(key_ids) > MAX_KEYS:
        raise InvalidInput(_problem(AllocationErrorCode.TOO_MANY_SSH_KEYS,
                                    f"At most {MAX_KEYS} SSH keys.", "sshKeyIds"))  # fmt: skip
    digest = request_hash(OPERATION, {"skuId": sku_id, "sshKeyIds": key_ids})
    request = Keyed(user_id, idempotency_key, OPERATION, digest, "allocation")

    async def attempt() -> Allocation:
        uow = kit.uow()
        async with uow:
            made, fresh = await once(uow, request,
                                     lambda: _place(kit, uow, user, sku_id, key_ids, meta),
                                     uow.allocations.get)  # fmt: skip
            if fresh:
                await uow.commit()
            return made

    return await retrying(attempt)


async def _place(kit: ComputeKit, uow: UnitOfWork, user: Principal, sku_id: int,
                 key_ids: list[int], meta: RequestMeta) -> Allocation:  # fmt: skip
    assert user.user_id is not None
    now = kit.clock()
    sku = _orderable(await uow.skus.get(sku_id), sku_id)
    keys = await uow.ssh_keys.get_many(key_ids)
    mine = [keys[k] for k in key_ids if k in keys and keys[k].user_id == user.user_id]
    if len(mine) != len(key_ids):
        raise NotFound(_problem(AllocationErrorCode.SSH_KEY_NOT_FOUND,
                                "One or more of those SSH keys are not yours or do not exist.",
                                "sshKeyIds"))  # fmt: skip
    requested = await uow.allocations.add(
        NewAllocation(user.user_id, sku.id, sku.hourly_price, key_ids, [k.public_key for k in mine])
    )
    placed = await reserve_gpus(uow, GpuRequest(sku.gpu_model, sku.gpu_count, sku.region),
                                holder(requested.id))  # fmt: skip
    if isinstance(placed, NoCapacity):
        raise Conflict(_problem(
            AllocationErrorCode.NO_CAPACITY,
            f"No {sku.gpu_count} x {sku.gpu_model} free in {sku.region} now (the most free on "
            f"one node is {placed.largest_free}); try again later or another SKU.", "skuId"))  # fmt: skip
    window = kit.policy.billing_window
    try:
        hold = await book.open_hold(
            uow.ledger, kit.ledger, user.user_id, AccountKind.COMPUTE_REVENUE,
            usage_cost(requested.hourly_price.amount_minor, window.total_seconds()),
            requested.hourly_price.currency, code=TransferCode.USAGE,
            reference=holder(requested.id), ttl=window + kit.policy.hold_slack, now=now,
        )  # fmt: skip
    except InsufficientFunds as exc:
        raise Conflict(_problem(
            AllocationErrorCode.INSUFFICIENT_FUNDS,
            f"Your balance does not cover the first {window} of {sku.name}; top up first.",
            "skuId")) from exc  # fmt: skip
    except Conflict as exc:  # the ledger's refusal names its own field (amount): name ours
        if exc.problems[0].code != LedgerErrorCode.SPEND_LIMIT_REACHED:
            raise
        raise Conflict(_problem(
            AllocationErrorCode.SPEND_LIMIT_REACHED,
            f"{exc.problems[0].message} Ask support to raise the limit, or wait.",
            "skuId")) from exc  # fmt: skip
    ready = replace(requested, node_id=placed.node_id, gpu_indices=placed.gpu_indices,
                    username=account_name(kit.policy.user_prefix, requested.id),
                    hold_id=hold.id)  # fmt: skip
    after = transition(ready, AllocationTrigger.PLACE, now)
    return await store(uow, None, after, "allocation.created", actor=user, meta=meta, now=now)


async def stop_allocation(
    kit: ComputeKit,
    user: Principal,
    allocation_id: int,
    meta: RequestMeta,
    *,
    reason: str = StopReason.USER,
) -> Allocation:
    """Ask for the allocation to stop: its running time is billed to the second now and the
    rest of the hold released; the engine removes the account and frees the GPUs. Stopping an
    allocation that is stopping or ended returns it as it is."""

    async def attempt() -> Allocation:
        now = kit.clock()
        uow = kit.uow()
        async with uow:
            before = await uow.allocations.get(allocation_id, for_update=True)
            if before is None or before.user_id != user.user_id:
                raise allocation_not_found(allocation_id)
            if before.state in (AllocationState.STOPPING, AllocationState.STOPPED,
                                AllocationState.FAILED):  # fmt: skip
                return before
            await settle(uow, kit, before, now)
            after = replace(transition(before, AllocationTrigger.STOP, now), stop_reason=reason)
            saved = await store(uow, before, after, "allocation.stop_requested", actor=user,
                                meta=meta, now=now)  # fmt: skip
            await uow.commit()
            return saved

    return await retrying(attempt)


async def get_allocation(uow: UnitOfWork, user_id: int, allocation_id: int) -> Allocation | None:
    async with uow:
        found = await uow.allocations.get(allocation_id)
    return found if found is not None and found.user_id == user_id else None


async def list_allocations(uow: UnitOfWork, user_id: int, allocation_filter: AllocationFilter,
                           page: PageRequest) -> Page[Allocation]:  # fmt: skip
    async with uow:
        return await uow.allocations.of_user(user_id, allocation_filter, page)
