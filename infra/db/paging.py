"""Keyset pagination over an id column, shared by every repository's `list`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.pagination import Page, PageRequest

T = TypeVar("T")


async def keyset_page(
    conn: AsyncConnection,
    stmt: Select[Any],
    id_column: Any,
    page: PageRequest,
    convert: Callable[[Any], T],
    *,
    descending: bool = False,
) -> Page[T]:
    """Fetch one page ordered by `id_column`, one row extra to learn whether more follow."""
    if page.after_key is not None:
        stmt = stmt.where(id_column < page.after_key if descending else id_column > page.after_key)
    stmt = stmt.order_by(id_column.desc() if descending else id_column).limit(page.first + 1)
    return page_of((await conn.execute(stmt)).all(), page, convert)


def page_of(rows: Sequence[Any], page: PageRequest, convert: Callable[[Any], T]) -> Page[T]:
    """The page from up to `page.first + 1` rows in key order (an extra one: more follow)."""
    items = [(row.id, convert(row)) for row in rows[: page.first]]
    return Page(
        items, has_next_page=len(rows) > page.first, has_previous_page=page.after_key is not None
    )
