"""What the domain's references ("allocation:8", an audit row's ("user", "3")) are to clients.

The domain names what a ledger transfer or an audit row is about by its own kind and database
id. A client knows objects by global ID, so the edge translates: a kind this API has a type for
becomes that type's global ID (`node(id:)` fetches it); anything else has no ID to give.
"""

from __future__ import annotations

import strawberry

from domain.errors import InvalidInput
from domain.pagination import parse_key
from schema.relay import from_global_id, to_global_id

# The domain's kind -> the GraphQL type whose global ID names it.
TYPE_OF_KIND = {
    "allocation": "Allocation",
    "api_token": "ApiToken",
    "node": "FleetNode",
    "payment": "Payment",
    "refund": "Refund",
    "sku": "Sku",
    "ssh_key": "SshKey",
    "user": "User",
}


def global_reference(kind: str | None, key: object) -> strawberry.ID | None:
    """The global ID of the object of `kind` and database id `key`; None when this API has no
    type for the kind (or the key is not a database id)."""
    type_name = None if kind is None else TYPE_OF_KIND.get(kind)
    number = parse_key(str(key)) if type_name is not None and key is not None else None
    return None if type_name is None or number is None else to_global_id(type_name, number)


def reference_id(reference: str | None) -> strawberry.ID | None:
    """A ledger reference ("allocation:8", "payment:12") as the global ID of its object."""
    if reference is None:
        return None
    kind, _, key = reference.partition(":")
    return global_reference(kind, key)


def domain_reference(kind: str | None, sent: str) -> tuple[str | None, str]:
    """What a client's (kind, id) filter means to the domain: a global ID becomes the kind and
    database id it names; anything else (a session id, an id of a kind with no type) is kept."""
    try:
        type_name, key = from_global_id(sent)
    except InvalidInput:
        return kind, sent
    found = next((k for k, t in TYPE_OF_KIND.items() if t == type_name), None)
    if found is None or (kind is not None and kind != found):
        return kind, sent  # not one of ours for this kind: matches nothing, as any unknown id
    return found, str(key)
