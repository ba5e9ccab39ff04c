"""The executor's short path for plain leaf fields answers exactly as the standard path does:
values, enums, nulls, refused values and errors, and it steps aside for middleware."""

from __future__ import annotations

from enum import Enum
from typing import Any

import strawberry
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from resolvers.plain_fields import PlainFieldExecution, plain_fields
from resolvers.root import build_schema


@strawberry.enum
class Colour(Enum):
    RED = "red"
    BLUE = "blue"


@strawberry.type
class Item:
    name: str
    count: int
    ratio: float
    colour: Colour
    note: str | None
    must: str  # set to None below: a non-null field that resolves null
    private: strawberry.Private[int]

    @strawberry.field
    def doubled(self) -> int:
        return 2 * self.private


class Wrong:
    """Not an Item: its `count` is not an Int and `colour` is not a Colour."""

    name = "wrong"
    count = "many"
    ratio = 1.5
    colour = "purple"
    note = None
    must = "here"
    private = 1


@strawberry.type
class Query:
    @strawberry.field
    def items(self) -> list[Item]:
        return [
            Item(name="a", count=1, ratio=0.5, colour=Colour.RED, note=None, must="m", private=3),
            Item(name="b", count=2, ratio=2.0, colour=Colour.BLUE, note="n", must="m", private=4),
        ]

    @strawberry.field
    def broken(self) -> list[Item | None]:
        missing: Any = None
        return [
            Item(name="c", count=3, ratio=1.0, colour=Colour.RED, note=None, must=missing,
                 private=5),
            Wrong(),  # type: ignore[list-item]
        ]  # fmt: skip


QUERY = """{
  items { name count ratio colour note doubled alias: name __typename }
  broken { name must }
  wrongs: broken { count colour }
}"""


def _schema(execution: type, extensions: list[Any] | None = None) -> strawberry.Schema:
    return strawberry.Schema(
        query=Query, execution_context_class=execution, extensions=extensions or []
    )


def _run(schema: strawberry.Schema) -> tuple[Any, list[dict[str, Any]]]:
    result = schema.execute_sync(QUERY)
    errors = sorted((e.formatted for e in result.errors or []), key=lambda e: str(e["path"]))
    return result.data, errors


def test_the_short_path_answers_as_the_standard_path() -> None:
    standard = _run(_schema(StrawberryGraphQLCoreExecutionContext))
    short = _run(_schema(PlainFieldExecution))
    assert short == standard
    data, errors = short
    assert data["items"][0] == {"name": "a", "count": 1, "ratio": 0.5, "colour": "RED",
                                "note": None, "doubled": 6, "alias": "a",
                                "__typename": "Item"}  # fmt: skip
    # A null in a non-null field, and a value its scalar refuses, are reported the usual way
    # (the first error nulls the whole item, so `colour` is not reached).
    assert [e["path"] for e in errors] == [["broken", 0, "must"], ["wrongs", 1, "count"]]
    assert data["broken"] == [None, {"name": "wrong", "must": "here"}]
    assert data["wrongs"] == [{"count": 3, "colour": "RED"}, None]
    assert "Cannot return null for non-nullable field Item.must" in errors[0]["message"]


def test_only_plain_leaf_fields_take_the_short_path() -> None:
    fields = plain_fields(_schema(PlainFieldExecution)._schema)
    assert set(fields["Item"]) == {"name", "count", "ratio", "colour", "note", "must"}
    assert "Query" not in fields  # resolvers, lists and objects are executed as usual
    # The API's schema: SKU scalars qualify; fields behind a permission never do.
    api = plain_fields(build_schema()._schema)
    assert {"id", "name", "gpuModel", "status"} <= set(api["Sku"])
    assert "available" not in api["Sku"]
    assert "Query" not in api and "Mutation" not in api


def test_a_field_middleware_sees_every_field() -> None:
    seen: list[str] = []

    class Upper(SchemaExtension):
        def resolve(self, _next: Any, root: Any, info: Any, *args: Any, **kwargs: Any) -> Any:
            seen.append(info.field_name)
            value = _next(root, info, *args, **kwargs)
            return value.upper() if isinstance(value, str) else value

    data, _ = _run(_schema(PlainFieldExecution, [Upper]))
    assert data["items"][0]["name"] == "A" and "name" in seen and "count" in seen
