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


@strawberry.interface
class Shape:
    sides: int


@strawberry.type
class Inner(Shape):  # an interface: Strawberry checks the object's type (is_type_of)
    label: str


@strawberry.type
class Item:
    name: str
    count: int
    ratio: float
    colour: Colour
    note: str | None
    must: str  # set to None below: a non-null field that resolves null
    private: strawberry.Private[int]
    inner: Inner
    maybe: Inner | None = None

    @strawberry.field
    def doubled(self) -> int:
        return 2 * self.private


class Wrong:
    """Not an Item: no value but `name` and `must` is what its scalar can represent."""

    name = "wrong"
    count = 2**31  # beyond GraphQL's 32-bit Int
    ratio = float("inf")
    colour = "purple"
    note = None
    must = "here"
    private = 1
    inner = "not an Inner"
    maybe = Inner(sides=3, label=None)  # type: ignore[arg-type]  # null in a non-null field


@strawberry.type
class Query:
    @strawberry.field
    def items(self) -> list[Item]:
        return [
            Item(
                name="a",
                count=1,
                ratio=0.5,
                colour=Colour.RED,
                note=None,
                must="m",
                private=3,
                inner=Inner(sides=3, label="x"),
                maybe=Inner(sides=4, label="y"),
            ),
            Item(
                name="b",
                count=2,
                ratio=2.0,
                colour=Colour.BLUE,
                note="n",
                must="m",
                private=4,
                inner=Inner(sides=5, label="z"),
            ),
        ]

    @strawberry.field
    def broken(self) -> list[Item | None]:
        missing: Any = None
        return [
            Item(
                name="c",
                count=3,
                ratio=1.0,
                colour=Colour.RED,
                note=None,
                must=missing,
                private=5,
                inner=Inner(sides=1, label="w"),
            ),
            Wrong(),  # type: ignore[list-item]
        ]


QUERY = """{
  items { name count ratio colour note doubled alias: name __typename }
  broken { name must }
  wrongs: broken { count }
  ratios: broken { ratio }
  colours: broken { colour }
  strings: items { count: name ratio: name }
  objects: items { inner { sides label } maybe { label } again: inner { sides } }
  inners: broken { inner { label } }
  maybes: broken { maybe { label } }
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
    assert data["items"][0] == {
        "name": "a",
        "count": 1,
        "ratio": 0.5,
        "colour": "RED",
        "note": None,
        "doubled": 6,
        "alias": "a",
        "__typename": "Item",
    }
    # A null in a non-null field, and values their scalars refuse, are reported the usual way.
    assert [e["path"] for e in errors] == [
        ["broken", 0, "must"],
        ["colours", 1, "colour"],
        ["inners", 1, "inner"],  # not an Inner: the type check still runs
        ["maybes", 1, "maybe", "label"],  # an error inside a plain object field
        ["ratios", 1, "ratio"],
        ["wrongs", 1, "count"],
    ]
    assert data["broken"] == [None, {"name": "wrong", "must": "here"}]
    assert data["wrongs"] == [{"count": 3}, None] and data["colours"] == [{"colour": "RED"}, None]
    assert data["strings"][1] == {"count": "b", "ratio": "b"}  # aliases name the response keys
    assert data["objects"] == [
        {"inner": {"sides": 3, "label": "x"}, "maybe": {"label": "y"}, "again": {"sides": 3}},
        {"inner": {"sides": 5, "label": "z"}, "maybe": None, "again": {"sides": 5}},
    ]
    # A non-null object's error nulls its parent; a nullable one's nulls only itself.
    assert data["inners"] == [{"inner": {"label": "w"}}, None]
    assert data["maybes"] == [{"maybe": None}, {"maybe": None}]
    assert "Cannot return null for non-nullable field Item.must" in errors[0]["message"]


def test_only_plain_fields_take_the_short_path() -> None:
    fields = plain_fields(_schema(PlainFieldExecution)._schema)
    assert set(fields["Item"]) == {
        "name",
        "count",
        "ratio",
        "colour",
        "note",
        "must",
        "inner",
        "maybe",
    }
    assert "Query" not in fields  # resolvers, lists and objects are executed as usual
    # The API's schema: SKU scalars qualify; fields behind a permission never do.
    api = plain_fields(build_schema()._schema)
    assert {"id", "name", "gpuModel", "status", "hourlyPrice"} <= set(api["Sku"])
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
