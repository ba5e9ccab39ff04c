"""Notifications speak the API's language: each kind's `details` are typed fields whose IDs are
global IDs that `node(id:)` resolves to the very object, whose states are schema enum values and
whose amounts are Money. Each notice is caused the way it is in production where the in-process
app can (an allocation made and stopped, a top-up paid, a refund, a credit, a node cordoned);
the two it cannot cause here (a low balance needs the metering tick, an alert a failing probe)
are written by the domain's own `notify` with the payload their producers write."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from domain.notifications.notices import NoticeType
from domain.notifications.services import notify
from schema.relay import from_global_id, to_global_id
from tests.api.helpers import grant_credit
from tests.api.test_allocations import STOP, open_shop
from tests.support.billing import paid_top_up, refund
from tests.support.identity import Account, Accounts

MONEY = "amount { amountMinor currency exponent amount }"
DETAILS = f"""__typename
  ... on AllocationStateChangedNotice {{ allocationId state previousState version failure
                                          stopReason }}
  ... on AllocationLowBalanceNotice {{ allocationId stopsAt }}
  ... on PaymentNotice {{ paymentId paymentStatus {MONEY} }}
  ... on RefundNotice {{ refundId paymentId refundStatus {MONEY} }}
  ... on NodeNotice {{ nodeId name nodeState previousNodeState reason message }}
  ... on AuditRecordedNotice {{ auditEventId action actorType actorUserId targetType targetId }}"""
TOLD = f"""query {{ notifications(first: 50) {{ edges {{ node {{ type
  details {{ {DETAILS} }} }} }} }} }}"""
NODE = "query($id: ID!) { node(id: $id) { __typename id } }"
EVENTS = "query($id: ID!) { allocation(id: $id) { events { kind state message } } }"
CORDON = """mutation($id: ID!) { cordonNode(id: $id) { __typename
  ... on NodePayload { node { id state } } } }"""


async def told(account: Account, kind: str) -> list[dict[str, Any]]:
    """The details of the account's notifications of `kind`, newest first."""
    result = await account.gql(TOLD)
    assert "errors" not in result, result
    return [
        e["node"]["details"]
        for e in result["data"]["notifications"]["edges"]
        if e["node"]["type"] == kind
    ]


async def fetched(account: Account, gid: str, type_name: str) -> None:
    """`node(id:)` takes the notice's ID and answers with that same object."""
    result = await account.gql(NODE, {"id": gid})
    assert "errors" not in result, result
    assert result["data"]["node"] == {"__typename": type_name, "id": gid}


async def test_allocation_state_changes_name_the_allocation_by_global_id_and_enum(
    accounts: Accounts, uow: Any
) -> None:
    shop = await open_shop(accounts, uow)
    made = (await shop.create("told"))["allocation"]
    stopped = (await shop.user.gql(STOP, {"id": made["id"]}))["data"]["stopAllocation"]
    assert stopped["__typename"] == "AllocationPayload", stopped

    newest, placed = await told(shop.user, "ALLOCATION_STATE_CHANGED")
    assert placed == {
        "__typename": "AllocationStateChangedNotice",
        "allocationId": made["id"],
        "state": "PLACED",
        "previousState": None,
        "version": made["version"],
        "failure": None,
        "stopReason": None,
    }
    assert newest["allocationId"] == made["id"]
    assert (newest["previousState"], newest["state"]) == ("PLACED", stopped["allocation"]["state"])
    assert newest["stopReason"] == "USER"
    await fetched(shop.user, made["id"], "Allocation")

    # Its history says the same in the same words: kinds and states are enum values.
    history = await shop.user.gql(EVENTS, {"id": made["id"]})
    assert [
        (e["kind"], e["state"], e["message"]) for e in history["data"]["allocation"]["events"]
    ] == [
        ("STATE_CHANGED", newest["state"], f"PLACED -> {newest['state']}"),
        ("STATE_CHANGED", "PLACED", "created -> PLACED"),
    ]


async def test_payment_and_refund_notices_carry_money_and_global_ids(
    accounts: Accounts, uow: Any, localstripe: Any
) -> None:
    user, admin = await accounts.sign_up(), await accounts.admin()
    payment = await paid_top_up(user, uow, localstripe, await accounts.client(), 2500)
    made = await refund(admin, payment, 1000)
    assert made["__typename"] == "RefundPayload", made

    (paid,) = await told(user, "PAYMENT_SUCCEEDED")
    assert paid == {
        "__typename": "PaymentNotice",
        "paymentId": payment,
        "paymentStatus": "SUCCEEDED",
        "amount": {"amountMinor": 2500, "currency": "USD", "exponent": 2, "amount": "25.00"},
    }
    (refunded,) = await told(user, "REFUND_SUCCEEDED")
    assert refunded == {
        "__typename": "RefundNotice",
        "refundId": made["refund"]["id"],
        "paymentId": payment,
        "refundStatus": "SUCCEEDED",
        "amount": {"amountMinor": 1000, "currency": "USD", "exponent": 2, "amount": "10.00"},
    }
    await fetched(user, payment, "Payment")
    await fetched(user, made["refund"]["id"], "Refund")


async def test_admins_hear_of_audited_changes_and_node_states_in_global_ids(
    accounts: Accounts, uow: Any
) -> None:
    shop = await open_shop(accounts, uow, credit=0)
    other = await accounts.admin()
    await grant_credit(shop.admin, shop.user.user_id, 700)
    node_gid = to_global_id("FleetNode", shop.nodes[0].id)
    cordoned = await shop.admin.gql(CORDON, {"id": node_gid})
    assert cordoned["data"]["cordonNode"]["__typename"] == "NodePayload", cordoned

    credited = [
        d for d in await told(other, "AUDIT_RECORDED") if d["action"] == "billing.credit.granted"
    ]
    assert len(credited) == 1, credited
    (audited,) = credited
    assert (audited["actorType"], audited["actorUserId"]) == ("user", shop.admin.user_id)
    assert (audited["targetType"], audited["targetId"]) == ("user", shop.user.user_id)
    assert from_global_id(audited["auditEventId"])[0] == "AuditEvent"
    await fetched(other, audited["auditEventId"], "AuditEvent")
    await fetched(other, audited["targetId"], "User")

    (changed,) = await told(other, "NODE_STATE_CHANGED")
    assert changed == {
        "__typename": "NodeNotice",
        "nodeId": node_gid,
        "name": shop.nodes[0].name,
        "nodeState": "CORDONED",
        "previousNodeState": "READY",
        "reason": None,
        "message": None,
    }
    await fetched(other, node_gid, "FleetNode")


async def test_low_balance_and_node_alerts_are_typed_too(accounts: Accounts, uow: Any) -> None:
    shop = await open_shop(accounts, uow)
    made = (await shop.create("low"))["allocation"]
    allocation_id, node = from_global_id(made["id"])[1], shop.nodes[0]
    stops_at = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=3)
    admin_id = from_global_id(shop.admin.user_id)[1]
    async with uow() as u:  # the payloads domain/compute/metering.py and fleet/changes.py write
        await notify(
            u,
            [from_global_id(shop.user.user_id)[1]],
            NoticeType.ALLOCATION_LOW_BALANCE,
            {"allocationId": allocation_id, "stopsAt": stops_at.isoformat()},
        )
        await notify(
            u,
            [admin_id],
            NoticeType.NODE_ALERT,
            {
                "nodeId": node.id,
                "name": node.name,
                "state": "unreachable",
                "previous": "ready",
                "reason": "UNREACHABLE",
                "message": "READY -> UNREACHABLE: no route",
            },
        )
        await u.commit()

    (low,) = await told(shop.user, "ALLOCATION_LOW_BALANCE")
    assert low["allocationId"] == made["id"]
    assert datetime.fromisoformat(low["stopsAt"]) == stops_at
    await fetched(shop.user, made["id"], "Allocation")
    (alert,) = await told(shop.admin, "NODE_ALERT")
    assert alert == {
        "__typename": "NodeNotice",
        "nodeId": to_global_id("FleetNode", node.id),
        "name": node.name,
        "nodeState": "UNREACHABLE",
        "previousNodeState": "READY",
        "reason": "UNREACHABLE",
        "message": "READY -> UNREACHABLE: no route",
    }
