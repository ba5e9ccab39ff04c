"""Relay conventions: the Node interface, opaque global IDs and keyset connections."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Annotated, Generic, TypeVar

import strawberry

from domain.errors import InvalidInput, Problem
from domain.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Page, encode_cursor, parse_key

T = TypeVar("T")
N = TypeVar("N")

# Every connection's paging arguments. `first` has no schema default, so that `last` alone is
# not a clash with it: neither given means the first 20.
First = Annotated[
    int | None,
    strawberry.argument(
        description=f"At most this many rows from the start of the range, 0 to {MAX_PAGE_SIZE} "
        f"({DEFAULT_PAGE_SIZE} when neither first nor last is given)."
    ),
]
After = Annotated[
    str | None, strawberry.argument(description="Only rows after this cursor (an edge's).")
]
Last = Annotated[
    int | None,
    strawberry.argument(
        description=f"At most this many rows from the end of the range, 0 to {MAX_PAGE_SIZE}; "
        "not with first."
    ),
]
Before = Annotated[
    str | None, strawberry.argument(description="Only rows before this cursor (an edge's).")
]


def to_global_id(type_name: str, key: int) -> strawberry.ID:
    return strawberry.ID(
        base64.urlsafe_b64encode(f"{type_name}:{key}".encode()).decode().rstrip("=")
    )


def from_global_id(global_id: str, field: str = "id") -> tuple[str, int]:
    """Decode `Type:key`; anything else is a typed INVALID_ID error, never a crash."""
    try:
        raw = base64.urlsafe_b64decode((global_id + "=" * (-len(global_id) % 4)).encode()).decode()
        type_name, _, text = raw.partition(":")
        key = parse_key(text)
        if type_name and key is not None:
            return type_name, key
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise InvalidInput(Problem("INVALID_ID", "Not an ID this API issued.", field))


def expect_global_id(global_id: str, type_name: str, field: str = "id") -> int:
    found, key = from_global_id(global_id, field)
    if found != type_name:
        raise InvalidInput(Problem("INVALID_ID", f"Expected the ID of a {type_name}.", field))
    return key


@strawberry.interface(description="An object with a globally unique, opaque ID.")
class Node:
    id: strawberry.ID


@strawberry.type(description="Where a page sits in its connection.")
class PageInfo:
    has_next_page: bool = strawberry.field(
        description="More rows follow this page: with first, within the range; with last, "
        "true when `before` was given."
    )
    has_previous_page: bool = strawberry.field(
        description="More rows precede this page: with last, within the range; with first, "
        "true when `after` was given."
    )
    start_cursor: str | None = strawberry.field(
        description="The first edge's cursor: pass it as `before` with `last` for the page "
        "before this one."
    )
    end_cursor: str | None = strawberry.field(
        description="The last edge's cursor: pass it as `after` with `first` for the next page."
    )


@strawberry.type
class Edge(Generic[T]):
    cursor: str
    node: T


@strawberry.type(
    description="A keyset-paginated list: pass `endCursor` as `after` (with `first`) for the "
    "next page, `startCursor` as `before` (with `last`) for the one before."
)
class Connection(Generic[T]):
    edges: list[Edge[T]]
    page_info: PageInfo

    @classmethod
    def from_page(cls, page: Page[N], convert: Callable[[N], T]) -> Connection[T]:
        edges = [Edge(cursor=encode_cursor(key), node=convert(item)) for key, item in page.items]
        return cls(
            edges=edges,
            page_info=PageInfo(
                has_next_page=page.has_next_page,
                has_previous_page=page.has_previous_page,
                start_cursor=edges[0].cursor if edges else None,
                end_cursor=edges[-1].cursor if edges else None,
            ),
        )
