"""N+1 guard: the number of SQL statements per request does not grow with the page size; and
an executed read costs one round trip to PostgreSQL (no ping, no BEGIN/ROLLBACK around it)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError

from tests.api.helpers import add_skus, codes, gql, make_spec

FULL_PAGE = """
query($first: Int) { skus(first: $first) { edges { cursor node { id name gpuModel gpuCount vcpus
  ramGib diskGib region status createdAt hourlyPrice { amountMinor currency amount } } }
  pageInfo { hasNextPage endCursor } } }
"""


@contextmanager
def counting(app) -> Iterator[list[str]]:  # type: ignore[no-untyped-def]
    statements: list[str] = []
    res = app.state.resources
    engines = [res.engine.sync_engine, res.read_engine.sync_engine]  # writes and reads

    def record(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)


@contextmanager
def round_trips(app) -> Iterator[list[int]]:  # type: ignore[no-untyped-def]
    """Queries sent to PostgreSQL, per checkout, on both pools, as asyncpg's own protocol counts
    them: every execution, prepared or simple (BEGIN, ROLLBACK, a pre-ping's `;`). Statement
    preparation is not counted: it happens once per statement and connection (warm up first)."""
    sent: list[int] = []
    res = app.state.resources
    pools = [res.engine.sync_engine.pool, res.read_engine.sync_engine.pool]
    started: dict[int, int] = {}

    def count(dbapi_connection: Any) -> int:
        return int(dbapi_connection.driver_connection._protocol.queries_count)

    def on_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        started[id(record)] = count(dbapi_connection)

    def on_checkin(dbapi_connection: Any, record: Any) -> None:
        if id(record) in started and dbapi_connection is not None:
            sent.append(count(dbapi_connection) - started.pop(id(record)))

    for pool in pools:
        event.listen(pool, "checkout", on_checkout)
        event.listen(pool, "checkin", on_checkin)
    try:
        yield sent
    finally:
        for pool in pools:
            event.remove(pool, "checkout", on_checkout)
            event.remove(pool, "checkin", on_checkin)


async def test_an_executed_read_is_one_round_trip(app, client, uow) -> None:
    from schema.relay import to_global_id

    made = await add_skus(uow, 60)
    node = '{ node(id: "%s") { id ... on Sku { name } } }' % to_global_id("Sku", made[0].id)
    for first in (50, 10):  # connect and prepare; other page sizes below miss the result cache
        await gql(client, FULL_PAGE, {"first": first})
    await gql(client, node.replace("name", "gpuModel"))
    with round_trips(app) as sent:
        page = await gql(client, FULL_PAGE, {"first": 49})
    assert len(page["data"]["skus"]["edges"]) == 49
    assert sent == [1]  # one checkout, one query: the SELECT
    with round_trips(app) as sent:
        found = await gql(client, node)  # through the batching loader
    assert found["data"]["node"]["name"] == made[0].name and sent == [1]


async def test_the_read_pool_refuses_writes(app) -> None:
    with pytest.raises(DBAPIError) as refused:
        async with app.state.resources.reads() as tx:
            await tx.skus.add(make_spec("never-stored"))
    assert getattr(refused.value.orig, "sqlstate", None) == "25006"  # read-only transaction
    async with app.state.resources.reads() as tx:
        assert await tx.skus.get_by_name("never-stored") is None


async def test_a_read_recovers_when_its_connection_was_killed(app, client, uow, engine) -> None:
    """Without a pre-ping, a pooled connection the server closed (an administrator's
    pg_terminate_backend, a failover) is replaced at checkout or fails one read with a typed
    error; the next read answers."""
    from infra.db.engine import READ_POOL_NAME

    await add_skus(uow, 3)
    await gql(client, FULL_PAGE, {"first": 3})
    read_pool = app.state.resources.read_engine
    async with read_pool.connect() as conn:
        pid = (await conn.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one()
    async with engine.connect() as admin:  # every connection of this app's read pool
        killed = await admin.exec_driver_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = $1",
            (READ_POOL_NAME,),
        )
        assert killed.all()
    first = await gql(client, FULL_PAGE, {"first": 2})
    assert "errors" not in first or codes(first) == ["SERVICE_UNAVAILABLE"]
    again = await gql(client, FULL_PAGE, {"first": 1})
    assert len(again["data"]["skus"]["edges"]) == 1
    async with read_pool.connect() as conn:
        assert (await conn.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one() != pid


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
