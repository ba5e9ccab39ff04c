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
    """Fetch one page of the list ordered by `id_column` (newest first when `descending`), one
    row extra to learn whether more follow. A backward page (`last`) reads the range from its
    end, in the opposite order, and is turned back into list order here."""
    if page.after_key is not None:
        stmt = stmt.where(id_column < page.after_key if descending else id_column > page.after_key)
    if page.before_key is not None:
        stmt = stmt.where(
            id_column > page.before_key if descending else id_column < page.before_key
        )
    scan_descending = descending != page.backward
    stmt = stmt.order_by(id_column.desc() if scan_descending else id_column).limit(page.first + 1)
    return page_of((await conn.execute(stmt)).all(), page, convert)


def page_of(rows: Sequence[Any], page: PageRequest, convert: Callable[[Any], T]) -> Page[T]:
    """The page from up to `page.first + 1` rows in scan order (an extra one: more follow); a
    backward page was scanned from its end and is turned back into list order."""
    items = [(row.id, convert(row)) for row in rows[: page.first]]
    more = len(rows) > page.first
    if page.backward:
        items.reverse()
        # Rows past `before` exist when the client had a cursor there (the spec lets a server
        # answer what it can tell cheaply); rows before this page are the extra one read.
        return Page(items, has_next_page=page.before_key is not None, has_previous_page=more)
    return Page(items, has_next_page=more, has_previous_page=page.after_key is not None)
