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

# (attribute, leaf type, the value type it returns unchanged or None), or for a plain object
# field (attribute, object type, OBJECT)
Plain = tuple[str, Any, Any]
OBJECT = object()
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
            inner = field.type.of_type if isinstance(field.type, GraphQLNonNull) else field.type
            if (
                definition is None
                or field.args
                or not getattr(field.resolve, "_is_default", False)  # Strawberry's basic field
                or definition.default_resolver is not getattr
            ):
                continue
            plain: Plain
            if is_leaf_type(inner):
                plain = (definition.python_name, inner, _UNCHANGED.get(inner))
            elif isinstance(inner, GraphQLObjectType) and _info_free(inner.is_type_of):
                plain = (definition.python_name, inner, OBJECT)
            else:
                continue  # lists, interfaces and unions: the standard path
            found.setdefault(type_.name, {})[name] = plain
    _BY_SCHEMA[schema] = found
    return found


def _info_free(is_type_of: Any) -> bool:
    """No check, or the one Strawberry makes for types with interfaces (it ignores `info`)."""
    return is_type_of is None or (
        getattr(is_type_of, "__module__", None) == GraphQLCoreConverter.__module__
        and is_type_of.__qualname__.startswith(f"{GraphQLCoreConverter.__name__}.")
    )


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


def _object(source: Any, plain: Plain) -> Any:
    """The field's object, or Undefined where the standard path must decide (a null, an
    object of another type, an exception)."""
    try:
        value = getattr(source, plain[0])
        is_type_of = plain[1].is_type_of
        if value is None or (is_type_of is not None and not is_type_of(value, None)):
            return Undefined
    except Exception:  # the standard path reports it
        return Undefined
    return value


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
                result: Any = Undefined
                if found is None:
                    pass
                elif found[2] is not OBJECT:
                    value = _value(source_value, found)
                    if value is not Undefined:
                        results[response_name] = value
                        continue
                elif (value := _object(source_value, found)) is not Undefined:
                    result = self._complete_object(
                        parent_type,
                        found[1],
                        value,
                        field_details_list,
                        Path(path, response_name, parent_type.name),
                        position_context,
                    )
                if result is Undefined:
                    field_path = Path(path, response_name, parent_type.name)
                    result = self.execute_field(
                        parent_type,
                        source_value,
                        field_details_list,
                        field_path,
                        position_context,
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

    def _complete_object(
        self,
        parent_type: GraphQLObjectType,
        object_type: GraphQLObjectType,
        value: Any,
        field_details_list: Any,
        path: Path,
        position_context: Any,
    ) -> Any:
        """What `execute_field` then `complete_value` do for an object already in hand (no
        resolve info: nothing here reads it), errors handled the same way: a null in place
        of the object, or raised on to the parent when the field is non-null."""
        return_type = parent_type.fields[field_details_list[0].node.name.value].type
        try:
            completed = self.collect_and_execute_subfields(
                object_type, field_details_list, path, value, position_context
            )
        except Exception as raw_error:
            self.handle_field_error(raw_error, return_type, field_details_list, path)
            return None
        if self.is_awaitable(completed):
            return self._settled(completed, return_type, field_details_list, path)
        return completed

    async def _settled(
        self, completed: Any, return_type: Any, field_details_list: Any, path: Path
    ) -> Any:
        try:
            return await completed
        except Exception as raw_error:
            self.handle_field_error(raw_error, return_type, field_details_list, path)
            return None
