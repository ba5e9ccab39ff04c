"""Allocations over GraphQL: create (placed at once, the first billing window held), idempotent
under the client's key, refused with a typed code and field and nothing left behind, exactly
as many as there are free GPUs under a burst of concurrent requests; stop (the hold released);
read one or a page, newest first; other users' allocations invisible.

The in-process app does not run the engine, so allocations stay PLACED here; where a test needs
a RUNNING one it moves the row as the engine would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.catalog import services as catalog
from domain.fleet.nodes import Node
from infra.settings import Settings, load_settings
from schema.relay import from_global_id, to_global_id
from tests.api.helpers import add_ssh_key, codes, gql, grant_credit
from tests.api.test_sql_statements import counting
from tests.support.billing import minor
from tests.support.catalog import make_spec
from tests.support.fleet import seed_node
from tests.support.identity import Account, Accounts

FIELDS = """id state version gpuCount gpuIndices connection { host port username }
  failure { code message } stopReason createdAt runningSince endedAt
  sku { id name available } sshKeys { id fingerprint }"""
RESULT = f"""__typename ... on AllocationPayload {{ allocation {{ {FIELDS} }} }}
  ... on AllocationError {{ code message field problems {{ code message field }} }}"""
CREATE = f"""mutation Create($input: CreateAllocationInput!) {{
  createAllocation(input: $input) {{ {RESULT} }} }}"""
STOP = f"mutation Stop($id: ID!) {{ stopAllocation(id: $id) {{ {RESULT} }} }}"
ONE = f"query One($id: ID!) {{ allocation(id: $id) {{ {FIELDS} }} }}"
NODE = "query Node($id: ID!) { node(id: $id) { __typename id ... on Allocation { state } } }"
LIST = f"""query List($first: Int, $after: String, $states: [AllocationState!]) {{
  allocations(first: $first, after: $after, filter: {{states: $states}}) {{
    edges {{ node {{ {FIELDS} }} }} pageInfo {{ hasNextPage endCursor }} }} }}"""
WALLET = """query { viewer { wallet { balance { amountMinor } available { amountMinor }
  held { amountMinor } } } }"""
# `viewer` makes the query private, so the result cache (public queries only) never answers it.
SKU = "query Sku($id: ID!) { viewer { id } sku(id: $id) { available } }"
# Not the default hour: a window whose cost is not a whole number of minor units, so the test
# sees it rounded up.
BILLING_WINDOW_SECONDS = 1000.0
PRICE = 250  # per hour: the first window costs ceil(250 * 1000 / 3600) = 70
CREDIT = 50_000


@pytest.fixture
def settings(service_env: dict[str, str]) -> Settings:
    found = load_settings(service_env)
    compute = dataclasses.replace(found.compute, billing_window_seconds=BILLING_WINDOW_SECONDS)
    return dataclasses.replace(found, compute=compute)


def window_cost(settings: Settings, price: int = PRICE) -> int:
    return math.ceil(price * settings.compute.billing_window_seconds / 3600)


@dataclass
class Shop:
    """A funded user with an SSH key, an admin, ready H200 nodes and a 1-GPU SKU."""

    user: Account
    admin: Account
    key: dict[str, str]
    sku: str
    nodes: list[Node]

    async def create(self, key: str, *, who: Account | None = None, sku: str | None = None,
                     ssh_keys: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
        variables = {"input": {"skuId": sku or self.sku, "idempotencyKey": key,
                               "sshKeyIds": [self.key["id"]] if ssh_keys is None else ssh_keys}}  # fmt: skip
        result = await (who or self.user).gql(CREATE, variables)
        assert "errors" not in result, result
        return result["data"]["createAllocation"]  # type: ignore[no-any-return]


async def sku_gid(uow: Any, name: str, *, gpu_count: int = 1, price: int = PRICE) -> str:
    made = await catalog.add_sku(uow(), make_spec(name, gpu_model="H200", gpu_count=gpu_count,
                                                  region="eu-west", hourly_price_minor=price))  # fmt: skip
    return to_global_id("Sku", made.id)


async def open_shop(accounts: Accounts, uow: Any, *, gpus: tuple[int, ...] = (4, 4, 2),
                    credit: int = CREDIT) -> Shop:  # fmt: skip
    user, admin = await accounts.sign_up(), await accounts.admin()
    if credit:
        await grant_credit(admin, user.user_id, credit)
    nodes = [await seed_node(uow(), f"gpu-{i}", gpus=count) for i, count in enumerate(gpus)]
    return Shop(user, admin, await add_ssh_key(user), await sku_gid(uow, "h200x1"), nodes)


async def wallet(account: Account) -> dict[str, int]:
    result = await account.gql(WALLET)
    return minor(result["data"]["viewer"]["wallet"])  # type: ignore[no-any-return]


async def available(account: Account, sku: str) -> int:
    return int((await account.gql(SKU, {"id": sku}))["data"]["sku"]["available"])


async def count(engine: AsyncEngine, sql: str) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text(sql))).scalar_one())


async def rows(engine: AsyncEngine, sql: str) -> list[Any]:
    async with engine.connect() as conn:
        return list(await conn.execute(text(sql)))


async def nothing_kept(engine: AsyncEngine) -> None:
    """A refused request left no allocation, GPU assignment, hold or idempotency record."""
    for table in ("allocations", "gpu_assignments", "ledger_holds",
                  "idempotency_keys WHERE operation = 'create_allocation'"):  # fmt: skip
        assert await count(engine, f"SELECT count(*) FROM {table}") == 0, table


async def test_create_places_the_gpus_and_holds_the_first_window(
    accounts: Accounts, uow: Any, engine: AsyncEngine, settings: Settings
) -> None:
    shop = await open_shop(accounts, uow)
    assert await available(shop.user, shop.sku) == 10
    made = await shop.create("first")
    assert made["__typename"] == "AllocationPayload", made
    allocation = made["allocation"]
    assert allocation["state"] == "PLACED"
    assert (allocation["gpuCount"], len(allocation["gpuIndices"])) == (1, 1)
    assert allocation["connection"] is None and allocation["failure"] is None
    assert allocation["stopReason"] is None and allocation["runningSince"] is None
    assert allocation["endedAt"] is None
    assert allocation["sku"] == {"id": shop.sku, "name": "h200x1", "available": 9}
    assert allocation["sshKeys"] == [shop.key]

    cost = window_cost(settings)
    assert cost == 70
    assert await wallet(shop.user) == {"balance": CREDIT, "available": CREDIT - cost,
                                       "held": cost}  # fmt: skip
    assert await available(shop.user, shop.sku) == 9

    # What is stored agrees, and the response names no hold and no node.
    (row,) = await rows(engine, "SELECT * FROM allocations")
    assert to_global_id("Allocation", row.id) == allocation["id"]
    assert list(row.gpu_indices) == allocation["gpuIndices"]
    assert row.username == f"{settings.compute.user_prefix}{row.id}"
    node = next(n for n in shop.nodes if n.id == row.node_id)
    shown = json.dumps(made)
    for secret in ("hold", node.name, node.host):
        assert secret not in shown, secret
    (hold,) = await rows(engine, "SELECT * FROM ledger_holds")
    assert (hold.id, hold.amount, hold.status) == (row.hold_id, cost, "open")
    audited = await rows(engine, "SELECT action FROM audit_events WHERE target_type = "
                                 "'allocation'")  # fmt: skip
    assert [r.action for r in audited] == ["allocation.created"]
    (event,) = await rows(engine, "SELECT * FROM outbox WHERE topic = 'allocations'")
    assert event.name == "allocation.state_changed"

    assert await shop.user.gql(ONE, {"id": allocation["id"]}) == {
        "data": {"allocation": allocation}
    }
    listed = await shop.user.gql(LIST, {})
    assert [e["node"]["id"] for e in listed["data"]["allocations"]["edges"]] == [allocation["id"]]

    # A SKU of four GPUs gets four of one node.
    four = await shop.create("four", sku=await sku_gid(uow, "h200x4", gpu_count=4))
    assert four["allocation"]["gpuCount"] == 4
    assert sorted(four["allocation"]["gpuIndices"]) == [0, 1, 2, 3]
    assert (await wallet(shop.user))["held"] == 2 * cost  # the same hourly price


async def test_a_running_allocation_shows_where_to_log_in(
    accounts: Accounts, uow: Any, engine: AsyncEngine, settings: Settings
) -> None:
    shop = await open_shop(accounts, uow, gpus=(1,))
    allocation = (await shop.create("run"))["allocation"]
    _, key = from_global_id(allocation["id"])
    async with engine.begin() as conn:  # as the engine leaves it once provisioned
        await conn.execute(text("UPDATE allocations SET state = 'running', "
                                "running_since = now(), version = version + 2 WHERE id = :id"),
                           {"id": key})  # fmt: skip
    read = (await shop.user.gql(ONE, {"id": allocation["id"]}))["data"]["allocation"]
    node = shop.nodes[0]
    assert read["state"] == "RUNNING" and read["runningSince"] is not None
    assert read["connection"] == {"host": node.host, "port": node.port,
                                  "username": f"{settings.compute.user_prefix}{key}"}  # fmt: skip

    stopped = (await shop.user.gql(STOP, {"id": allocation["id"]}))["data"]["stopAllocation"]
    assert stopped["allocation"]["state"] == "STOPPING"
    assert stopped["allocation"]["connection"] is None


async def test_one_idempotency_key_makes_one_allocation(
    accounts: Accounts, uow: Any, engine: AsyncEngine, settings: Settings
) -> None:
    shop = await open_shop(accounts, uow)
    first = await shop.create("same-key")
    again = await shop.create("same-key")
    assert first["__typename"] == again["__typename"] == "AllocationPayload"
    assert again["allocation"]["id"] == first["allocation"]["id"]
    assert again["allocation"]["gpuIndices"] == first["allocation"]["gpuIndices"]
    assert await count(engine, "SELECT count(*) FROM allocations") == 1
    assert (await wallet(shop.user))["held"] == window_cost(settings)

    other_sku = await sku_gid(uow, "h200x1-b")
    reused = await shop.create("same-key", sku=other_sku)
    assert reused["__typename"] == "AllocationError"
    assert (reused["code"], reused["field"]) == ("IDEMPOTENCY_KEY_REUSED", "idempotencyKey")
    for bad in ("", " padded", "x" * 256):
        refused = await shop.create(bad)
        assert (refused["code"], refused["field"]) == ("INVALID_IDEMPOTENCY_KEY",
                                                       "idempotencyKey"), refused  # fmt: skip
    assert await count(engine, "SELECT count(*) FROM allocations") == 1


async def test_concurrent_requests_get_exactly_the_free_gpus(
    accounts: Accounts, uow: Any, engine: AsyncEngine, settings: Settings
) -> None:
    shop = await open_shop(accounts, uow, gpus=(4, 4, 2))
    results = await asyncio.gather(*(shop.create(f"burst-{i}") for i in range(50)))
    placed = [r["allocation"] for r in results if r["__typename"] == "AllocationPayload"]
    refused = [r for r in results if r["__typename"] == "AllocationError"]
    assert (len(placed), len(refused)) == (10, 40)
    assert {(r["code"], r["field"]) for r in refused} == {("NO_CAPACITY", "skuId")}
    assert all(a["state"] == "PLACED" and a["gpuCount"] == 1 for a in placed)

    gpus = await rows(engine, "SELECT node_id, gpu_indices FROM allocations")
    assert len({(r.node_id, r.gpu_indices[0]) for r in gpus}) == 10  # no GPU twice
    assert await count(engine, "SELECT count(*) FROM ledger_holds WHERE status = 'open'") == 10
    assert await count(engine, "SELECT count(*) FROM allocations") == 10
    cost = window_cost(settings)
    assert await wallet(shop.user) == {"balance": CREDIT, "available": CREDIT - 10 * cost,
                                       "held": 10 * cost}  # fmt: skip
    assert await available(shop.user, shop.sku) == 0


async def test_a_refused_payment_leaves_nothing_behind(
    accounts: Accounts, uow: Any, engine: AsyncEngine, settings: Settings
) -> None:
    shop = await open_shop(accounts, uow, credit=window_cost(settings) - 1)
    before = await wallet(shop.user)
    refused = await shop.create("poor")
    assert refused["__typename"] == "AllocationError"
    assert (refused["code"], refused["field"]) == ("INSUFFICIENT_FUNDS", "skuId")
    await nothing_kept(engine)
    assert await wallet(shop.user) == before
    assert await available(shop.user, shop.sku) == 10

    # Enough money, but past the hourly spend limit an administrator set.
    await grant_credit(shop.admin, shop.user.user_id, CREDIT)
    limit = """mutation($user: ID!) { setSpendLimit(input: {userId: $user, currency: "USD",
      limit: 10}) { __typename } }"""
    assert "errors" not in await shop.admin.gql(limit, {"user": shop.user.user_id})
    limited = await shop.create("limited")
    assert (limited["code"], limited["field"]) == ("SPEND_LIMIT_REACHED", "skuId"), limited
    await nothing_kept(engine)
    assert await available(shop.user, shop.sku) == 10


async def test_every_refusal_has_its_code_and_field(
    accounts: Accounts, uow: Any, engine: AsyncEngine
) -> None:
    shop = await open_shop(accounts, uow)
    stranger = await accounts.sign_up()
    strangers_key = await add_ssh_key(stranger)
    retired = await sku_gid(uow, "h200x1-old")
    await catalog.retire_sku(uow(), from_global_id(retired)[1])
    key = shop.key["id"]
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"sku": to_global_id("Sku", 10**12)}, "SKU_NOT_FOUND", "skuId"),
        ({"sku": retired}, "SKU_RETIRED", "skuId"),
        ({"sku": key}, "INVALID_ID", "skuId"),
        ({"sku": "junk"}, "INVALID_ID", "skuId"),
        ({"ssh_keys": []}, "NO_SSH_KEYS", "sshKeyIds"),
        ({"ssh_keys": [strangers_key["id"]]}, "SSH_KEY_NOT_FOUND", "sshKeyIds"),
        ({"ssh_keys": [key, strangers_key["id"]]}, "SSH_KEY_NOT_FOUND", "sshKeyIds"),
        ({"ssh_keys": [to_global_id("SshKey", 10**12)]}, "SSH_KEY_NOT_FOUND", "sshKeyIds"),
        ({"ssh_keys": [shop.sku]}, "INVALID_ID", "sshKeyIds"),
        (
            {"ssh_keys": [to_global_id("SshKey", i) for i in range(1, 22)]},
            "TOO_MANY_SSH_KEYS",
            "sshKeyIds",
        ),
    ]
    for i, (changes, code, field) in enumerate(cases):
        refused = await shop.create(f"bad-{i}", **changes)
        assert refused["__typename"] == "AllocationError", (code, refused)
        assert (refused["code"], refused["field"]) == (code, field), (changes, refused)
        assert refused["problems"][0]["code"] == code
    both = await shop.create("bad-ids", sku="junk", ssh_keys=["junk", "junk too"])
    assert [(p["code"], p["field"]) for p in both["problems"]] == [
        ("INVALID_ID", "skuId"), ("INVALID_ID", "sshKeyIds")]  # fmt: skip
    # The stranger's key is not theirs to use, whoever's SKU: they may not use ours either.
    theirs = await shop.create("stranger", who=stranger, ssh_keys=[key])
    assert (theirs["code"], theirs["field"]) == ("SSH_KEY_NOT_FOUND", "sshKeyIds")
    await nothing_kept(engine)

    for bad_id, code in (("junk", "INVALID_ID"), (shop.sku, "INVALID_ID"),
                         (to_global_id("Allocation", 10**12), "NOT_FOUND")):  # fmt: skip
        stopped = (await shop.user.gql(STOP, {"id": bad_id}))["data"]["stopAllocation"]
        assert (stopped["code"], stopped["field"]) == (code, "id"), stopped
    assert codes(await shop.user.gql(ONE, {"id": "junk"})) == ["INVALID_ID"]


async def test_stop_releases_the_hold_and_repeats_harmlessly(
    accounts: Accounts, uow: Any, engine: AsyncEngine
) -> None:
    shop = await open_shop(accounts, uow)
    allocation = (await shop.create("to-stop"))["allocation"]
    stopped = (await shop.user.gql(STOP, {"id": allocation["id"]}))["data"]["stopAllocation"]
    assert stopped["__typename"] == "AllocationPayload", stopped
    after = stopped["allocation"]
    assert (after["id"], after["state"], after["stopReason"]) == (
        allocation["id"],
        "STOPPING",
        "USER",
    )
    assert after["version"] > allocation["version"]
    # It never ran: nothing is charged, the whole hold is released.
    assert await wallet(shop.user) == {"balance": CREDIT, "available": CREDIT, "held": 0}
    (hold,) = await rows(engine, "SELECT status, captured FROM ledger_holds")
    assert (hold.status, hold.captured) == ("voided", 0)

    again = (await shop.user.gql(STOP, {"id": allocation["id"]}))["data"]["stopAllocation"]
    assert again == stopped
    read = (await shop.user.gql(ONE, {"id": allocation["id"]}))["data"]["allocation"]
    assert (read["state"], read["version"]) == ("STOPPING", after["version"])
    actions = await rows(engine, "SELECT action FROM audit_events WHERE target_type = "
                                 "'allocation' ORDER BY id")  # fmt: skip
    assert [r.action for r in actions] == ["allocation.created", "allocation.stop_requested"]


async def test_another_users_allocations_are_invisible(accounts: Accounts, uow: Any) -> None:
    shop = await open_shop(accounts, uow)
    allocation = (await shop.create("mine"))["allocation"]
    stranger = await accounts.sign_up()

    one = await stranger.gql(ONE, {"id": allocation["id"]})
    assert one["data"] == {"allocation": None} and codes(one) == ["NOT_FOUND"]
    missing = await stranger.gql(ONE, {"id": to_global_id("Allocation", 10**12)})
    assert [e["message"] for e in missing["errors"]] == [e["message"] for e in one["errors"]]
    node = await stranger.gql(NODE, {"id": allocation["id"]})
    assert node["data"] == {"node": None} and codes(node) == ["NOT_FOUND"]
    assert (await stranger.gql(LIST, {}))["data"]["allocations"]["edges"] == []
    refused = (await stranger.gql(STOP, {"id": allocation["id"]}))["data"]["stopAllocation"]
    unknown_id = to_global_id("Allocation", 10**12)
    unknown = await stranger.gql(STOP, {"id": unknown_id})
    assert (refused["code"], refused["field"]) == ("NOT_FOUND", "id")
    # The same answer as for an allocation that does not exist, quoting the ID the client sent.
    assert [r["message"] for r in (refused, unknown["data"]["stopAllocation"])] == [
        f"No allocation with id {allocation['id']}.",
        f"No allocation with id {unknown_id}.",
    ]
    assert "PLACED" not in json.dumps([one, node, refused])  # nothing of it beyond the ID sent

    mine = (await shop.user.gql(ONE, {"id": allocation["id"]}))["data"]["allocation"]
    assert (mine["state"], mine["version"]) == ("PLACED", allocation["version"])
    assert (await shop.user.gql(NODE, {"id": allocation["id"]}))["data"]["node"] == {
        "__typename": "Allocation", "id": allocation["id"], "state": "PLACED"}  # fmt: skip

    anonymous = await accounts.client()
    create = {"input": {"skuId": shop.sku, "sshKeyIds": [shop.key["id"]], "idempotencyKey": "a"}}
    for query, variables in ((CREATE, create), (STOP, {"id": allocation["id"]}),
                             (ONE, {"id": allocation["id"]}), (LIST, {})):  # fmt: skip
        result = await gql(anonymous, query, variables)
        assert codes(result) == ["UNAUTHENTICATED"], result
        assert not any((result["data"] or {}).values()), result


async def test_token_scopes(accounts: Accounts, uow: Any, engine: AsyncEngine) -> None:
    shop = await open_shop(accounts, uow)
    reader = await accounts.bearer(await shop.user.token(["COMPUTE_READ"]))
    writer = await accounts.bearer(await shop.user.token(["COMPUTE_WRITE"]))
    billing = await accounts.bearer(await shop.user.token(["BILLING_READ", "BILLING_WRITE"]))
    create = {"input": {"skuId": shop.sku, "sshKeyIds": [shop.key["id"]],
                        "idempotencyKey": "token"}}  # fmt: skip

    assert codes(await gql(reader, CREATE, create)) == ["MISSING_SCOPE"]
    assert codes(await gql(billing, LIST)) == ["MISSING_SCOPE"]
    made = (await gql(writer, CREATE, create))["data"]["createAllocation"]
    assert made["__typename"] == "AllocationPayload", made
    assert codes(await gql(writer, LIST)) == ["MISSING_SCOPE"]
    listed = (await gql(reader, LIST))["data"]["allocations"]["edges"]
    assert [e["node"]["id"] for e in listed] == [made["allocation"]["id"]]
    stop = {"id": made["allocation"]["id"]}
    assert codes(await gql(reader, STOP, stop)) == ["MISSING_SCOPE"]
    assert (await gql(writer, STOP, stop))["data"]["stopAllocation"]["allocation"]["state"] == (
        "STOPPING")  # fmt: skip
    (row,) = await rows(engine, "SELECT actor_token_id FROM audit_events "
                                "WHERE action = 'allocation.created'")  # fmt: skip
    assert row.actor_token_id is not None


async def test_pages_are_newest_first_filtered_and_cost_the_same_queries(
    app: Any, accounts: Accounts, uow: Any, engine: AsyncEngine
) -> None:
    shop = await open_shop(accounts, uow, gpus=(4, 4))
    made = [(await shop.create(f"page-{i}"))["allocation"]["id"] for i in range(6)]
    newest_first = list(reversed(made))
    # Some running (as the engine would leave them) and one stopped, so every field reads
    # something: the SKU, the node for the login, the keys.
    running_ids = [from_global_id(made[i])[1] for i in (1, 3, 5)]
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE allocations SET state = 'running', running_since = now() "
                                "WHERE id = ANY(:ids)"), {"ids": running_ids})  # fmt: skip
    await shop.user.gql(STOP, {"id": made[0]})

    first = (await shop.user.gql(LIST, {"first": 4}))["data"]["allocations"]
    assert [e["node"]["id"] for e in first["edges"]] == newest_first[:4]
    assert first["pageInfo"]["hasNextPage"]
    rest = await shop.user.gql(LIST, {"first": 4, "after": first["pageInfo"]["endCursor"]})
    assert [e["node"]["id"] for e in rest["data"]["allocations"]["edges"]] == newest_first[4:]
    running = (await shop.user.gql(LIST, {"states": ["RUNNING"]}))["data"]["allocations"]
    assert [e["node"]["id"] for e in running["edges"]] == [made[5], made[3], made[1]]
    assert all(e["node"]["connection"] for e in running["edges"])
    stopping = await shop.user.gql(LIST, {"states": ["STOPPING", "STOPPED"]})
    assert [e["node"]["id"] for e in stopping["data"]["allocations"]["edges"]] == [made[0]]

    counts = {}
    for size in (1, 3, 6):
        with counting(app) as statements:
            result = await shop.user.gql(LIST, {"first": size})
        assert len(result["data"]["allocations"]["edges"]) == size
        counts[size] = len(statements)
    assert counts[1] == counts[3] == counts[6], counts


async def test_writes_without_a_compute_kit_are_unavailable_and_reads_work(
    settings: Settings, engine: AsyncEngine
) -> None:
    from gpucloud.app import create_app

    app = create_app(dataclasses.replace(settings, kms_key_file=""))
    async with LifespanManager(app), AsyncExitStack() as stack:
        user = await Accounts(app, stack).sign_up()
        variables = {"input": {"skuId": to_global_id("Sku", 1), "sshKeyIds": [],
                               "idempotencyKey": "k"}}  # fmt: skip
        for query, args in ((CREATE, variables), (STOP, {"id": to_global_id("Allocation", 1)})):
            result = await user.gql(query, args)
            assert codes(result) == ["SERVICE_UNAVAILABLE"], result
            assert result["errors"][0]["extensions"]["requestId"]
        listed = await user.gql(LIST, {})
        assert listed["data"]["allocations"] == {"edges": [], "pageInfo": {
            "hasNextPage": False, "endCursor": None}}  # fmt: skip


PRICES = """query One($id: ID!) { allocation(id: $id) {
  hourlyPrice { amountMinor currency amount } sku { hourlyPrice { amountMinor } } } }"""
UPDATE_SKU = """mutation($id: ID!, $input: UpdateSkuInput!) { updateSku(id: $id, input: $input) {
  __typename } }"""


async def test_each_allocation_shows_the_price_accepted_and_a_sku_change_applies_to_new_ones(
    accounts: Accounts, uow: Any, settings: Settings
) -> None:
    shop = await open_shop(accounts, uow)
    before = (await shop.create("before"))["allocation"]
    raised = {"id": shop.sku, "input": {"hourlyPriceMinor": PRICE * 4}}
    changed = await shop.admin.gql(UPDATE_SKU, raised)
    assert changed["data"]["updateSku"]["__typename"] == "SkuPayload", changed
    after = (await shop.create("after"))["allocation"]
    old = (await shop.user.gql(PRICES, {"id": before["id"]}))["data"]["allocation"]
    new = (await shop.user.gql(PRICES, {"id": after["id"]}))["data"]["allocation"]
    assert old["hourlyPrice"] == {"amountMinor": PRICE, "currency": "USD", "amount": "2.50"}
    assert new["hourlyPrice"]["amountMinor"] == PRICE * 4
    assert old["sku"]["hourlyPrice"]["amountMinor"] == PRICE * 4  # the SKU as it is now
    # Each first window held at its own price.
    assert (await wallet(shop.user))["held"] == window_cost(settings) + window_cost(
        settings, PRICE * 4
    )
