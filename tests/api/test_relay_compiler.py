"""The exported schema as Relay sees it: the pinned, unmodified `relay-compiler` (installed by
`make node`) compiles the operations a Relay app writes against `schema/schema.graphql`, in a
directory of its own with a relay.config.json, and must pass without an error or a warning.

The operations cover what Relay asks of a server: `@connection` pagination both ways
(`first`/`after` on the catalog, `last`/`before` on allocations) made `@refetchable` from Query,
a `@connection` on a Node's own field refetched through `node(id:)`, a `@refetchable` fragment on
every type that implements Node, `nodes(ids:)`, subscriptions, and mutations returning a union.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from graphql import build_schema

from tests.conftest import REPO

COMPILER = REPO / "node_modules" / ".bin" / "relay-compiler"
SCHEMA = REPO / "schema" / "schema.graphql"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

APP = """
import { graphql } from "relay-runtime";

export const catalog = graphql`
  fragment AppCatalog_query on Query
  @refetchable(queryName: "AppCatalogPaginationQuery")
  @argumentDefinitions(count: { type: "Int", defaultValue: 20 }, cursor: { type: "String" }) {
    skus(first: $count, after: $cursor) @connection(key: "AppCatalog_skus") {
      edges { node { id name gpuModel gpuCount hourlyPrice { amountMinor currency } ...AppSku } }
    }
  }
`;

export const recentAllocations = graphql`
  fragment AppRecentAllocations_query on Query
  @refetchable(queryName: "AppRecentAllocationsPaginationQuery")
  @argumentDefinitions(count: { type: "Int", defaultValue: 10 }, cursor: { type: "String" }) {
    allocations(last: $count, before: $cursor) @connection(key: "AppRecentAllocations_allocations") {
      edges { node { id state createdAt sku { id name } } }
    }
  }
`;

export const ledger = graphql`
  fragment AppLedger_user on User
  @refetchable(queryName: "AppLedgerPaginationQuery")
  @argumentDefinitions(count: { type: "Int", defaultValue: 20 }, cursor: { type: "String" }) {
    ledgerEntries(first: $count, after: $cursor) @connection(key: "AppLedger_ledgerEntries") {
      edges { node { id amount { amountMinor currency } code createdAt } }
    }
  }
`;

export const notifications = graphql`
  fragment AppNotifications_query on Query
  @refetchable(queryName: "AppNotificationsPaginationQuery")
  @argumentDefinitions(count: { type: "Int", defaultValue: 20 }, cursor: { type: "String" }) {
    notifications(first: $count, after: $cursor) @connection(key: "AppNotifications_notifications") {
      edges { node { cursor type createdAt readAt } }
    }
  }
`;

export const sku = graphql`
  fragment AppSku on Sku @refetchable(queryName: "AppSkuRefetchQuery") {
    id name status available
  }
`;

export const page = graphql`
  query AppPageQuery {
    ...AppCatalog_query
    ...AppRecentAllocations_query
    ...AppNotifications_query
    viewer { id email ...AppLedger_user }
  }
`;

export const some = graphql`
  query AppNodesQuery($ids: [ID!]!) {
    nodes(ids: $ids) { __typename id ... on Sku { ...AppSku } }
  }
`;

export const allocationUpdated = graphql`
  subscription AppAllocationUpdatedSubscription($id: ID!) {
    allocationUpdated(id: $id) { id state version }
  }
`;

export const told = graphql`
  subscription AppNotificationsSubscription($after: String) {
    notifications(after: $after) { cursor type createdAt }
  }
`;

export const stop = graphql`
  mutation AppStopAllocationMutation($id: ID!) {
    stopAllocation(id: $id) {
      __typename
      ... on AllocationPayload { allocation { id state stopReason } }
      ... on AllocationError { code message field problems { code field } }
    }
  }
`;

export const addKey = graphql`
  mutation AppAddSshKeyMutation($input: AddSshKeyInput!) {
    addSshKey(input: $input) {
      __typename
      ... on SshKeyPayload { sshKey { id fingerprint } }
      ... on SshKeyError { code message field }
    }
  }
`;
"""


def _node_types() -> list[str]:
    schema = build_schema(SCHEMA.read_text())
    node = schema.type_map["Node"]
    return sorted(t.name for t in schema.get_possible_types(node))  # type: ignore[arg-type]


def _every_node_refetchable() -> str:
    """One @refetchable fragment per Node type: each must be refetchable through node(id:)."""
    parts = ['import { graphql } from "relay-runtime";']
    for name in _node_types():
        parts.append(
            f"export const f{name} = graphql`\n  fragment Nodes{name} on {name} "
            f'@refetchable(queryName: "Nodes{name}RefetchQuery") {{ id }}\n`;'
        )
    return "\n".join(parts) + "\n"


def compile_app(root: Path, sources: dict[str, str]) -> tuple[int, str]:
    assert COMPILER.exists(), f"{COMPILER} is missing: run `make node`"
    (root / "src").mkdir()
    for name, text in sources.items():
        (root / "src" / name).write_text(text)
    config = {"src": "./src", "schema": str(SCHEMA), "language": "typescript"}
    (root / "relay.config.json").write_text(json.dumps(config))
    done = subprocess.run(
        [str(COMPILER)], cwd=root, capture_output=True, text=True, timeout=120, check=False
    )
    return done.returncode, _ANSI.sub("", done.stdout + done.stderr)


def test_relay_compiles_a_relay_apps_operations_without_warnings(tmp_path: Path) -> None:
    code, output = compile_app(tmp_path, {"App.ts": APP, "Nodes.ts": _every_node_refetchable()})
    assert code == 0, output
    assert "Compilation completed" in output, output
    assert not re.search(r"warn|error", output, re.IGNORECASE), output
    generated = {p.name for p in (tmp_path / "src" / "__generated__").iterdir()}
    for operation in (
        "AppCatalogPaginationQuery",
        "AppRecentAllocationsPaginationQuery",
        "AppLedgerPaginationQuery",
        "AppNotificationsPaginationQuery",
        "AppSkuRefetchQuery",
        "AppNodesQuery",
        "AppAllocationUpdatedSubscription",
        "AppNotificationsSubscription",
        "AppStopAllocationMutation",
        "AppAddSshKeyMutation",
        *(f"Nodes{name}RefetchQuery" for name in _node_types()),
    ):
        assert f"{operation}.graphql.ts" in generated, sorted(generated)
    # The backward connection is paginated backward: Relay read `last`/`before` as such.
    backward = tmp_path / "src" / "__generated__" / "AppRecentAllocations_query.graphql.ts"
    assert '"backward"' in backward.read_text()


def test_the_compiler_refuses_what_relay_cannot_use(tmp_path: Path) -> None:
    """The check above can fail: a @refetchable fragment on a type that is not a Node (a
    wallet has no global ID) is an error."""
    wallet = (
        'import { graphql } from "relay-runtime";\n'
        "export const w = graphql`\n  fragment BadWallet on Wallet "
        '@refetchable(queryName: "BadWalletRefetchQuery") { currency balance { amountMinor } }\n`;\n'
    )
    code, output = compile_app(tmp_path, {"Bad.ts": wallet})
    assert code != 0
    assert "BadWallet" in output
