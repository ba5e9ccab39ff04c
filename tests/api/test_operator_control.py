"""Operator control over GraphQL against real PostgreSQL: admins list, read and stop anyone's
allocation (with a reason the owner is told, audited); drainNode with a deadline (owners told at
once, work stopped at the deadline, the node DRAINED when empty); retireNode refused on a busy
node unless forced; suspendUser stops the user's work; removeSshKey takes the key off live
allocations. Every refusal is a typed error that leaves everything as it was.

The in-process app runs no worker: the tests run the worker's drain sweep themselves, and stand
in for the engine's teardown by releasing the GPUs as it would.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.compute.draining import sweep
from domain.compute.kit import ComputeKit
from infra.crypto.local_kms import LocalKms
from infra.nodes.factory import make_compute_kit, make_fleet_kit
from infra.payment_settings import ledger_policy
from infra.settings import Settings
from jobs.drain import DrainTicker
from schema.relay import from_global_id, to_global_id
from tests.api.helpers import add_ssh_key, codes
from tests.api.test_allocations import RESULT, STOP, Shop, count, open_shop, rows
from tests.support.fleet import seed_node
from tests.support.identity import Account, Accounts

ADMIN_LIST = """query List($filter: AdminAllocationFilter) { adminAllocations(filter: $filter) {
  edges { node { id state ownerId stopReason } } } }"""
ONE = "query One($id: ID!) { allocation(id: $id) { id state ownerId } }"
ADMIN_STOP = f"""mutation AdminStop($id: ID!, $reason: String!) {{
  adminStopAllocation(input: {{id: $id, reason: $reason}}) {{ {RESULT} }} }}"""
NODE_FIELDS = """id state version drainDeadline retireWhenDrained decommissionLeftovers
  events { edges { node { kind message } } }"""
NODE_RESULT = f"""__typename ... on NodePayload {{ node {{ {NODE_FIELDS} }} }}
  ... on NodeError {{ code message field problems {{ code field }} }}"""
DRAIN = f"""mutation Drain($id: ID!, $deadline: DateTime) {{
  drainNode(id: $id, deadline: $deadline) {{ {NODE_RESULT} }} }}"""
RETIRE = f"""mutation Retire($id: ID!, $force: Boolean) {{
  retireNode(id: $id, force: $force) {{ {NODE_RESULT} }} }}"""
UNCORDON = f"mutation Un($id: ID!) {{ uncordonNode(id: $id) {{ {NODE_RESULT} }} }}"
FLEET_NODE = f"query N($id: ID!) {{ fleetNode(id: $id) {{ {NODE_FIELDS} }} }}"
SUSPEND = """mutation Suspend($id: ID!) { suspendUser(input: {userId: $id, reason: "abuse"}) {
  __typename ... on UserPayload { user { status } } ... on AccountError { code field } } }"""
REMOVE_KEY = """mutation Remove($id: ID!) { removeSshKey(id: $id) { __typename } }"""
NOTICES = """query { notifications(first: 50) { edges { node { type details {
  __typename
  ... on AllocationStoppedByAdminNotice { allocationId adminReason }
  ... on AllocationNodeDrainingNotice { allocationId stopsAt }
  ... on AllocationStateChangedNotice { allocationId stopReason }
  ... on NodeNotice { nodeId nodeState previousNodeState } } } } } }"""


@dataclass
class Placed:
    shop: Shop
    allocation: str  # global id
    key: int  # database id
    node: str  # global id of its node


def compute_kit(settings: Settings, uow: Any) -> ComputeKit:
    fleet = make_fleet_kit(settings.fleet, uow, LocalKms(settings.kms_key_file))
    return make_compute_kit(
        settings.fleet, settings.compute, fleet, ledger_policy(settings.payments)
    )


async def placed(
    accounts: Accounts,
    uow: Any,
    engine: AsyncEngine,
    *,
    running: bool = True,
    gpus: tuple[int, ...] = (2,),
) -> Placed:
    shop = await open_shop(accounts, uow, gpus=gpus)
    made = await shop.create("one")
    allocation = made["allocation"]["id"]
    key = int(from_global_id(allocation)[1])
    if running:  # as the engine leaves it
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE allocations SET state = 'running', running_since = "
                    "now(), billed_until = now(), next_attempt_at = NULL, "
                    "version = version + 2 WHERE id = :id"
                ),
                {"id": key},
            )
    (row,) = await rows(engine, f"SELECT node_id FROM allocations WHERE id = {key}")
    return Placed(shop, allocation, key, to_global_id("FleetNode", row.node_id))


async def snapshot(engine: AsyncEngine) -> str:
    """Everything an operator action could change, to prove a refusal changed nothing."""
    found = []
    for sql in (
        "SELECT id, state, version, stop_reason, next_attempt_at FROM allocations",
        "SELECT id, state, version, drain_deadline, retire_when_drained FROM nodes",
        "SELECT id, status, role FROM users",
        "SELECT count(*) FROM notifications",
        "SELECT count(*) FROM audit_events",
        "SELECT count(*) FROM gpu_assignments WHERE released_at IS NULL",
        "SELECT id, status FROM ledger_holds",
    ):
        found.append([tuple(r) for r in await rows(engine, f"{sql} ORDER BY 1")])
    return json.dumps(found, default=str)


async def notices(account: Account) -> list[dict[str, Any]]:
    result = await account.gql(NOTICES)
    assert "errors" not in result, result
    return [e["node"] for e in result["data"]["notifications"]["edges"]]


async def release_gpus(engine: AsyncEngine) -> None:
    """What the engine's teardown does last: the GPUs are free again."""
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE gpu_assignments SET released_at = now() WHERE released_at IS NULL")
        )


async def test_admins_list_read_and_stop_anyones_allocation_with_a_reason(
    accounts: Accounts, uow: Any, engine: AsyncEngine
) -> None:
    world = await placed(accounts, uow, engine)
    shop, gid = world.shop, world.allocation
    other = await accounts.sign_up()

    listed = await shop.admin.gql(ADMIN_LIST, {"filter": {"userId": shop.user.user_id}})
    assert [e["node"] for e in listed["data"]["adminAllocations"]["edges"]] == [
        {"id": gid, "state": "RUNNING", "ownerId": shop.user.user_id, "stopReason": None}
    ]
    on_node = await shop.admin.gql(
        ADMIN_LIST, {"filter": {"nodeId": world.node, "states": ["RUNNING"]}}
    )
    assert len(on_node["data"]["adminAllocations"]["edges"]) == 1
    nobody = await shop.admin.gql(ADMIN_LIST, {"filter": {"userId": other.user_id}})
    assert nobody["data"]["adminAllocations"]["edges"] == []
    assert (await shop.admin.gql(ONE, {"id": gid}))["data"]["allocation"]["ownerId"] == (
        shop.user.user_id
    )
    # Not for users: the list is refused, another's allocation is NOT_FOUND as a missing one.
    assert codes(await other.gql(ADMIN_LIST, {})) == ["FORBIDDEN"]
    assert codes(await other.gql(ONE, {"id": gid})) == ["NOT_FOUND"]

    before = await snapshot(engine)
    refused = (await other.gql(STOP, {"id": gid}))["data"]["stopAllocation"]
    assert (refused["__typename"], refused["code"]) == ("AllocationError", "NOT_FOUND")
    assert codes(await other.gql(ADMIN_STOP, {"id": gid, "reason": "mine now"})) == ["FORBIDDEN"]
    blank = (await shop.admin.gql(ADMIN_STOP, {"id": gid, "reason": "   "}))["data"]
    assert (blank["adminStopAllocation"]["code"], blank["adminStopAllocation"]["field"]) == (
        "REASON_REQUIRED",
        "reason",
    )
    assert await snapshot(engine) == before, "a refused stop changed something"

    stopped = (await shop.admin.gql(ADMIN_STOP, {"id": gid, "reason": "crypto mining"}))["data"]
    allocation = stopped["adminStopAllocation"]["allocation"]
    assert (allocation["state"], allocation["stopReason"]) == ("STOPPING", "ADMIN")
    (audited,) = await rows(
        engine, "SELECT * FROM audit_events WHERE action = 'admin.allocation.stopped'"
    )
    assert audited.actor_user_id == int(from_global_id(shop.admin.user_id)[1])
    assert audited.after["reason"] == "crypto mining"
    told = await notices(shop.user)
    assert {
        "type": "ALLOCATION_STOPPED_BY_ADMIN",
        "details": {
            "__typename": "AllocationStoppedByAdminNotice",
            "allocationId": gid,
            "adminReason": "crypto mining",
        },
    } in told
    # Again: returned as it is, nobody told twice.
    again = (await shop.admin.gql(ADMIN_STOP, {"id": gid, "reason": "twice"}))["data"]
    assert again["adminStopAllocation"]["allocation"]["state"] == "STOPPING"
    assert (
        len([n for n in await notices(shop.user) if n["type"] == "ALLOCATION_STOPPED_BY_ADMIN"])
        == 1
    )


async def test_drain_with_a_deadline_tells_owners_stops_work_and_ends_drained(
    accounts: Accounts, uow: Any, engine: AsyncEngine, settings: Settings
) -> None:
    world = await placed(accounts, uow, engine)
    admin, user = world.shop.admin, world.shop.user
    kit = compute_kit(settings, uow)

    before = await snapshot(engine)
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    refused = (await admin.gql(DRAIN, {"id": world.node, "deadline": past}))["data"]["drainNode"]
    assert (refused["code"], refused["field"]) == ("INVALID_DEADLINE", "deadline")
    assert await snapshot(engine) == before, "a refused drain changed something"

    deadline = datetime.now(UTC) + timedelta(hours=2)
    drained = await admin.gql(DRAIN, {"id": world.node, "deadline": deadline.isoformat()})
    node = drained["data"]["drainNode"]["node"]
    assert node["state"] == "DRAINING"
    assert datetime.fromisoformat(node["drainDeadline"]) == deadline
    (told,) = [n for n in await notices(user) if n["type"] == "ALLOCATION_NODE_DRAINING"]
    assert told["details"]["allocationId"] == world.allocation
    assert datetime.fromisoformat(told["details"]["stopsAt"]) == deadline

    # Before the deadline the sweep leaves running work alone.
    assert (await sweep(kit)).stopped == 0
    assert await count(engine, "SELECT count(*) FROM allocations WHERE state = 'running'") == 1
    async with engine.begin() as conn:  # the deadline comes
        await conn.execute(text("UPDATE nodes SET drain_deadline = now() - interval '1 second'"))
    swept = await sweep(kit)
    assert (swept.stopped, swept.drained) == (1, 0)  # its GPU is still assigned
    (row,) = await rows(engine, "SELECT state, stop_reason FROM allocations")
    assert (row.state, row.stop_reason) == ("stopping", "drained")
    await release_gpus(engine)
    assert (await sweep(kit)).drained == 1
    node = (await admin.gql(FLEET_NODE, {"id": world.node}))["data"]["fleetNode"]
    assert node["state"] == "DRAINED"
    assert any("drained" in e["node"]["message"] for e in node["events"]["edges"])
    assert any(
        n["type"] == "NODE_STATE_CHANGED" and n["details"]["nodeState"] == "DRAINED"
        for n in await notices(admin)
    )
    # From DRAINED an admin can put it back to work.
    back = (await admin.gql(UNCORDON, {"id": world.node}))["data"]["uncordonNode"]["node"]
    assert (back["state"], back["drainDeadline"]) == ("READY", None)


async def test_a_drained_node_can_be_retired(
    accounts: Accounts, uow: Any, engine: AsyncEngine, settings: Settings
) -> None:
    world = await placed(accounts, uow, engine, running=False)
    await world.shop.user.gql(STOP, {"id": world.allocation})
    await release_gpus(engine)
    await world.shop.admin.gql(DRAIN, {"id": world.node})  # default deadline: an hour
    assert (await sweep(compute_kit(settings, uow))).drained == 1
    retired = (await world.shop.admin.gql(RETIRE, {"id": world.node}))["data"]["retireNode"]
    assert retired["node"]["state"] == "RETIRED"
    # The seeded node has no SSH server: decommissioning says it could not do anything.
    assert len(retired["node"]["decommissionLeftovers"]) == 1
    assert retired["node"]["events"]["edges"][0]["node"]["kind"] == "DECOMMISSIONED"


async def test_retiring_a_busy_node_is_refused_unless_forced(
    accounts: Accounts, uow: Any, engine: AsyncEngine, settings: Settings
) -> None:
    world = await placed(accounts, uow, engine)
    admin = world.shop.admin
    before = await snapshot(engine)
    busy = (await admin.gql(RETIRE, {"id": world.node}))["data"]["retireNode"]
    assert (busy["code"], busy["field"]) == ("NODE_BUSY", "id")
    assert await snapshot(engine) == before, "a refused retire changed something"

    forced = (await admin.gql(RETIRE, {"id": world.node, "force": True}))["data"]["retireNode"]
    assert (forced["node"]["state"], forced["node"]["retireWhenDrained"]) == ("DRAINING", True)
    (row,) = await rows(engine, "SELECT state, stop_reason FROM allocations")
    assert (row.state, row.stop_reason) == ("stopping", "drained")
    (audited,) = await rows(
        engine, "SELECT * FROM audit_events WHERE action = 'allocation.drained'"
    )
    assert audited.actor_user_id == int(from_global_id(admin.user_id)[1])  # the admin did it
    kit = compute_kit(settings, uow)
    assert (await sweep(kit)).retired == 0  # not while its GPU is assigned
    await release_gpus(engine)
    assert (await sweep(kit)).retired == 1
    node = (await admin.gql(FLEET_NODE, {"id": world.node}))["data"]["fleetNode"]
    assert node["state"] == "RETIRED" and node["decommissionLeftovers"] is not None


async def test_suspending_stops_the_users_work_and_refuses_admins(
    accounts: Accounts, uow: Any, engine: AsyncEngine, settings: Settings
) -> None:
    world = await placed(accounts, uow, engine)
    admin, user = world.shop.admin, world.shop.user
    other_admin = await accounts.admin()
    token = await user.token()

    before = await snapshot(engine)
    refused = (await admin.gql(SUSPEND, {"id": other_admin.user_id}))["data"]["suspendUser"]
    assert (refused["code"], refused["field"]) == ("CANNOT_SUSPEND_ADMIN", "userId")
    assert await snapshot(engine) == before, "a refused suspension changed something"

    done = (await admin.gql(SUSPEND, {"id": user.user_id}))["data"]["suspendUser"]
    assert done["user"]["status"] == "SUSPENDED"
    (row,) = await rows(engine, "SELECT state, stop_reason FROM allocations")
    assert (row.state, row.stop_reason) == ("stopping", "suspended")
    # New work is refused: the session and the token no longer sign anyone in.
    bearer = await accounts.bearer(token)
    made = await bearer.post(
        "/graphql",
        json={
            "query": "mutation { createAllocation(input: "
            '{skuId: "x", sshKeyIds: ["y"], idempotencyKey: "k"}) '
            "{ __typename } }"
        },
    )
    assert codes(made.json()) == ["UNAUTHENTICATED"]


async def test_the_sweep_stops_work_a_suspension_left_running(
    accounts: Accounts, uow: Any, engine: AsyncEngine, settings: Settings
) -> None:
    world = await placed(accounts, uow, engine)
    async with engine.begin() as conn:  # suspended by a path that stopped nothing
        await conn.execute(
            text("UPDATE users SET status = 'suspended' WHERE id = :id"),
            {"id": int(from_global_id(world.shop.user.user_id)[1])},
        )
    await DrainTicker(compute_kit(settings, uow), 1.0).tick()  # the worker's tick
    (row,) = await rows(engine, "SELECT state, stop_reason FROM allocations")
    assert (row.state, row.stop_reason) == ("stopping", "suspended")


async def test_removing_a_key_takes_it_off_live_allocations(
    accounts: Accounts, uow: Any, engine: AsyncEngine
) -> None:
    shop = await open_shop(accounts, uow, gpus=(2,))
    second = await add_ssh_key(shop.user, "desktop")
    made = await shop.create("two-keys", ssh_keys=[shop.key["id"], second["id"]])
    key = int(from_global_id(made["allocation"]["id"])[1])
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE allocations SET state = 'running', running_since = now(), "
                "next_attempt_at = NULL, version = version + 2"
            )
        )
    (removed_line,) = await rows(
        engine, f"SELECT public_key FROM ssh_keys WHERE id = {from_global_id(shop.key['id'])[1]}"
    )
    result = await shop.user.gql(REMOVE_KEY, {"id": shop.key["id"]})
    assert result["data"]["removeSshKey"]["__typename"] == "SshKeyPayload", result
    (row,) = await rows(engine, f"SELECT * FROM allocations WHERE id = {key}")
    assert list(row.ssh_key_ids) == [int(from_global_id(second["id"])[1])]
    assert len(row.public_keys) == 1
    assert removed_line.public_key.split()[1] not in row.public_keys[0]
    assert row.state == "running" and row.next_attempt_at is not None  # the engine re-ensures
    (event,) = await rows(engine, "SELECT * FROM allocation_events WHERE kind = 'keys_changed'")
    assert "removed" in event.message


async def test_a_quarantined_node_is_retired_without_being_contacted(
    accounts: Accounts, uow: Any, engine: AsyncEngine
) -> None:
    admin = await accounts.admin()
    node = await seed_node(uow(), "gpu-q", gpus=1)
    async with engine.begin() as conn:  # its host key changed: it may be an impostor
        await conn.execute(
            text(
                "UPDATE nodes SET state = 'quarantined', reason_code = "
                "'HOST_KEY_MISMATCH', reason = 'changed' WHERE id = :id"
            ),
            {"id": node.id},
        )
    gid = to_global_id("FleetNode", node.id)
    retired = (await admin.gql(RETIRE, {"id": gid}))["data"]["retireNode"]["node"]
    assert retired["state"] == "RETIRED"
    (left,) = retired["decommissionLeftovers"]
    assert "quarantined" in left and "not contacted" in left
