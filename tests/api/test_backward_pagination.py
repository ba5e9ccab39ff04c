"""Relay's backward pagination (`last`/`before`) over HTTP, on an oldest-first connection (the
catalog) and a newest-first one (the audit log), and the typed errors for bad combinations."""

from __future__ import annotations

from typing import Any

from tests.api.helpers import add_skus, codes, gql
from tests.api.test_sql_statements import counting

SKUS = """query Skus($first: Int, $after: String, $last: Int, $before: String) {
  skus(first: $first, after: $after, last: $last, before: $before) {
    edges { cursor node { name } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } }"""
AUDIT = """query Audit($first: Int, $after: String, $last: Int, $before: String) {
  auditEvents(first: $first, after: $after, last: $last, before: $before) {
    edges { cursor node { id } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } }"""


def _names(conn: dict[str, Any]) -> list[str]:
    return [e["node"]["name"] for e in conn["edges"]]


async def test_last_and_before_walk_the_catalog_from_its_end(client, uow) -> None:
    await add_skus(uow, 7)
    every = [f"sku-{i:03d}" for i in range(7)]

    end = (await gql(client, SKUS, {"last": 3}))["data"]["skus"]
    assert _names(end) == every[4:]
    assert end["pageInfo"] == {
        "hasNextPage": False,
        "hasPreviousPage": True,
        "startCursor": end["edges"][0]["cursor"],
        "endCursor": end["edges"][-1]["cursor"],
    }

    pages, before = [], None
    while True:
        conn = (await gql(client, SKUS, {"last": 3, "before": before}))["data"]["skus"]
        pages.insert(0, _names(conn))
        assert conn["pageInfo"]["hasNextPage"] is (before is not None)
        if not conn["pageInfo"]["hasPreviousPage"]:
            break
        before = conn["pageInfo"]["startCursor"]
    assert pages == [every[:1], every[1:4], every[4:]]


async def test_cursors_on_both_sides_bound_the_range(client, uow) -> None:
    await add_skus(uow, 7)
    cursors = [
        e["cursor"] for e in (await gql(client, SKUS, {"first": 7}))["data"]["skus"]["edges"]
    ]
    after, before = cursors[1], cursors[5]  # sku-001 .. sku-005, exclusive

    forward = await gql(client, SKUS, {"first": 2, "after": after, "before": before})
    assert _names(forward["data"]["skus"]) == ["sku-002", "sku-003"]
    assert forward["data"]["skus"]["pageInfo"]["hasNextPage"] is True
    backward = await gql(client, SKUS, {"last": 2, "after": after, "before": before})
    assert _names(backward["data"]["skus"]) == ["sku-003", "sku-004"]
    assert backward["data"]["skus"]["pageInfo"]["hasPreviousPage"] is True
    whole = await gql(client, SKUS, {"last": 10, "after": after, "before": before})
    assert _names(whole["data"]["skus"]) == ["sku-002", "sku-003", "sku-004"]
    assert whole["data"]["skus"]["pageInfo"]["hasPreviousPage"] is False


async def test_a_backward_page_is_one_statement_whatever_its_size(app, client, uow) -> None:
    await add_skus(uow, 30)
    counts = {}
    for size in (1, 30):
        with counting(app) as statements:
            result = await gql(client, SKUS, {"last": size})
        assert len(result["data"]["skus"]["edges"]) == size
        counts[size] = len(statements)
    assert counts == {1: 1, 30: 1}


async def test_a_newest_first_list_reads_the_same_both_ways(accounts) -> None:
    admin = await accounts.admin()
    for _ in range(4):
        await accounts.sign_up()  # each sign-up is audited

    forward, after = [], None
    while True:
        conn = (await admin.gql(AUDIT, {"first": 3, "after": after}))["data"]["auditEvents"]
        forward += [e["node"]["id"] for e in conn["edges"]]
        if not conn["pageInfo"]["hasNextPage"]:
            break
        after = conn["pageInfo"]["endCursor"]
    backward: list[str] = []
    before = None
    while True:
        conn = (await admin.gql(AUDIT, {"last": 3, "before": before}))["data"]["auditEvents"]
        backward = [e["node"]["id"] for e in conn["edges"]] + backward
        if not conn["pageInfo"]["hasPreviousPage"]:
            break
        before = conn["pageInfo"]["startCursor"]
    assert len(forward) >= 6
    assert backward == forward


async def test_bad_combinations_are_typed_errors(client, uow) -> None:
    await add_skus(uow, 2)
    cases = [
        ({"first": 1, "last": 1}, "INVALID_PAGINATION", "last"),
        ({"last": -1}, "INVALID_PAGE_SIZE", "last"),
        ({"last": 101}, "INVALID_PAGE_SIZE", "last"),
        ({"last": 1, "before": "not-a-cursor"}, "INVALID_CURSOR", "before"),
        ({"first": 1, "before": "bm9wZQ"}, "INVALID_CURSOR", "before"),
    ]
    for variables, code, field in cases:
        result = await gql(client, SKUS, variables)
        assert codes(result) == [code], (variables, result)
        assert result["errors"][0]["extensions"]["field"] == field, result
        assert result["data"] is None
    empty = (await gql(client, SKUS, {"last": 0}))["data"]["skus"]
    assert empty["edges"] == [] and empty["pageInfo"]["startCursor"] is None
