"""A short path through the executor for plain leaf fields (an attribute read, then a scalar).

Most of a page's fields are scalars read straight off an object: 50 SKUs are ~550 of them.
For each, graphql-core makes a response path, builds a resolve info (Strawberry's subclass),
calls Strawberry's basic-field wrapper, walks `complete_value` down to `coerce_output_value`
and checks whether the result is awaitable: about 3 µs a field, most of an executed read's
CPU. A plain field needs none of that when its value is there: read the attribute and coerce
it (a built-in scalar's value of the exact type is returned unchanged, as its coercion would).
Anything else (a null, a value the scalar refuses, an exception) takes the standard path, which
re-reads the attribute (a plain read has no side effect) and reports it exactly as before.
Only fields Strawberry itself marks as default (no resolver, no permission or other field
extension, no arguments) qualify, and none while an extension resolves fields as middleware
(it must see every field). tests/unit/test_plain_fields.py compares both paths.
"""

from __future__ import annotations

from math import isfinite
from typing import Any
from weakref import WeakKeyDictionary

from graphql import (
    GraphQLBoolean,
    GraphQLFloat,
    GraphQLID,
    GraphQLInt,
    GraphQLLeafType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLString,
    Undefined,
    is_leaf_type,
)
from graphql.pyutils import Path, gather_with_cancel
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import GraphQLCoreConverter

# A built-in scalar's output coercion returns a value of this exact type unchanged (an Int
# within 32 bits, a finite Float): such a value needs no call to the coercion.
_UNCHANGED: dict[Any, type] = {
    GraphQLString: str,
    GraphQLID: str,
    GraphQLBoolean: bool,
    GraphQLInt: int,
    GraphQLFloat: float,
}
_INT_RANGE = range(-(2**31), 2**31)

# (attribute, leaf type, the value type it returns unchanged or None)
Plain = tuple[str, GraphQLLeafType, type | None]
# type name -> field name -> Plain; built once per schema.
PlainFields = dict[str, dict[str, Plain]]
_BY_SCHEMA: WeakKeyDictionary[GraphQLSchema, PlainFields] = WeakKeyDictionary()


def plain_fields(schema: GraphQLSchema) -> PlainFields:
    found = _BY_SCHEMA.get(schema)
    if found is not None:
        return found
    found = {}
    for type_ in schema.type_map.values():
        if not isinstance(type_, GraphQLObjectType) or type_.name.startswith("__"):
            continue
        for name, field in type_.fields.items():
            definition = (field.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
            leaf = field.type.of_type if isinstance(field.type, GraphQLNonNull) else field.type
            if (
                definition is None
                or field.args
                or not getattr(field.resolve, "_is_default", False)  # Strawberry's basic field
                or definition.default_resolver is not getattr
                or not is_leaf_type(leaf)
            ):
                continue
            plain = (definition.python_name, leaf, _UNCHANGED.get(leaf))
            found.setdefault(type_.name, {})[name] = plain
    _BY_SCHEMA[schema] = found
    return found


def _value(source: Any, plain: Plain) -> Any:
    """The field's completed value, or Undefined where the standard path must decide."""
    attribute, leaf, unchanged = plain
    try:
        value = getattr(source, attribute)
        kind = type(value)
        if kind is unchanged:
            if (kind is int and value not in _INT_RANGE) or (kind is float and not isfinite(value)):
                return Undefined
            return value
        if value is None:
            return Undefined  # null in a non-null field is an error; the standard path says so
        coerced = leaf.coerce_output_value(value)
    except Exception:  # the standard path reports it
        return Undefined
    return Undefined if coerced is None else coerced


async def _gathered(results: dict[str, Any], pending: list[str]) -> dict[str, Any]:
    if len(pending) == 1:
        results[pending[0]] = await results[pending[0]]
    else:
        values = await gather_with_cancel(*(results[name] for name in pending))
        results.update(zip(pending, values, strict=True))
    return results


class PlainFieldExecution(StrawberryGraphQLCoreExecutionContext):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        manager = self.middleware_manager
        middleware = manager is not None and bool(manager.middlewares)
        self._plain: PlainFields = {} if middleware else plain_fields(self.schema)

    def execute_fields(
        self,
        parent_type: GraphQLObjectType,
        source_value: Any,
        path: Path | None,
        grouped_field_set: Any,
        position_context: Any,
    ) -> Any:
        """graphql-core's `execute_fields`, with plain fields completed in place: no path,
        resolve info or awaitable check for them. The rest is as graphql-core does it."""
        plain = self._plain.get(parent_type.name)
        if plain is None:
            return super().execute_fields(
                parent_type, source_value, path, grouped_field_set, position_context
            )
        results: dict[str, Any] = {}
        pending: list[str] = []
        is_awaitable = self.is_awaitable
        try:
            for response_name, field_details_list in grouped_field_set.items():
                found = plain.get(field_details_list[0].node.name.value)
                if found is not None:
                    value = _value(source_value, found)
                    if value is not Undefined:
                        results[response_name] = value
                        continue
                field_path = Path(path, response_name, parent_type.name)
                result = self.execute_field(
                    parent_type, source_value, field_details_list, field_path, position_context
                )
                if result is not Undefined:
                    results[response_name] = result
                    if is_awaitable(result):
                        pending.append(response_name)
        except Exception:
            if pending:  # settle what other fields started: they may fail too
                self.settle_in_background([results[name] for name in pending])
            raise
        return _gathered(results, pending) if pending else results
