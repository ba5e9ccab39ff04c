"""A short path through the executor for plain leaf fields (an attribute read, then a scalar).

Most of a page's fields are scalars read straight off an object: 50 SKUs are ~550 of them.
For each, graphql-core builds a resolve info (Strawberry's own subclass), calls Strawberry's
basic-field wrapper, then walks `complete_value` down to `coerce_output_value`: about 3 µs a
field, most of an executed read's CPU. A plain field needs none of that when its value is
there: read the attribute and coerce it. Anything else (a null, a value the scalar refuses, an
exception) takes the standard path, which re-reads the attribute (a plain read has no side
effect) and reports it exactly as before. Only fields Strawberry itself marks as default
(no resolver, no permission or other field extension, no arguments) qualify, and none while an
extension resolves fields as middleware (it must see every field).
"""

from __future__ import annotations

from typing import Any
from weakref import WeakKeyDictionary

from graphql import (
    GraphQLLeafType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    Undefined,
    is_leaf_type,
)
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import GraphQLCoreConverter

# type name -> field name -> (attribute, leaf type); built once per schema.
PlainFields = dict[str, dict[str, tuple[str, GraphQLLeafType]]]
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
            found.setdefault(type_.name, {})[name] = (definition.python_name, leaf)
    _BY_SCHEMA[schema] = found
    return found


class PlainFieldExecution(StrawberryGraphQLCoreExecutionContext):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        manager = self.middleware_manager
        middleware = manager is not None and bool(manager.middlewares)
        self._plain: PlainFields = {} if middleware else plain_fields(self.schema)

    def execute_field(
        self,
        parent_type: GraphQLObjectType,
        source: Any,
        field_details_list: Any,
        path: Any,
        position_context: Any,
    ) -> Any:
        fields = self._plain.get(parent_type.name)
        if fields is not None:
            plain = fields.get(field_details_list[0].node.name.value)
            if plain is not None:
                try:
                    value = getattr(source, plain[0])
                    if value is not None:
                        coerced = plain[1].coerce_output_value(value)
                        if coerced is not None and coerced is not Undefined:
                            return coerced
                except Exception:  # noqa: S110 - the standard path reports it
                    pass
        return super().execute_field(
            parent_type, source, field_details_list, path, position_context
        )
