"""`node(id)` and `nodes(ids)`: fetch any object by its global ID, through the one ownership
check."""

from __future__ import annotations

import asyncio
from typing import Any

import strawberry
from strawberry import Info

from domain.errors import DomainError, InvalidInput, Problem
from resolvers.access import fetch_node, load_visible
from schema.context import AppContext
from schema.relay import Node, from_global_id

MAX_NODE_IDS = 100  # as many as one page of a connection


async def node(info: Info[AppContext, None], id: strawberry.ID) -> Node | None:  # noqa: A002
    type_name, key = from_global_id(id)
    found: Node | None = await fetch_node(info, type_name, key)
    return found


async def nodes(info: Info[AppContext, None], ids: list[strawberry.ID]) -> list[Node | None]:
    """One entry per ID, in order. An object that does not exist or is not the caller's is
    null, as alike as node(id) makes them; an ID that is malformed, or of a type the caller may
    not ask for, is null with its own error at its index (an exception returned as a list item
    becomes that item's located error). Lookups of one type share one query (dataloaders)."""
    if len(ids) > MAX_NODE_IDS:
        raise InvalidInput(
            Problem("TOO_MANY_IDS", f"Ask for at most {MAX_NODE_IDS} IDs at once.", "ids")
        )

    async def one(global_id: str) -> Any:
        try:
            type_name, key = from_global_id(global_id, "ids")
            return await load_visible(info, type_name, key)
        except DomainError as exc:
            return exc

    return list(await asyncio.gather(*(one(global_id) for global_id in ids)))
