"""Error messages and statements speak the API's language: a message that names an object quotes
the global ID the client sent (never our database key), a state by its enum value, money as Money
does; a usage line names its allocation by global ID."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from domain.ledger import book
from domain.ledger.holds import Capture
from schema.relay import from_global_id, to_global_id
from tests.api.test_allocations import open_shop
from tests.support.billing import paid_top_up, refund, top_up
from tests.support.identity import Accounts

SKU_ERROR = "... on SkuError { code message field }"
RETIRE = f"mutation($id: ID!) {{ retireSku(id: $id) {{ __typename {SKU_ERROR} }} }}"
UPDATE = f"""mutation($id: ID!) {{ updateSku(id: $id, input: {{vcpus: 4}}) {{ __typename
  {SKU_ERROR} }} }}"""
NODE_ERROR = "... on NodeError { code message field }"
CORDON = f"mutation($id: ID!) {{ cordonNode(id: $id) {{ __typename {NODE_ERROR} }} }}"
RETIRE_NODE = f"mutation($id: ID!) {{ retireNode(id: $id) {{ __typename {NODE_ERROR} }} }}"


async def test_not_found_quotes_the_global_id_sent(accounts: Accounts, uow: Any) -> None:
    shop = await open_shop(accounts, uow)
    missing_sku = to_global_id("Sku", 99)
    for query in (RETIRE, UPDATE):
        answer = (await shop.admin.gql(query, {"id": missing_sku}))["data"]
        refused = next(iter(answer.values()))
        assert refused == {
            "__typename": "SkuError",
            "code": "NOT_FOUND",
            "message": f"No SKU with id {missing_sku}.",
            "field": "id",
        }

    made = await shop.create("missing-sku", sku=missing_sku)
    assert (made["code"], made["field"]) == ("SKU_NOT_FOUND", "skuId")
    assert made["message"] == f"No SKU with id {missing_sku}."
    assert made["problems"] == [
        {"code": "SKU_NOT_FOUND", "message": made["message"], "field": "skuId"}
    ]

    missing_node = to_global_id("FleetNode", 10**12)
    cordoned = (await shop.admin.gql(CORDON, {"id": missing_node}))["data"]["cordonNode"]
    assert cordoned == {
        "__typename": "NodeError",
        "code": "NOT_FOUND",
        "message": f"No node with id {missing_node}.",
        "field": "id",
    }


async def test_a_refused_transition_names_the_state_by_its_enum_value(
    accounts: Accounts, uow: Any
) -> None:
    shop = await open_shop(accounts, uow)
    node_gid = to_global_id("FleetNode", shop.nodes[0].id)
    assert (await shop.admin.gql(RETIRE_NODE, {"id": node_gid}))["data"]["retireNode"][
        "__typename"
    ] == "NodePayload"
    again = (await shop.admin.gql(CORDON, {"id": node_gid}))["data"]["cordonNode"]
    assert again["code"] == "TRANSITION_NOT_ALLOWED"
    assert "is RETIRED; it cannot cordon" in again["message"], again
    assert "retired;" not in again["message"]


async def test_payment_refusals_quote_the_payment_id_its_status_and_money(
    accounts: Accounts, uow: Any, localstripe: Any
) -> None:
    user, admin = await accounts.sign_up(), await accounts.admin()
    unpaid = (await top_up(user, 2500))["payment"]["id"]
    refused = await refund(admin, unpaid, 100)
    assert (refused["code"], refused["field"]) == ("NOT_REFUNDABLE", "paymentId")
    assert refused["message"].startswith(f"Payment {unpaid} is REQUIRES_PAYMENT; only a SUCCEEDED")

    paid = await paid_top_up(user, uow, localstripe, await accounts.client(), 1500)
    over = await refund(admin, paid, 1501)
    assert (over["code"], over["field"]) == ("AMOUNT_EXCEEDS_REFUNDABLE", "amount")
    assert over["message"] == "At most 15.00 USD of this payment can still be refunded."

    too_small = await top_up(user, 1)
    assert too_small["problems"] == [
        {
            "code": "INVALID_AMOUNT",
            "field": "amount",
            "message": "A top-up is 5.00 USD to 10000.00 USD.",
        }
    ]


STATEMENT = """query { viewer { statements { usageTotal { amountMinor currency amount }
  usage { reference amount { amountMinor currency exponent amount } } }
  ledgerEntries(first: 5) { edges { node { code reference amount { amountMinor } } } } } }"""


async def test_usage_names_the_allocation_by_global_id_and_costs_money(
    accounts: Accounts, uow: Any
) -> None:
    """A captured part of an allocation's hold (as metering captures it) is a statement line and a
    ledger entry that name the allocation by the ID `node(id:)` takes."""
    shop = await open_shop(accounts, uow)
    made = (await shop.create("usage"))["allocation"]
    async with uow() as u:
        allocation = await u.allocations.get(from_global_id(made["id"])[1])
        assert allocation is not None and allocation.hold_id is not None
        await book.act(u.ledger, allocation.hold_id, Capture(42), datetime.now(UTC))
        await u.commit()

    found = (await shop.user.gql(STATEMENT))["data"]["viewer"]
    (month,) = found["statements"]
    assert month["usageTotal"] == {"amountMinor": 42, "currency": "USD", "amount": "0.42"}
    assert month["usage"] == [
        {
            "reference": made["id"],
            "amount": {"amountMinor": 42, "currency": "USD", "exponent": 2, "amount": "0.42"},
        }
    ]
    usage = [e["node"] for e in found["ledgerEntries"]["edges"] if e["node"]["code"] == "USAGE"]
    assert {e["reference"] for e in usage} == {made["id"]}  # the hold, and the part captured
    assert {"amountMinor": -42} in [e["amount"] for e in usage]
    node = await shop.user.gql("query($id: ID!) { node(id: $id) { id } }", {"id": made["id"]})
    assert node["data"]["node"] == {"id": made["id"]}
