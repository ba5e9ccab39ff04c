"""Admins manage the catalog over GraphQL; every change is audited with its actor."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

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
