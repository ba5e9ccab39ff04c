"""Admins manage the catalog over GraphQL; every change is audited with its actor."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from schema.relay import to_global_id
from tests.support.identity import Accounts

CREATE = """mutation($input: CreateSkuInput!) { createSku(input: $input) {
  __typename
  ... on SkuPayload { sku { id name gpuModel status hourlyPrice { amountMinor currency } } }
  ... on SkuError { code field problems { code field } }
} }"""
RETIRE = """mutation($id: ID!) { retireSku(id: $id) {
  __typename ... on SkuPayload { sku { status retiredAt } } ... on SkuError { code field }
} }"""
GOOD: dict[str, Any] = {"name": "h200x2", "gpuModel": "h200", "gpuCount": 2, "vcpus": 48,
                        "ramGib": 480, "diskGib": 4000, "region": "eu-west",
                        "hourlyPriceMinor": 798, "currency": "USD"}  # fmt: skip


async def test_admin_creates_and_retires_a_sku(accounts: Accounts, engine: AsyncEngine) -> None:
    admin = await accounts.admin()
    made = (await admin.gql(CREATE, {"input": GOOD}))["data"]["createSku"]
    assert made["__typename"] == "SkuPayload"
    assert made["sku"]["gpuModel"] == "H200" and made["sku"]["status"] == "ACTIVE"
    again = (await admin.gql(CREATE, {"input": {**GOOD, "name": "H200X2"}}))["data"]["createSku"]
    assert (again["__typename"], again["code"], again["field"]) == (
        "SkuError",
        "NAME_TAKEN",
        "name",
    )

    retired = (await admin.gql(RETIRE, {"id": made["sku"]["id"]}))["data"]["retireSku"]
    assert retired["sku"]["status"] == "RETIRED" and retired["sku"]["retiredAt"]
    twice = (await admin.gql(RETIRE, {"id": made["sku"]["id"]}))["data"]["retireSku"]
    assert twice["code"] == "ALREADY_RETIRED"
    bad_id = (await admin.gql(RETIRE, {"id": "nonsense"}))["data"]["retireSku"]
    assert (bad_id["code"], bad_id["field"]) == ("INVALID_ID", "id")

    async with engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT action, actor_type, actor_user_id, target_type, before, after "
            "FROM audit_events WHERE action LIKE 'catalog.%' ORDER BY id"))).all()  # fmt: skip
    assert [(r.action, r.actor_type, r.target_type) for r in rows] == [
        ("catalog.sku.added", "user", "sku"), ("catalog.sku.retired", "user", "sku")]  # fmt: skip
    assert rows[0].after["name"] == "h200x2" and rows[1].before == {"status": "active"}


async def test_every_problem_of_a_bad_sku_is_reported_and_nothing_is_written(
    accounts: Accounts, engine: AsyncEngine
) -> None:
    admin = await accounts.admin()
    bad = {**GOOD, "gpuCount": 0, "hourlyPriceMinor": -1, "currency": "XYZ"}
    error = (await admin.gql(CREATE, {"input": bad}))["data"]["createSku"]
    assert error["__typename"] == "SkuError"
    assert {(p["code"], p["field"]) for p in error["problems"]} == {
        ("INVALID_GPU_COUNT", "gpuCount"), ("INVALID_PRICE", "hourlyPriceMinor"),
        ("UNKNOWN_CURRENCY", "currency")}  # fmt: skip
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM skus"))).scalar() == 0


async def test_a_user_cannot_change_the_catalog(accounts: Accounts) -> None:
    user = await accounts.sign_up()
    result = await user.gql(CREATE, {"input": GOOD})
    assert result["data"] is None
    assert result["errors"][0]["extensions"]["code"] == "FORBIDDEN"


UPDATE = """mutation($id: ID!, $input: UpdateSkuInput!) { updateSku(id: $id, input: $input) {
  __typename
  ... on SkuPayload { sku { id name gpuModel gpuCount vcpus ramGib diskGib region status
                            hourlyPrice { amountMinor currency } } }
  ... on SkuError { code field problems { code field } }
} }"""


async def test_admin_updates_a_sku_and_the_change_is_audited_and_announced(
    accounts: Accounts, engine: AsyncEngine
) -> None:
    admin = await accounts.admin()
    made = (await admin.gql(CREATE, {"input": GOOD}))["data"]["createSku"]["sku"]
    changes = {"name": "h200x2-fast", "hourlyPriceMinor": 899, "vcpus": 64, "ramGib": 512,
               "diskGib": 8000}  # fmt: skip
    updated = (await admin.gql(UPDATE, {"id": made["id"], "input": changes}))["data"]["updateSku"]
    assert updated["__typename"] == "SkuPayload", updated
    assert updated["sku"] == {
        "id": made["id"], "name": "h200x2-fast", "gpuModel": "H200", "gpuCount": 2, "vcpus": 64,
        "ramGib": 512, "diskGib": 8000, "region": "eu-west", "status": "ACTIVE",
        "hourlyPrice": {"amountMinor": 899, "currency": "USD"}}  # fmt: skip

    # Only what is given changes; a value equal to the current one is no change.
    partial = {"hourlyPriceMinor": 999, "vcpus": 64}
    again = (await admin.gql(UPDATE, {"id": made["id"], "input": partial}))["data"]["updateSku"]
    assert again["sku"]["hourlyPrice"]["amountMinor"] == 999 and again["sku"]["ramGib"] == 512
    same = (await admin.gql(UPDATE, {"id": made["id"], "input": {"vcpus": 64}}))["data"]
    assert same["updateSku"]["sku"]["vcpus"] == 64

    async with engine.connect() as conn:
        audited = (await conn.execute(text(
            "SELECT action, actor_type, target_id, before, after FROM audit_events "
            "WHERE action = 'catalog.sku.updated' ORDER BY id"))).all()  # fmt: skip
        events = (await conn.execute(text(
            "SELECT name, payload FROM outbox WHERE topic = 'catalog' ORDER BY id"))).all()  # fmt: skip
    assert [(r.action, r.actor_type) for r in audited] == [("catalog.sku.updated", "user")] * 2
    assert audited[0].before == {"name": "h200x2", "hourlyPriceMinor": 798, "vcpus": 48,
                                 "ramGib": 480, "diskGib": 4000}  # fmt: skip
    assert audited[0].after == changes
    assert (audited[1].before, audited[1].after) == ({"hourlyPriceMinor": 899},
                                                     {"hourlyPriceMinor": 999})  # fmt: skip
    assert [e.name for e in events] == ["sku.added", "sku.updated", "sku.updated"]
    assert events[1].payload["kind"] == "updated"


async def test_a_bad_update_reports_every_problem_and_changes_nothing(
    accounts: Accounts, engine: AsyncEngine
) -> None:
    admin = await accounts.admin()
    made = (await admin.gql(CREATE, {"input": GOOD}))["data"]["createSku"]["sku"]
    other = (await admin.gql(CREATE, {"input": {**GOOD, "name": "other"}}))["data"]["createSku"]
    bad = {"name": "no spaces allowed", "hourlyPriceMinor": 0, "vcpus": 0, "ramGib": -1,
           "diskGib": 0}  # fmt: skip
    error = (await admin.gql(UPDATE, {"id": made["id"], "input": bad}))["data"]["updateSku"]
    assert {(p["code"], p["field"]) for p in error["problems"]} == {
        ("INVALID_NAME", "name"), ("INVALID_PRICE", "hourlyPriceMinor"),
        ("INVALID_VCPUS", "vcpus"), ("INVALID_RAM", "ramGib"), ("INVALID_DISK", "diskGib")}  # fmt: skip
    taken = (await admin.gql(UPDATE, {"id": made["id"], "input": {"name": "OTHER"}}))["data"]
    assert (taken["updateSku"]["code"], taken["updateSku"]["field"]) == ("NAME_TAKEN", "name")

    retired = (await admin.gql(RETIRE, {"id": other["sku"]["id"]}))["data"]["retireSku"]
    assert retired["sku"]["status"] == "RETIRED"
    late = await admin.gql(UPDATE, {"id": other["sku"]["id"], "input": {"hourlyPriceMinor": 1}})
    assert (late["data"]["updateSku"]["code"], late["data"]["updateSku"]["field"]) == (
        "ALREADY_RETIRED",
        "id",
    )

    for sku_id, code in ((to_global_id("Sku", 10**9), "NOT_FOUND"), ("nonsense", "INVALID_ID")):
        missing = await admin.gql(UPDATE, {"id": sku_id, "input": {"vcpus": 2}})
        assert missing["data"]["updateSku"]["code"] == code

    async with engine.connect() as conn:
        names = (await conn.execute(text("SELECT name, hourly_price_minor FROM skus "
                                         "ORDER BY id"))).all()  # fmt: skip
        audited = (await conn.execute(text("SELECT count(*) FROM audit_events "
                                           "WHERE action = 'catalog.sku.updated'"))).scalar()  # fmt: skip
    assert [tuple(r) for r in names] == [("h200x2", 798), ("other", 798)]
    assert audited == 0


async def test_a_user_cannot_update_a_sku(accounts: Accounts) -> None:
    admin = await accounts.admin()
    made = (await admin.gql(CREATE, {"input": GOOD}))["data"]["createSku"]["sku"]
    user = await accounts.sign_up()
    result = await user.gql(UPDATE, {"id": made["id"], "input": {"hourlyPriceMinor": 1}})
    assert result["data"] is None
    assert result["errors"][0]["extensions"]["code"] == "FORBIDDEN"
