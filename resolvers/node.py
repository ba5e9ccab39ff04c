"""`node(id)`: fetch any object by its global ID, through the one ownership check."""

from __future__ import annotations

import strawberry
from strawberry import Info

from resolvers.access import fetch_node
from schema.context import AppContext
from schema.relay import Node, from_global_id


async def node(info: Info[AppContext, None], id: strawberry.ID) -> Node | None:  # noqa: A002
    type_name, key = from_global_id(id)
    found: Node | None = await fetch_node(info, type_name, key)
    return found
