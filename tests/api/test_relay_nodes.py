"""Relay's object lookups over HTTP: `nodes(ids:)` answers per ID with the rules of `node(id:)`,
batched by type, and every type with a global `id` can be fetched by it."""

from __future__ import annotations

from typing import Any

from schema.relay import to_global_id
from tests.api.helpers import (
    add_fleet_node,
    add_node_event_and_issue,
    add_skus,
    add_ssh_key,
    codes,
    gql,
    grant_credit,
)
from tests.api.test_sql_statements import counting

NODES = """query Nodes($ids: [ID!]!) { nodes(ids: $ids) { __typename id
  ... on Sku { name } ... on SshKey { fingerprint } ... on User { email } } }"""


def _ids(result: dict[str, Any]) -> list[str | None]:
    return [None if n is None else n["id"] for n in result["data"]["nodes"]]


async def test_nodes_answers_each_id_in_order_with_null_for_what_is_not_yours(
    accounts, uow
) -> None:
    a = await accounts.sign_up()
    b = await accounts.sign_up()
    (sku,) = await add_skus(uow, 1)
    a_key = await add_ssh_key(a)
    b_key = await add_ssh_key(b)
    sku_id = to_global_id("Sku", sku.id)
    missing = to_global_id("SshKey", 10**9)
    unknown_type = to_global_id("Nothing", 1)
    ids = [a_key["id"], sku_id, b_key["id"], b.user_id, missing, a.user_id, unknown_type, sku_id]

    result = await a.gql(NODES, {"ids": ids})

    assert "errors" not in result, result  # B's objects are null exactly as missing ones
    assert _ids(result) == [a_key["id"], sku_id, None, None, None, a.user_id, None, sku_id]
    assert result["data"]["nodes"][0] == {
        "__typename": "SshKey",
        "id": a_key["id"],
        "fingerprint": a_key["fingerprint"],
    }
    assert result["data"]["nodes"][5]["email"] == a.email.lower()
    assert b.email.lower() not in str(result) and b_key["fingerprint"] not in str(result)


async def test_a_bad_or_forbidden_id_fails_alone_at_its_index(accounts, client, uow) -> None:
    (sku,) = await add_skus(uow, 1)
    a = await accounts.sign_up()
    sku_id = to_global_id("Sku", sku.id)

    result = await gql(client, NODES, {"ids": [sku_id, "%%%", a.user_id, sku_id]})

    assert _ids(result) == [sku_id, None, None, sku_id]
    by_index = {tuple(e["path"]): e["extensions"] for e in result["errors"]}
    assert by_index == {
        ("nodes", 1): {"code": "INVALID_ID", "field": "ids"},
        ("nodes", 2): {"code": "UNAUTHENTICATED", "field": None},
    }
    token = await a.token(["COMPUTE_READ"])
    as_token = await accounts.bearer(token)
    scoped = await gql(as_token, NODES, {"ids": [a.user_id, sku_id]})
    assert _ids(scoped) == [None, sku_id]
    assert [(e["path"], e["extensions"]["code"]) for e in scoped["errors"]] == [
        (["nodes", 0], "MISSING_SCOPE")
    ]


async def test_too_many_ids_is_a_typed_error_and_none_is_read(app, client, uow) -> None:
    (sku,) = await add_skus(uow, 1)
    ids = [to_global_id("Sku", sku.id)] * 101
    with counting(app) as statements:
        result = await gql(client, NODES, {"ids": ids})
    assert codes(result) == ["TOO_MANY_IDS"]
    assert result["errors"][0]["extensions"]["field"] == "ids"
    assert result["data"] is None
    assert statements == []
    at_limit = await gql(client, NODES, {"ids": ids[:100]})
    assert _ids(at_limit) == ids[:100] and "errors" not in at_limit
    assert await gql(client, NODES, {"ids": []}) == {"data": {"nodes": []}}


async def test_lookups_cost_one_query_per_type_not_per_id(app, accounts, uow) -> None:
    a = await accounts.sign_up()
    skus = [to_global_id("Sku", s.id) for s in await add_skus(uow, 40)]
    keys = [(await add_ssh_key(a, f"key-{i}"))["id"] for i in range(6)]
    await a.gql(NODES, {"ids": []})  # the session is looked up (and cached) before counting

    counts = {}
    for label, ids in (("none", []), ("few", skus[:1] + keys[:1]), ("many", skus + keys)):
        with counting(app) as statements:
            result = await a.gql(NODES, {"ids": ids})
        assert _ids(result) == ids, result
        counts[label] = len(statements)
    assert counts["few"] == counts["many"] == counts["none"] + 2, counts  # SKUs, SSH keys


ENTRIES = (
    "{ viewer { ledgerEntries(first: 5) { edges { node { id amount { amountMinor } code } } } } }"
)
NODE = "query($id: ID!) { node(id: $id) { __typename id } }"


async def test_ledger_entries_node_events_and_issues_are_nodes(accounts, uow) -> None:
    admin = await accounts.admin()
    a = await accounts.sign_up()
    b = await accounts.sign_up()
    await grant_credit(admin, a.user_id, 500)
    (entry,) = [
        e["node"] for e in (await a.gql(ENTRIES))["data"]["viewer"]["ledgerEntries"]["edges"]
    ]
    fleet_node = await add_fleet_node(uow, "relay-node")
    event_id, issue_id = await add_node_event_and_issue(uow, fleet_node.id)

    owner = await a.gql(NODES, {"ids": [entry["id"]]})
    assert _ids(owner) == [entry["id"]] and "errors" not in owner
    assert (await a.gql(NODE, {"id": entry["id"]}))["data"]["node"] == {
        "__typename": "LedgerEntry",
        "id": entry["id"],
    }
    as_admin = await admin.gql(NODES, {"ids": [entry["id"], event_id, issue_id]})
    assert _ids(as_admin) == [entry["id"], event_id, issue_id], as_admin
    assert [n["__typename"] for n in as_admin["data"]["nodes"]] == [
        "LedgerEntry",
        "NodeEvent",
        "ReconciliationIssue",
    ]

    stranger = await b.gql(NODES, {"ids": [entry["id"], event_id, issue_id]})
    assert _ids(stranger) == [None, None, None]
    assert [(e["path"], e["extensions"]["code"]) for e in stranger["errors"]] == [
        (["nodes", 1], "FORBIDDEN"),
        (["nodes", 2], "FORBIDDEN"),
    ]
    assert codes(await b.gql(NODE, {"id": entry["id"]})) == ["NOT_FOUND"]


def test_every_type_with_a_global_id_is_a_node_that_node_id_resolves() -> None:
    """Relay's contract, read from the exported schema: an object type with `id: ID!` implements
    Node, and node(id:) knows how to fetch every Node type."""
    from graphql import build_schema, is_object_type

    from resolvers.access import NODE_TYPES
    from tests.conftest import REPO

    schema = build_schema((REPO / "schema" / "schema.graphql").read_text())
    with_ids = {
        name
        for name, type_ in schema.type_map.items()
        if is_object_type(type_) and "id" in type_.fields and str(type_.fields["id"].type) == "ID!"
    }
    nodes = {t.name for t in schema.get_possible_types(schema.type_map["Node"])}  # type: ignore[arg-type]
    assert with_ids == nodes
    assert nodes == set(NODE_TYPES)
