"""The money API over HTTP: wallets, ledger entries, top-ups through localstripe and signed
webhooks, admin credits, refunds and spend limits, statements and reconciliation issues; who may
read and do each."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from domain.errors import ServiceUnavailable
from domain.ledger.errors import LedgerErrorCode
from domain.payments.errors import PaymentErrorCode
from schema.billing import BillingError, BillingErrorCode, BillingProblem
from schema.errors import typed_error
from schema.relay import to_global_id
from tests.api.helpers import codes, gql
from tests.api.test_sql_statements import counting
from tests.support import stripe_events
from tests.support.billing import (
    MINOR,
    PAYMENT_FIELDS,
    deliver,
    minor,
    new_key,
    paid_top_up,
    refund,
    succeed,
    top_up,
)
from tests.support.identity import ALL_USER_SCOPES, Account, Accounts

WALLET = f"currency balance {MINOR} available {MINOR} held {MINOR}"
MONEY = "{ amountMinor currency exponent amount }"
VIEWER_MONEY = f"""query {{ viewer {{ id
  wallet {{ {WALLET} }}
  wallets {{ {WALLET} }}
  ledgerEntries(first: 10) {{ edges {{ node {{ id transferId code phase amount {MONEY} currency
    reference
    memo pending createdAt }} }} pageInfo {{ hasNextPage }} }}
  payments(first: 10) {{ edges {{ node {{ {PAYMENT_FIELDS} }} }} }}
  refunds(first: 10) {{ edges {{ node {{ id amount {MINOR} status reason payment {{ id }} }} }} }}
  statements {{ month currency topUps {MONEY} refunds {MONEY} credits {MONEY}
    reversals {MONEY} usageTotal {MONEY} net {MONEY} usage {{ reference amount {MONEY} }} }}
}} }}"""
GRANT = """mutation Grant($user: ID!, $amount: Int!, $currency: String!, $reason: String!,
                       $key: String!) {
  grantCredit(input: {userId: $user, amount: $amount, currency: $currency, reason: $reason,
                      idempotencyKey: $key}) {
    __typename
    ... on CreditPayload { transferId wallet { currency balance { amountMinor }
      available { amountMinor } held { amountMinor } } }
    ... on BillingError { code message field problems { code message field } } } }"""
SPEND_LIMIT = """mutation Limit($user: ID!, $currency: String!, $limit: Int) {
  setSpendLimit(input: {userId: $user, currency: $currency, limit: $limit}) {
    __typename
    ... on SpendLimitPayload { userId currency limit { amountMinor currency amount } }
    ... on BillingError { code field problems { code field } } } }"""
NODE = f"""query Node($id: ID!) {{ node(id: $id) {{ __typename id
  ... on Payment {{ {PAYMENT_FIELDS} }} ... on Refund {{ amount {MINOR} refundStatus: status payment {{ id }} }} }} }}"""
ISSUES = """query { reconciliationIssues(first: 10) { edges { node { id kind stripeObjectId
  paymentId refundId expected actual detail detectedAt } } } }"""
CREDIT_AUDIT = """query($actor: ID!) { auditEvents(first: 5, filter: {actorUserId: $actor,
  action: "billing.credit.granted"}) { edges { node { actorUserId action targetType targetId
  after } } } }"""


async def money(account: Account) -> dict[str, Any]:
    result = await account.gql(VIEWER_MONEY)
    assert "errors" not in result, result
    return minor(result["data"]["viewer"])  # type: ignore[no-any-return]


async def grant(admin: Account, user_gid: str, amount: int = 1500, *, currency: str = "USD",
                reason: str = "sorry for the outage", key: str | None = None) -> dict[str, Any]:  # fmt: skip
    result = await admin.gql(GRANT, {"user": user_gid, "amount": amount, "currency": currency,
                                     "reason": reason, "key": new_key() if key is None else key})  # fmt: skip
    assert "errors" not in result, result
    return minor(result["data"]["grantCredit"])  # type: ignore[no-any-return]


def usd(minor: int) -> dict[str, Any]:
    """Money as every amount of the API shows it."""
    sign, whole = ("-" if minor < 0 else ""), abs(minor)
    return {
        "amountMinor": minor,
        "currency": "USD",
        "exponent": 2,
        "amount": f"{sign}{whole // 100}.{whole % 100:02d}",
    }


def problems(payload: dict[str, Any]) -> dict[str | None, str]:
    return {p["field"]: p["code"] for p in payload["problems"]}


def month_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m")


async def test_a_new_users_money_reads_as_zero(accounts: Accounts) -> None:
    user = await accounts.sign_up()
    found = await money(user)
    assert found["wallet"] == {"currency": "USD", "balance": 0, "available": 0, "held": 0}
    assert found["wallets"] == []
    assert found["ledgerEntries"] == {"edges": [], "pageInfo": {"hasNextPage": False}}
    assert found["payments"] == {"edges": []}
    assert found["refunds"] == {"edges": []}
    assert found["statements"] == []

    unknown = await user.gql('query { viewer { wallet(currency: "XYZ") { currency } } }')
    assert codes(unknown) == ["UNKNOWN_CURRENCY"], unknown
    months = await user.gql("query { viewer { statements(months: 0) { month } } }")
    assert codes(months) == ["INVALID_MONTHS"], months
    cursor = await user.gql('query { viewer { payments(after: "junk") { edges { cursor } } } }')
    assert codes(cursor) == ["INVALID_CURSOR"], cursor


async def test_an_admin_credit_lands_once_with_an_audited_reason(accounts: Accounts) -> None:
    user = await accounts.sign_up()
    admin = await accounts.admin()
    key = new_key()

    granted = await grant(admin, user.user_id, 1500, key=key)
    assert granted["__typename"] == "CreditPayload", granted
    assert granted["wallet"] == {"currency": "USD", "balance": 1500, "available": 1500, "held": 0}

    found = await money(user)
    assert found["wallet"]["balance"] == 1500
    assert found["wallets"] == [granted["wallet"]]
    (entry,) = [e["node"] for e in found["ledgerEntries"]["edges"]]
    assert entry["code"] == "CREDIT" and entry["phase"] == "POSTED" and not entry["pending"]
    assert entry["amount"] == usd(1500) and entry["currency"] == "USD"
    assert entry["reference"] == user.user_id  # a credit names the user credited
    assert entry["memo"] == "sorry for the outage"
    assert entry["transferId"] == granted["transferId"] == entry["id"]  # node(id:) fetches it

    events = await admin.gql(CREDIT_AUDIT, {"actor": admin.user_id})
    (event,) = [e["node"] for e in events["data"]["auditEvents"]["edges"]]
    assert event["actorUserId"] == admin.user_id
    assert event["after"]["reason"] == "sorry for the outage"
    assert event["after"]["amount"] == 1500

    # The same request again (a retry) answers with the same transfer and credits nothing more.
    again = await grant(admin, user.user_id, 1500, key=key)
    assert again["transferId"] == granted["transferId"]
    assert (await money(user))["wallet"]["balance"] == 1500
    # The same key for another request is refused.
    reused = await grant(admin, user.user_id, 999, key=key)
    assert reused["__typename"] == "BillingError"
    assert (reused["code"], reused["field"]) == ("IDEMPOTENCY_KEY_REUSED", "idempotencyKey")
    assert (await money(user))["wallet"]["balance"] == 1500


async def test_grant_credit_refusals(accounts: Accounts) -> None:
    user = await accounts.sign_up()
    admin = await accounts.admin()

    as_user = await user.gql(GRANT, {"user": user.user_id, "amount": 100, "currency": "USD",
                                     "reason": "self-service", "key": new_key()})  # fmt: skip
    assert codes(as_user) == ["FORBIDDEN"] and as_user["data"] is None, as_user

    bad = await grant(admin, user.user_id, -5, currency="XYZ", reason=" ")
    assert bad["__typename"] == "BillingError"
    assert bad["code"] == "UNKNOWN_CURRENCY"
    bad = await grant(admin, user.user_id, 0, reason=" ")
    assert bad["code"] == "INVALID_AMOUNT"
    bad = await grant(admin, user.user_id, 100, reason=" ")
    assert (bad["code"], bad["field"]) == ("INVALID_REASON", "reason")
    bad = await grant(admin, user.user_id, 100, key=" padded ")
    assert bad["code"] == "INVALID_IDEMPOTENCY_KEY"
    missing = await grant(admin, to_global_id("User", 10**12))
    assert (missing["code"], missing["field"]) == ("USER_NOT_FOUND", "userId")
    for junk in ("not-an-id", to_global_id("Sku", 1)):
        wrong = await grant(admin, junk)
        assert (wrong["code"], wrong["field"]) == ("INVALID_ID", "userId")
    assert (await money(user))["wallet"]["balance"] == 0


async def test_a_top_up_credits_the_wallet_once_when_stripe_says_it_succeeded(
    accounts: Accounts, uow: Any, localstripe: Any, engine: Any
) -> None:
    user = await accounts.sign_up()
    key = new_key()
    made = await top_up(user, 2500, key=key)
    assert made["__typename"] == "TopUpPayload", made
    payment = made["payment"]
    assert payment["status"] == "REQUIRES_PAYMENT"
    assert (payment["amount"], payment["currency"], payment["refundable"]) == (2500, "USD", 0)
    assert made["clientSecret"]
    assert (await money(user))["wallet"]["balance"] == 0  # nothing until Stripe says so

    replay = await top_up(user, 2500, key=key)
    assert replay["payment"]["id"] == payment["id"]
    reused = await top_up(user, 3000, key=key)
    assert reused["code"] == "IDEMPOTENCY_KEY_REUSED"

    client = await accounts.client()
    event = await succeed(uow, localstripe, client, payment["id"])
    assert await deliver(client, event) == "duplicate"  # Stripe delivers at least once
    retried = stripe_events.payment_intent(  # a second event about the same success
        "succeeded", intent_id=event["data"]["object"]["id"], amount=2500,
        metadata=event["data"]["object"]["metadata"],
    )  # fmt: skip
    assert await deliver(client, retried) == "stale"

    found = await money(user)
    assert found["wallet"] == {"currency": "USD", "balance": 2500, "available": 2500, "held": 0}
    (paid,) = [e["node"] for e in found["payments"]["edges"]]
    assert paid["id"] == payment["id"]
    assert (paid["status"], paid["amountReceived"], paid["refundable"]) == ("SUCCEEDED", 2500, 2500)
    (entry,) = [e["node"] for e in found["ledgerEntries"]["edges"]]
    assert (entry["code"], entry["amount"]) == ("TOP_UP", usd(2500))
    assert entry["reference"] == payment["id"]
    async with engine.connect() as conn:
        top_ups = await conn.execute(
            text("SELECT count(*) FROM ledger_transfers WHERE code = 'top_up'")
        )
        assert top_ups.scalar() == 1


async def test_a_top_up_out_of_bounds_names_every_field(accounts: Accounts) -> None:
    user = await accounts.sign_up()
    both = await top_up(user, 1, "JPY")
    assert both["__typename"] == "BillingError"
    assert problems(both) == {"currency": "UNSUPPORTED_CURRENCY", "amount": "INVALID_AMOUNT"}
    too_much = await top_up(user, 2_000_000_000)
    assert problems(too_much) == {"amount": "INVALID_AMOUNT"}
    no_key = await top_up(user, 2500, key="")
    assert problems(no_key) == {"idempotencyKey": "INVALID_IDEMPOTENCY_KEY"}
    assert (await money(user))["payments"] == {"edges": []}

    # A token needs billing:write to top up.
    secret = await user.token([s for s in ALL_USER_SCOPES if s != "BILLING_WRITE"])
    narrow = await accounts.bearer(secret)
    refused = await gql(narrow, "mutation { createTopUp(input: {amount: 500, currency: \"USD\", "
                                'idempotencyKey: "k"}) { __typename } }')  # fmt: skip
    assert codes(refused) == ["MISSING_SCOPE"], refused


async def test_an_admin_refund_goes_back_to_the_card_and_leaves_the_wallet(
    accounts: Accounts, uow: Any, localstripe: Any
) -> None:
    user = await accounts.sign_up()
    admin = await accounts.admin()
    client = await accounts.client()
    payment = await paid_top_up(user, uow, localstripe, client, 2500)

    key = new_key()
    done = await refund(admin, payment, 1000, key=key)
    assert done["__typename"] == "RefundPayload", done
    made = done["refund"]
    assert (made["status"], made["amount"], made["currency"]) == ("SUCCEEDED", 1000, "USD")
    assert made["payment"]["id"] == payment
    assert (made["payment"]["amountRefunded"], made["payment"]["refundable"]) == (1000, 1500)
    again = await refund(admin, payment, 1000, key=key)
    assert again["refund"]["id"] == made["id"]

    found = await money(user)
    assert found["wallet"] == {"currency": "USD", "balance": 1500, "available": 1500, "held": 0}
    (listed,) = [e["node"] for e in found["refunds"]["edges"]]
    assert (listed["id"], listed["status"], listed["payment"]) == (made["id"], "SUCCEEDED",
                                                                  {"id": payment})  # fmt: skip
    (paid,) = [e["node"] for e in found["payments"]["edges"]]
    assert paid["refundable"] == 1500
    refund_entry = found["ledgerEntries"]["edges"][0]["node"]
    assert (refund_entry["code"], refund_entry["amount"]) == ("REFUND", usd(-1000))
    assert refund_entry["reference"] == payment  # the refund's hold is on the payment
    node = await user.gql(NODE, {"id": refund_entry["reference"]})
    assert node["data"]["node"]["id"] == payment

    over = await refund(admin, payment, 1501)
    assert (over["code"], over["field"]) == ("AMOUNT_EXCEEDS_REFUNDABLE", "amount")
    missing = await refund(admin, to_global_id("Payment", 10**12), 100)
    assert (missing["code"], missing["field"]) == ("PAYMENT_NOT_FOUND", "paymentId")
    wrong_type = await refund(admin, made["id"], 100)
    assert (wrong_type["code"], wrong_type["field"]) == ("INVALID_ID", "paymentId")
    as_user = await user.gql(
        "mutation($p: ID!) { refundPayment(input: {paymentId: $p, amount: 100, reason: \"x\", "
        'idempotencyKey: "k"}) { __typename } }', {"p": payment},
    )  # fmt: skip
    assert codes(as_user) == ["FORBIDDEN"], as_user
    assert (await money(user))["wallet"]["balance"] == 1500


async def test_an_unpaid_payment_is_not_refundable(accounts: Accounts) -> None:
    user = await accounts.sign_up()
    admin = await accounts.admin()
    made = await top_up(user, 2500)
    refused = await refund(admin, made["payment"]["id"], 100)
    assert (refused["code"], refused["field"]) == ("NOT_REFUNDABLE", "paymentId")


async def test_payments_and_refunds_are_seen_by_their_owner_and_admins_only(
    accounts: Accounts, uow: Any, localstripe: Any
) -> None:
    owner = await accounts.sign_up()
    other = await accounts.sign_up()
    admin = await accounts.admin()
    client = await accounts.client()
    payment = await paid_top_up(owner, uow, localstripe, client, 2500)
    made = (await refund(admin, payment, 500))["refund"]["id"]

    for gid, type_name in ((payment, "Payment"), (made, "Refund")):
        mine = await owner.gql(NODE, {"id": gid})
        assert "errors" not in mine, mine
        assert mine["data"]["node"]["__typename"] == type_name
        as_admin = await admin.gql(NODE, {"id": gid})
        assert as_admin["data"]["node"]["id"] == gid, as_admin

        theirs = await other.gql(NODE, {"id": gid})
        assert codes(theirs) == ["NOT_FOUND"] and theirs["data"] == {"node": None}, theirs
        missing = await other.gql(NODE, {"id": to_global_id(type_name, 10**12)})
        assert [e["message"] for e in missing["errors"]] == [e["message"] for e in theirs["errors"]]

    # A token without billing:read reads neither the objects nor the money fields.
    secret = await owner.token([s for s in ALL_USER_SCOPES if s != "BILLING_READ"])
    narrow = await accounts.bearer(secret)
    assert codes(await gql(narrow, NODE, {"id": payment})) == ["MISSING_SCOPE"]
    partial = await gql(narrow, "query { viewer { email wallet { currency } } }")
    assert codes(partial) == ["MISSING_SCOPE"], partial
    assert partial["data"]["viewer"] == {"email": owner.email.lower(), "wallet": None}

    # An admin reads another user's money through that user.
    user_money = """query($id: ID!) { node(id: $id) { ... on User { wallet { balance {
      amountMinor currency exponent amount } }
      payments { edges { node { id } } } } } }"""
    seen = await admin.gql(user_money, {"id": owner.user_id})
    assert "errors" not in seen, seen
    assert seen["data"]["node"]["wallet"]["balance"] == usd(2000)  # Money, as everywhere
    assert [e["node"]["id"] for e in seen["data"]["node"]["payments"]["edges"]] == [payment]


async def test_a_statement_sums_the_month_by_flow(
    accounts: Accounts, uow: Any, localstripe: Any
) -> None:
    user = await accounts.sign_up()
    admin = await accounts.admin()
    client = await accounts.client()
    payment = await paid_top_up(user, uow, localstripe, client, 2500)
    await grant(admin, user.user_id, 700)
    await refund(admin, payment, 1000)

    (statement,) = (await money(user))["statements"]
    assert statement == {
        "month": month_now(), "currency": "USD", "topUps": usd(2500), "refunds": usd(1000),
        "credits": usd(700), "reversals": usd(0), "usageTotal": usd(0), "net": usd(2200),
        "usage": [],
    }  # fmt: skip
    assert (await money(user))["wallet"]["balance"] == 2200


async def test_spend_limits_are_set_by_admins(accounts: Accounts) -> None:
    user = await accounts.sign_up()
    admin = await accounts.admin()
    variables = {"user": user.user_id, "currency": "USD", "limit": 5000}
    result = await admin.gql(SPEND_LIMIT, variables)
    assert result["data"]["setSpendLimit"] == {
        "__typename": "SpendLimitPayload", "userId": user.user_id, "currency": "USD",
        "limit": {"amountMinor": 5000, "currency": "USD", "amount": "50.00"},
    }  # fmt: skip
    cleared = await admin.gql(SPEND_LIMIT, {**variables, "limit": None})
    assert cleared["data"]["setSpendLimit"]["limit"] is None
    negative = await admin.gql(SPEND_LIMIT, {**variables, "limit": -1})
    assert negative["data"]["setSpendLimit"]["code"] == "INVALID_AMOUNT"
    assert codes(await user.gql(SPEND_LIMIT, variables)) == ["FORBIDDEN"]


async def test_reconciliation_issues_are_for_admins(accounts: Accounts) -> None:
    user = await accounts.sign_up()
    admin = await accounts.admin()
    client = await accounts.client()
    # Stripe names a payment of ours that we have no record of: flagged, never applied.
    unknown = stripe_events.payment_intent(
        "succeeded", amount=900, metadata={"gpucloud_payment": "999999999"}
    )
    assert await deliver(client, unknown) == "flagged"

    assert codes(await user.gql(ISSUES)) == ["FORBIDDEN"]
    listed = await admin.gql(ISSUES)
    assert "errors" not in listed, listed
    (issue,) = [e["node"] for e in listed["data"]["reconciliationIssues"]["edges"]]
    assert issue["kind"] == "UNKNOWN_PAYMENT"
    assert issue["stripeObjectId"] == unknown["data"]["object"]["id"]
    assert issue["paymentId"] is None and issue["detail"]


def test_billing_error_codes_cover_every_money_code() -> None:
    names = {member.name for member in BillingErrorCode}  # type: ignore[attr-defined]
    assert {str(c) for c in LedgerErrorCode} | {str(c) for c in PaymentErrorCode} <= names
    assert {"IDEMPOTENCY_KEY_REUSED", "INVALID_IDEMPOTENCY_KEY", "INVALID_ID"} <= names


def test_a_service_outage_is_not_dressed_as_a_billing_error() -> None:
    with pytest.raises(ServiceUnavailable):
        typed_error(ServiceUnavailable("database"), BillingError, BillingProblem)


async def test_refund_pages_read_their_payments_in_one_batch(
    app: Any, accounts: Accounts, uow: Any, localstripe: Any
) -> None:
    user = await accounts.sign_up()
    admin = await accounts.admin()
    client = await accounts.client()
    for _ in range(3):
        payment = await paid_top_up(user, uow, localstripe, client, 1000)
        assert (await refund(admin, payment, 100))["__typename"] == "RefundPayload"
    page = """query($first: Int) { viewer { refunds(first: $first) { edges { node { id
      payment { id refundable { amountMinor } } } } } } }"""
    await user.gql(page, {"first": 1})  # warm the credential caches
    counts = {}
    for size in (1, 3):
        with counting(app) as statements:
            result = await user.gql(page, {"first": size})
        assert len(result["data"]["viewer"]["refunds"]["edges"]) == size, result
        counts[size] = len(statements)
    assert counts[1] == counts[3], counts


def test_an_owned_field_refuses_whoever_is_neither_owner_nor_admin() -> None:
    """The field-level ownership rule itself, for a path that would hand out another's User."""
    from types import SimpleNamespace

    from domain.identity.errors import AccessDenied
    from domain.identity.principal import Principal, PrincipalKind, Requirement
    from domain.identity.scopes import ROLE_SCOPES, Role, Scope
    from schema.permissions import OwnedAccess

    permission = OwnedAccess(Requirement(Scope.BILLING_READ), lambda source: source.key)
    user = Principal(PrincipalKind.SESSION, 7, Role.USER, ROLE_SCOPES[Role.USER])
    admin = Principal(PrincipalKind.SESSION, 8, Role.ADMIN, ROLE_SCOPES[Role.ADMIN])

    def info(principal: Principal) -> Any:
        return SimpleNamespace(
            context=SimpleNamespace(principal=principal, credential_refusal=None)
        )

    assert permission.has_permission(SimpleNamespace(key=7), info(user))
    assert permission.has_permission(SimpleNamespace(key=7), info(admin))
    with pytest.raises(AccessDenied) as refused:
        permission.has_permission(SimpleNamespace(key=9), info(user))
    assert refused.value.code == "FORBIDDEN"
