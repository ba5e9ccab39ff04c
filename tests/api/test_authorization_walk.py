"""Authorization by walking the schema, not a hand list.

Every root field of Query and Mutation is read from its Strawberry definition: it must declare
exactly one requirement, and an operation for it is built from the GraphQL schema (required
arguments filled by type, ID arguments pointed at user A's objects). Each operation is then sent
as every kind of caller that must be refused: nobody, a junk token, user B with a token that
lacks just the needed scope, user B as a plain user, an admin token without the needed scope,
and user B's full session acting on A's objects. A field added without a declaration, or with
one that is not enforced, fails here without anyone touching this file.

Every failure is collected and reported at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncssh
import pytest
from graphql import (
    GraphQLField,
    GraphQLInputType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLScalarType,
    GraphQLSchema,
    OperationType,
    get_named_type,
    is_abstract_type,
    is_enum_type,
    is_input_object_type,
    is_leaf_type,
    is_list_type,
    is_non_null_type,
    is_required_argument,
    is_required_input_field,
)
from httpx import AsyncClient
from strawberry.permission import PermissionExtension
from strawberry.types.field import StrawberryField

from domain.identity.principal import Requirement
from domain.identity.scopes import ROLE_SCOPES, Role, Scope
from resolvers.access import NODE_TYPES
from resolvers.root import Mutation, Query, Subscription, build_schema
from schema.permissions import Access, requirement_of
from schema.relay import to_global_id
from tests.api.helpers import add_fleet_node, add_node_event_and_issue, add_skus, codes, gql
from tests.support.billing import paid_top_up, refund
from tests.support.fleet import seed_node
from tests.support.identity import (
    ALL_USER_SCOPES,
    LOG_IN,
    Account,
    Accounts,
    body,
)

ROOTS: tuple[tuple[str, type], ...] = (("query", Query), ("mutation", Mutation))
ACCESS_CODES = {"UNAUTHENTICATED", "MISSING_SCOPE", "FORBIDDEN", "SESSION_REQUIRED", "CSRF_FAILED"}
# Node types only some callers may see: an ID of one of these, owned by A, must not work for B.
GUARDED_TYPES = {name for name, node_type in NODE_TYPES.items() if not node_type.requirement.public}
ALL_SCOPES = [scope.name for scope in Scope]
SELECTION_DEPTH = 3


class Unbuildable(Exception):
    """The walk cannot make a valid operation for a field: the field is reported, not skipped."""


@dataclass(frozen=True)
class Case:
    """One operation to send: a root field, and for node(id) which type the ID points at."""

    label: str
    operation: str  # "query" or "mutation"
    field: str  # the GraphQL name, the key of the result in `data`
    requirement: Requirement  # what this operation really asks (node(id): the node type's)
    document: str
    variables: dict[str, Any]
    targets: frozenset[str]  # node types whose IDs the operation carries

    @property
    def on_guarded_objects(self) -> bool:
        return bool(self.targets & GUARDED_TYPES)


# --- Declarations -----------------------------------------------------------------------------


def declared(strawberry_field: StrawberryField) -> list[Requirement]:
    found = []
    for extension in strawberry_field.extensions:
        if isinstance(extension, PermissionExtension):
            found += [p.requirement for p in extension.permissions if isinstance(p, Access)]
    return found


def root_fields(
    roots: tuple[tuple[str, type], ...] = ROOTS,
) -> Iterator[tuple[str, StrawberryField, str]]:
    schema = build_schema()
    for operation, root in roots:
        for strawberry_field in root.__strawberry_definition__.fields:  # type: ignore[attr-defined]
            name = schema.config.name_converter.get_graphql_name(strawberry_field)
            yield operation, strawberry_field, name


def test_every_root_field_declares_exactly_one_requirement() -> None:
    schema = build_schema()
    problems = []
    seen = 0
    roots = (*ROOTS, ("subscription", Subscription))
    for operation, strawberry_field, name in root_fields(roots):
        seen += 1
        requirements = declared(strawberry_field)
        requirement = requirement_of(strawberry_field.extensions)
        if requirement is None or len(requirements) != 1:
            problems.append(f"{operation} {name}: declares {len(requirements)} requirements")
            continue
        if requirement.public and (requirement.scope or requirement.admin):
            problems.append(f"{operation} {name}: public yet asks for more: {requirement}")
        if requirement.admin and requirement.scope not in (Scope.ADMIN_READ, Scope.ADMIN_WRITE):
            problems.append(f"{operation} {name}: admin field without an admin scope")
        root_type = schema._schema.get_root_type(OperationType(operation))
        assert root_type is not None
        description = root_type.fields[name].description or ""
        if not description.endswith(requirement.summary):
            problems.append(f"{operation} {name}: description does not state {requirement.summary}")
    assert seen >= 10, "the walk found too few root fields to be walking the real schema"
    assert not problems, "\n".join(problems)


# --- Building operations from the schema ------------------------------------------------------


# Fields whose name says which object their `id` names by a shorter word than the type's:
# `cordonNode(id)` acts on a FleetNode (the GraphQL type cannot be called Node, which is the
# Relay interface).
ID_NAME_SUFFIXES = {"node": "FleetNode"}


def _id_type(arg_name: str, field_name: str, variant: str | None) -> str:
    """Which node type an ID argument names: `userId` -> User, `revokeApiToken(id)` ->
    ApiToken, `cordonNode(id)` -> FleetNode, node(id) and nodes(ids) -> the variant walked."""
    names = sorted(NODE_TYPES, key=len, reverse=True)
    if variant is not None and arg_name in ("id", "ids"):
        return variant
    if arg_name == "id":
        for name in names:
            if name.lower() in field_name.lower():
                return name
        for suffix, name in ID_NAME_SUFFIXES.items():
            if field_name.lower().endswith(suffix) and name in NODE_TYPES:
                return name
    elif arg_name.lower().endswith(("id", "ids")):  # `skuId`, `sshKeyIds`
        stem = arg_name.lower().removesuffix("s")[:-2]
        for name in names:
            if stem.endswith(name.lower()):
                return name
    raise Unbuildable(f"cannot tell which object the ID argument `{arg_name}` names")


@dataclass
class Builder:
    schema: GraphQLSchema
    ids: dict[str, str]  # node type -> a global ID of A's object of that type
    targets: set[str] = field(default_factory=set)

    def value(
        self, type_: GraphQLInputType, name: str, field_name: str, variant: str | None
    ) -> Any:
        if is_non_null_type(type_):
            return self.value(type_.of_type, name, field_name, variant)
        if is_list_type(type_):
            return [self.value(type_.of_type, name, field_name, variant)]
        if is_input_object_type(type_):
            return {
                sub: self.value(f.type, sub, field_name, variant)
                for sub, f in type_.fields.items()
                if is_required_input_field(f)
            }
        if is_enum_type(type_):
            return next(iter(type_.values))
        assert isinstance(type_, GraphQLScalarType)
        scalar = type_.name
        if scalar == "ID":
            target = _id_type(name, field_name, variant)
            if target not in self.ids:
                raise Unbuildable(f"no object of type {target} to point `{name}` at")
            self.targets.add(target)
            return self.ids[target]
        fixed: dict[str, Any] = {
            "String": "x",
            "Int": 1,
            "Float": 1.0,
            "Boolean": True,
            "DateTime": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
        }
        if scalar not in fixed:
            raise Unbuildable(f"no value for scalar {scalar} (argument `{name}`)")
        return fixed[scalar]

    def selection(self, type_: GraphQLOutputType, depth: int) -> str:
        named = get_named_type(type_)
        if is_leaf_type(named):
            return ""
        if is_abstract_type(named):
            members = self.schema.get_possible_types(named)
            parts = ["__typename"]
            for member in members:
                inner = self._fields(member, depth, members)
                if inner:
                    parts.append(f"... on {member.name} {{ {inner} }}")
            return "{ " + " ".join(parts) + " }"
        assert isinstance(named, GraphQLObjectType)
        return "{ __typename " + self._fields(named, depth, [named]) + " }"

    def _fields(self, obj: GraphQLObjectType, depth: int, siblings: list[GraphQLObjectType]) -> str:
        out = []
        for name, obj_field in obj.fields.items():
            if any(is_required_argument(a) for a in obj_field.args.values()):
                continue
            # One response name must have one type across sibling fragments (or be aliased,
            # and aliases are limited): leave out fields whose type differs between members.
            if any(
                name in s.fields and str(s.fields[name].type) != str(obj_field.type)
                for s in siblings
            ):
                continue
            if is_leaf_type(get_named_type(obj_field.type)):
                out.append(name)
            elif depth > 0:
                out.append(f"{name} {self.selection(obj_field.type, depth - 1)}")
        return " ".join(out)


def _variants(schema: GraphQLSchema, gfield: GraphQLField) -> list[str | None]:
    """node(id) and nodes(ids) return an interface: walk them once per node type."""
    named: GraphQLNamedType = get_named_type(gfield.type)
    if is_abstract_type(named) and ("id" in gfield.args or "ids" in gfield.args):
        possible = {t.name for t in schema.get_possible_types(named)}
        variants: list[str | None] = [name for name in NODE_TYPES if name in possible]
        if variants:
            return variants
    return [None]


def build_cases(ids: dict[str, str]) -> tuple[list[Case], list[str]]:
    schema: GraphQLSchema = build_schema()._schema
    cases: list[Case] = []
    problems: list[str] = []
    for operation, strawberry_field, name in root_fields():
        requirement = requirement_of(strawberry_field.extensions)
        if requirement is None:
            problems.append(f"{operation} {name}: no requirement declared")
            continue
        root_type = schema.get_root_type(OperationType(operation))
        assert root_type is not None
        gfield = root_type.fields[name]
        for variant in _variants(schema, gfield):
            builder = Builder(schema, ids)
            try:
                variables, definitions, arguments = {}, [], []
                for arg_name, arg in gfield.args.items():
                    if not is_required_argument(arg):
                        continue
                    variables[arg_name] = builder.value(arg.type, arg_name, name, variant)
                    definitions.append(f"${arg_name}: {arg.type}")
                    arguments.append(f"{arg_name}: ${arg_name}")
            except Unbuildable as exc:
                problems.append(f"{operation} {name}: {exc}")
                continue
            head = f"({', '.join(definitions)})" if definitions else ""
            args = f"({', '.join(arguments)})" if arguments else ""
            document = (
                f"{operation} Walk{head} {{ {name}{args} "
                f"{builder.selection(gfield.type, SELECTION_DEPTH)} }}"
            )
            effective = requirement
            if variant is not None and requirement.public:
                effective = NODE_TYPES[variant].requirement  # node(id) asks per type
            label = f"{operation} {name}" + (f" [{variant}]" if variant else "")
            cases.append(Case(label, operation, name, effective, document, variables,
                              frozenset(builder.targets)))  # fmt: skip
    return cases, problems


# --- Judging results --------------------------------------------------------------------------


def _show(result: dict[str, Any]) -> str:
    text = json.dumps(result)
    return text if len(text) < 400 else text[:400] + "..."


def _nothing(value: Any) -> bool:
    """No object: null, or (nodes(ids)) a list of nulls."""
    return value is None or (isinstance(value, list) and all(v is None for v in value))


def refusal(result: dict[str, Any], case: Case, code: str) -> str | None:
    """None when the field was refused with `code` and returned nothing; else what went wrong."""
    if code not in codes(result):
        return f"expected {code}, got {_show(result)}"
    data = result.get("data")
    if data is not None and not _nothing(data.get(case.field)):
        return f"refused with {code} yet returned {_show(data[case.field])}"
    return None


def not_found(result: dict[str, Any], case: Case) -> str | None:
    """None when the answer is NOT_FOUND: a typed error in the payload or a GraphQL error. A
    mutation naming objects of several kinds may say which was not found (SSH_KEY_NOT_FOUND)."""
    value = (result.get("data") or {}).get(case.field)
    if isinstance(value, dict):
        typename = str(value.get("__typename", ""))
        code = str(value.get("code"))
        if typename.endswith("Error") and (code == "NOT_FOUND" or code.endswith("_NOT_FOUND")):
            return None
        return f"expected NOT_FOUND, got {_show(result)}"
    if value is None and "NOT_FOUND" in codes(result):
        return None
    if isinstance(value, list) and _nothing(value) and not result.get("errors"):
        return None  # nodes(ids): what is not yours is null, as a missing object is
    return f"expected NOT_FOUND, got {_show(result)}"


def allowed(result: dict[str, Any]) -> str | None:
    """None when the operation ran without any GraphQL error."""
    if not result.get("errors"):
        return None
    refused = ACCESS_CODES & set(codes(result))
    return f"{'refused' if refused else 'failed'}: {_show(result)}"


def token_refusal(requirement: Requirement, holder_is_admin: bool) -> str | None:
    """The code for a token that lacks `requirement.scope` (and is no admin, unless said)."""
    if requirement.session_only:
        return "SESSION_REQUIRED"
    if requirement.admin and not holder_is_admin:
        return "FORBIDDEN"
    if requirement.scope is not None:
        return "MISSING_SCOPE"
    return None  # signed-in is all it asks: a token of any scope passes


# --- The walk ---------------------------------------------------------------------------------


@dataclass
class World:
    accounts: Accounts
    a: Account
    a_token: str
    ids: dict[str, str]
    markers: list[str]  # strings that only A's data contains
    b: Account
    admin: Account
    _tokens: dict[tuple[str, frozenset[str]], AsyncClient] = field(default_factory=dict)

    async def token_client(self, who: Account, scopes: list[str]) -> AsyncClient:
        key = (who.email, frozenset(scopes))
        if key not in self._tokens:
            secret = await who.token(scopes, name="walk")
            self._tokens[key] = await self.accounts.bearer(secret)
        return self._tokens[key]

    async def fresh_session(self, who: Account) -> Account:
        """A new session of `who`: walked mutations may end the session they run in."""
        client = await self.accounts.client()
        response = await client.post(
            "/graphql", json=body(LOG_IN, {"email": who.email, "password": who.password})
        )
        payload = response.json()["data"]["logIn"]
        assert payload["__typename"] == "SessionPayload", payload
        return Account(client, who.email, who.password, who.user_id, payload["csrfToken"])

    def leaks(self, result: dict[str, Any], sent: object = None) -> list[str]:
        """A's markers in `result`; an ID B itself `sent` is no leak when a refusal quotes it
        back (messages quote the ID the client sent), so it counts only outside messages."""
        quoted = json.dumps(sent).lower()
        text = json.dumps(result).lower()
        told = json.dumps(_without_messages(result)).lower()
        return [
            marker
            for marker in self.markers
            if marker.lower() in (told if marker.lower() in quoted else text)
        ]


def _without_messages(found: Any) -> Any:
    if isinstance(found, dict):
        return {k: _without_messages(v) for k, v in found.items() if k != "message"}
    if isinstance(found, list):
        return [_without_messages(v) for v in found]
    return found


API_TOKENS = "query { apiTokens(first: 100) { edges { node { id name status prefix } } } }"
VIEWER = "query { viewer { id email role status } }"
ADD_SSH_KEY = """mutation($key: String!) { addSshKey(input: {name: "walk-key", publicKey: $key}) {
  ... on SshKeyPayload { sshKey { id fingerprint } } } }"""
CREATE_ALLOCATION = """mutation($sku: ID!, $key: ID!) { createAllocation(input: {skuId: $sku,
  sshKeyIds: [$key], idempotencyKey: "walk"}) { __typename
  ... on AllocationPayload { allocation { id } } } }"""
AUDIT_OF = """query Events($actor: ID!) {
  auditEvents(first: 5, filter: {actorUserId: $actor}) { edges { node { id action } } } }"""


LEDGER_ENTRIES = "{ viewer { ledgerEntries(first: 1) { edges { node { id } } } } }"


async def _world(accounts: Accounts, uow: Any, localstripe: Any) -> World:
    a = await accounts.sign_up()
    a_token = await a.token(ALL_USER_SCOPES, name="walk-target")
    listed = await a.gql(API_TOKENS)
    target = next(
        e["node"]
        for e in listed["data"]["apiTokens"]["edges"]
        if e["node"]["name"] == "walk-target"
    )
    admin = await accounts.admin()
    me = await admin.gql(VIEWER)
    assert me["data"]["viewer"]["role"] == "ADMIN", me
    events = await admin.gql(AUDIT_OF, {"actor": a.user_id})
    edges = events["data"]["auditEvents"]["edges"]
    assert edges, events
    (sku,) = await add_skus(uow, 1, name="walk")
    payment = await paid_top_up(a, uow, localstripe, await accounts.client())
    refunded = await refund(admin, payment, 100)
    assert refunded["__typename"] == "RefundPayload", refunded
    fleet_node = await add_fleet_node(uow, "walk-node")
    key_line = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    ssh_key = (await a.gql(ADD_SSH_KEY, {"key": key_line}))["data"]["addSshKey"]["sshKey"]
    await seed_node(uow(), "walk-gpu", gpus=1)  # A's top-up pays for the first window
    made = await a.gql(CREATE_ALLOCATION, {"sku": to_global_id("Sku", sku.id),
                                           "key": ssh_key["id"]})  # fmt: skip
    assert made["data"]["createAllocation"]["__typename"] == "AllocationPayload", made
    allocation = made["data"]["createAllocation"]["allocation"]
    entries = (await a.gql(LEDGER_ENTRIES))["data"]["viewer"]["ledgerEntries"]["edges"]
    node_event, issue = await add_node_event_and_issue(uow, fleet_node.id)
    ids = {
        "User": a.user_id,
        "ApiToken": target["id"],
        "AuditEvent": edges[0]["node"]["id"],
        "Sku": to_global_id("Sku", sku.id),
        "Payment": payment,
        "Refund": refunded["refund"]["id"],
        "FleetNode": to_global_id("FleetNode", fleet_node.id),
        "SshKey": ssh_key["id"],
        "Allocation": allocation["id"],
        "LedgerEntry": entries[0]["node"]["id"],
        "NodeEvent": node_event,
        "ReconciliationIssue": issue,
    }
    assert set(ids) >= set(NODE_TYPES), f"give the walk an object of each node type: {NODE_TYPES}"
    b = await accounts.sign_up()
    markers = [
        a.email,
        a.user_id,
        target["id"],
        target["prefix"],
        payment,
        ids["Refund"],
        ssh_key["id"],
        ssh_key["fingerprint"],
        allocation["id"],
        ids["LedgerEntry"],
    ]
    return World(accounts, a, a_token, ids, markers, b, admin)


async def _check_callers(world: World, case: Case) -> list[str]:
    """Everyone who must be refused, by credentials alone (nothing here can have effects)."""
    problems: list[str] = []
    r = case.requirement

    def expect(who: str, problem: str | None) -> None:
        if problem:
            problems.append(f"{case.label}: {who}: {problem}")

    anonymous = await world.accounts.client()
    junk = await world.accounts.bearer("gpc_" + "0" * 40)
    if r.public:
        result = await gql(anonymous, case.document, case.variables)
        expect("anonymous (public field)", allowed(result) or (
            None if (result.get("data") or {}).get(case.field) is not None
            else f"no data: {_show(result)}"))  # fmt: skip
        return problems

    for who, client in (("anonymous", anonymous), ("junk bearer token", junk)):
        expect(who, refusal(await gql(client, case.document, case.variables), case,
                            "UNAUTHENTICATED"))  # fmt: skip

    # B's token with every user scope except the one needed.
    lacking = [s for s in ALL_USER_SCOPES if r.scope is None or s != r.scope.name]
    code = token_refusal(r, holder_is_admin=False)
    if code is not None:
        client = await world.token_client(world.b, lacking)
        expect(f"user B token {sorted(lacking)}",
               refusal(await gql(client, case.document, case.variables), case, code))  # fmt: skip
    if r.admin or r.session_only:
        # Even every scope a user can hold does not make a token an admin or a session.
        client = await world.token_client(world.b, ALL_USER_SCOPES)
        code = "SESSION_REQUIRED" if r.session_only else "FORBIDDEN"
        expect("user B token with all user scopes",
               refusal(await gql(client, case.document, case.variables), case, code))  # fmt: skip
    if r.admin and r.scope is not None:
        lacking_admin = [s for s in ALL_SCOPES if s != r.scope.name]
        client = await world.token_client(world.admin, lacking_admin)
        code = token_refusal(r, holder_is_admin=True) or "MISSING_SCOPE"
        expect(f"admin token without {r.scope.name}",
               refusal(await gql(client, case.document, case.variables), case, code))  # fmt: skip

    # Positive control for queries: a caller who meets the requirement is not refused (so the
    # refusals above are about the credential, not a broken operation).
    if case.operation == "query" and not r.session_only:
        holder = world.admin if r.admin else world.a
        scopes = ALL_SCOPES if r.admin else ALL_USER_SCOPES
        client = await world.token_client(holder, scopes)
        expect("a caller meeting the requirement",
               allowed(await gql(client, case.document, case.variables)))  # fmt: skip
    return problems


async def _check_user_b_session(world: World, case: Case) -> list[str]:
    """User B signed in for real (cookie + CSRF) and acting on A's objects."""
    problems: list[str] = []
    r = case.requirement
    b = await world.fresh_session(world.b)

    if case.operation == "mutation":
        result = await b.gql(case.document, case.variables, csrf=False)
        if problem := refusal(result, case, "CSRF_FAILED"):
            problems.append(f"{case.label}: user B session without CSRF header: {problem}")

    result = await b.gql(case.document, case.variables)
    if r.admin:
        problem = refusal(result, case, "FORBIDDEN")
    elif r.public or not case.on_guarded_objects:
        problem = allowed(result)
    else:
        problem = not_found(result, case)
    if problem:
        problems.append(f"{case.label}: user B session: {problem}")
    if leaked := world.leaks(result, case.variables):
        problems.append(f"{case.label}: user B session saw A's data {leaked}: {_show(result)}")
    return problems


async def _check_a_unchanged(world: World) -> list[str]:
    problems = []
    a_by_token = await world.accounts.bearer(world.a_token)
    viewer = await gql(a_by_token, VIEWER)
    expected = {"id": world.a.user_id, "email": world.a.email.lower(), "role": "USER",
                "status": "ACTIVE"}  # fmt: skip
    if (viewer.get("data") or {}).get("viewer") != expected:
        problems.append(f"A's token or account changed: {_show(viewer)}")
    listed = await world.a.gql(API_TOKENS)
    statuses = {e["node"]["id"]: e["node"]["status"]
                for e in (listed.get("data") or {}).get("apiTokens", {}).get("edges", [])}  # fmt: skip
    if statuses.get(world.ids["ApiToken"]) != "ACTIVE":
        problems.append(f"A's session or token changed: {_show(listed)}")
    return problems


async def test_walk_every_root_field_refuses_whoever_must_be_refused(
    accounts, uow, localstripe
) -> None:
    world = await _world(accounts, uow, localstripe)
    cases, problems = build_cases(world.ids)

    # The walk is not vacuous: every root field gave at least one operation, and every kind of
    # requirement and every guarded node type was met.
    walked = {c.field for c in cases}
    every = {name for _, _, name in root_fields()}
    assert walked == every, f"no operation built for {every - walked}: {problems}"
    requirements = [c.requirement for c in cases]
    assert any(r.public for r in requirements) and any(r.admin for r in requirements)
    assert any(r.session_only for r in requirements)
    assert any(r.scope and not r.admin and not r.session_only for r in requirements)
    assert {t for c in cases for t in c.targets} >= GUARDED_TYPES

    for case in cases:
        problems += await _check_callers(world, case)
    for case in cases:
        problems += await _check_user_b_session(world, case)
    problems += await _check_a_unchanged(world)
    assert not problems, f"{len(problems)} authorization failure(s):\n" + "\n".join(problems)


def test_a_field_without_a_declaration_would_fail_the_walk() -> None:
    """The walk's own tripwire: an undeclared field is reported, not silently passed."""
    import strawberry

    @strawberry.type
    class Sneaky:
        @strawberry.field
        def secret(self) -> str:
            return "x"

    (sneaky,) = Sneaky.__strawberry_definition__.fields  # type: ignore[attr-defined]
    assert requirement_of(sneaky.extensions) is None
    assert declared(sneaky) == []


# --- node(id) on owned types ------------------------------------------------------------------

NODE = """query Node($id: ID!) { node(id: $id) { __typename id
  ... on User { email } ... on ApiToken { name prefix } ... on AuditEvent { action } } }"""


@pytest.mark.parametrize(
    "type_name", ["User", "ApiToken", "AuditEvent", "Payment", "Refund", "SshKey", "Allocation"]
)
async def test_node_shows_owned_objects_to_owner_and_admin_only(
    accounts, uow, localstripe, type_name
) -> None:
    world = await _world(accounts, uow, localstripe)
    gid = world.ids[type_name]
    requirement = NODE_TYPES[type_name].requirement

    as_owner = await world.a.gql(NODE, {"id": gid})
    if requirement.admin:  # audit events are for administrators only, even one's own
        assert codes(as_owner) == ["FORBIDDEN"], as_owner
        assert as_owner["data"] == {"node": None}
    else:
        assert "errors" not in as_owner, as_owner
        assert as_owner["data"]["node"]["id"] == gid
        assert as_owner["data"]["node"]["__typename"] == type_name

    b_token = await world.token_client(world.b, ALL_USER_SCOPES)
    for who in (world.b, b_token):
        as_b = await (who.gql(NODE, {"id": gid}) if isinstance(who, Account)
                      else gql(who, NODE, {"id": gid}))  # fmt: skip
        assert codes(as_b) == ["FORBIDDEN" if requirement.admin else "NOT_FOUND"], as_b
        assert as_b["data"] == {"node": None}
        assert not world.leaks(as_b), as_b

    # A missing object answers exactly as another's does, so IDs cannot be probed.
    missing = to_global_id(type_name, 10**12)
    as_b_missing = await world.b.gql(NODE, {"id": missing})
    as_b_other = await world.b.gql(NODE, {"id": gid})
    assert [e["message"] for e in as_b_missing["errors"]] == [
        e["message"] for e in as_b_other["errors"]
    ]

    as_admin = await world.admin.gql(NODE, {"id": gid})
    assert "errors" not in as_admin, as_admin
    assert as_admin["data"]["node"]["id"] == gid
    assert as_admin["data"]["node"]["__typename"] == type_name

    # An admin token without admin:read is an ordinary caller for others' objects.
    narrow = await world.token_client(world.admin, [s for s in ALL_SCOPES if s != "ADMIN_READ"])
    as_narrow = await gql(narrow, NODE, {"id": gid})
    assert as_narrow["data"] == {"node": None}
    assert codes(as_narrow) == ["MISSING_SCOPE" if requirement.admin else "NOT_FOUND"], as_narrow


def test_user_scopes_are_the_role_scopes_the_walk_assumes() -> None:
    assert {Scope[s] for s in ALL_USER_SCOPES} == ROLE_SCOPES[Role.USER]
    assert set(ALL_SCOPES) == {s.name for s in ROLE_SCOPES[Role.ADMIN]}
