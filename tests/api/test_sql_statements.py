"""N+1 guard: the number of SQL statements per request does not grow with the page size."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event

from tests.api.helpers import add_skus, gql

FULL_PAGE = """
query($first: Int) { skus(first: $first) { edges { cursor node { id name gpuModel gpuCount vcpus
  ramGib diskGib region status createdAt hourlyPrice { amountMinor currency amount } } }
  pageInfo { hasNextPage endCursor } } }
"""


@contextmanager
def counting(app) -> Iterator[list[str]]:  # type: ignore[no-untyped-def]
    statements: list[str] = []
    sync_engine = app.state.resources.engine.sync_engine

    def record(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(sync_engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(sync_engine, "before_cursor_execute", record)


async def test_page_size_does_not_change_statement_count(app, client, uow) -> None:
    await add_skus(uow, 60)
    counts = {}
    for size in (1, 10, 50):
        with counting(app) as statements:
            result = await gql(client, FULL_PAGE, {"first": size})
        assert len(result["data"]["skus"]["edges"]) == size
        counts[size] = len(statements)
    assert counts[1] == counts[10] == counts[50] == 1, counts


async def test_many_node_lookups_are_batched_into_one_query(app, client, uow) -> None:
    from schema.relay import to_global_id

    made = await add_skus(uow, 12)
    fields = " ".join(
        f'n{i}: node(id: "{to_global_id("Sku", sku.id)}") {{ id }}' for i, sku in enumerate(made)
    )
    with counting(app) as statements:
        result = await gql(client, "{ %s }" % fields)
    assert all(result["data"][f"n{i}"] for i in range(12))
    assert len(statements) == 1
