"""Small helpers for talking GraphQL over HTTP in tests."""

from __future__ import annotations

import uuid
from typing import Any

import asyncssh
from httpx import AsyncClient

from domain.catalog import services
from tests.support.catalog import make_spec


async def gql(client: AsyncClient, query: str, variables: dict[str, Any] | None = None,
              operation: str | None = None) -> dict[str, Any]:  # fmt: skip
    body: dict[str, Any] = {"query": query, "variables": variables or {}}
    if operation:
        body["operationName"] = operation
    response = await client.post("/graphql", json=body)
    assert response.status_code in (200, 400), response.text
    assert "Traceback" not in response.text
    return response.json()  # type: ignore[no-any-return]


async def add_skus(uow: Any, count: int, **overrides: Any) -> list[Any]:
    made = []
    for i in range(count):
        values: dict[str, Any] = {"gpu_model": "H200", "gpu_count": 1 + i % 8, "region": "eu-west",
                                  "hourly_price_minor": 100 + i, **overrides}  # fmt: skip
        prefix = values.pop("name", "sku")
        name = f"{prefix}-{i}" if "name" in overrides else f"{prefix}-{i:03d}"
        made.append(await services.add_sku(uow(), make_spec(name, **values)))
    return made


async def add_fleet_node(uow: Any, name: str, *, port: int = 2, region: str = "eu-west") -> Any:
    """A node stored as registration leaves it (BOOTSTRAPPING, CA login, nothing sealed),
    straight through the repository: for tests that need a node, not registration. It points
    at a closed loopback port, so a worker of a later test that looks at it fails at once."""
    from datetime import UTC, datetime

    from domain.fleet.nodes import NodeAuth
    from domain.fleet.records import NewNode

    async with uow() as tx:
        node = await tx.nodes.add(NewNode(
            name=name, host="127.0.0.1", port=port, ssh_user="gpucloud",
            auth=NodeAuth.CA, credential_secret_id=None, host_key=None, region=region,
            labels={}, next_probe_at=datetime.now(UTC)))  # fmt: skip
        await tx.commit()
    return node


async def add_node_event_and_issue(uow: Any, fleet_node_id: int) -> tuple[str, str]:
    """Global IDs of a node event and a reconciliation issue, written through the repositories
    as the fleet and reconciliation write them."""
    from domain.fleet.records import NewNodeEvent, NodeEventKind
    from domain.pagination import PageRequest
    from domain.payments.findings import Finding, IssueKind
    from schema.relay import to_global_id

    async with uow() as tx:
        event = await tx.nodes.add_event(
            NewNodeEvent(node_id=fleet_node_id, kind=NodeEventKind.REGISTERED, message="test")
        )
        await tx.stripe.flag(Finding(IssueKind.UNKNOWN_PAYMENT, f"pi_{uuid.uuid4().hex}", "test"))
        await tx.commit()
    async with uow() as tx:
        ((issue_id, _),) = (await tx.stripe.issues(PageRequest(1, None))).items
    return to_global_id("NodeEvent", event.id), to_global_id("ReconciliationIssue", issue_id)


def codes(result: dict[str, Any]) -> list[str]:
    return [e.get("extensions", {}).get("code") for e in result.get("errors", [])]


GRANT_CREDIT = """mutation Grant($user: ID!, $amount: Int!, $key: String!) {
  grantCredit(input: {userId: $user, amount: $amount, currency: "USD", reason: "test funds",
                      idempotencyKey: $key}) {
    __typename ... on CreditPayload { wallet { balance { amountMinor } } } ... on BillingError { code } } }"""
ADD_SSH_KEY = """mutation AddKey($name: String!, $key: String!) {
  addSshKey(input: {name: $name, publicKey: $key}) {
    __typename ... on SshKeyPayload { sshKey { id fingerprint } } ... on SshKeyError { code } } }"""


async def grant_credit(admin: Any, user_gid: str, amount: int) -> None:
    """Fund a wallet (USD) as an administrator, as support would."""
    result = await admin.gql(GRANT_CREDIT, {"user": user_gid, "amount": amount,
                                            "key": f"test-{uuid.uuid4()}"})  # fmt: skip
    assert result["data"]["grantCredit"]["__typename"] == "CreditPayload", result


async def add_ssh_key(account: Any, name: str = "laptop") -> dict[str, str]:
    """A fresh Ed25519 key added to the account: its `id` and `fingerprint`."""
    line = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    result = await account.gql(ADD_SSH_KEY, {"name": name, "key": line})
    payload = result["data"]["addSshKey"]
    assert payload["__typename"] == "SshKeyPayload", result
    return payload["sshKey"]  # type: ignore[no-any-return]
