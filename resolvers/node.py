"""`node(id)`: fetch any object by its global ID, through the same loaders as its own field."""

from __future__ import annotations

import strawberry
from strawberry import Info

from resolvers import catalog
from schema.context import AppContext
from schema.relay import Node, from_global_id


async def node(info: Info[AppContext, None], id: strawberry.ID) -> Node | None:  # noqa: A002
    type_name, key = from_global_id(id)
    # One entry per Node type. Later areas add theirs here, with the ownership check in front.
    if type_name == "Sku":
        return await catalog.sku_by_key(info, key)
    return None
