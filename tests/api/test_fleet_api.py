"""The fleet over GraphQL: admins register nodes (a private key or the platform CA), act on them
(cordon, drain, uncordon, readmit, retire), read nodes, events and capacity, and see how many
of each SKU could be placed. Everything over HTTP against the in-process app; the live
`fleetEvents` subscription against real `gpucloud serve` + `gpucloud worker` processes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncssh
import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.catalog import services as catalog
from domain.fleet.ca_services import create_ca
from domain.fleet.changes import store
from domain.fleet.inventory import GpuInfo, canonical_model
from domain.fleet.nodes import NodeFacts, NodeHealth, NodeTrigger, transition
from infra.crypto.envelope import AesGcmCipher
from infra.crypto.local_kms import LocalKms
from infra.nodes.ssh_ca import AsyncsshCaSigner
from infra.settings import Settings
from schema.relay import from_global_id, to_global_id
from tests.api.helpers import codes, gql
from tests.api.test_sql_statements import counting
from tests.support.catalog import make_spec
from tests.support.identity import (
    CREATE_TOKEN,
    LOG_IN,
    PASSWORD,
    Account,
    Accounts,
    body,
    sync_sign_up_with_token,
    unique_email,
)
from tests.support.processes import free_port, gpucloud
from tests.support.stack import next_message, served, subscribe

NODE_FIELDS = """id name host port sshUser auth hostKey hostKeyFingerprint region
  labels { key value } state version health reason { code message } gpuModel gpuCount
  gpus { index uuid model memoryMib driverVersion migEnabled pciBusId present }
  facts { osId osVersion kernel cpus ramMib diskTotalMib diskFreeMib }
  bootstrappedAt lastProbeAt unreachableSince createdAt updatedAt retiredAt"""
RESULT = f"""__typename ... on NodePayload {{ node {{ {NODE_FIELDS} }} }}
  ... on NodeError {{ code message field problems {{ code message field }} }}"""
REGISTER = f"""mutation Register($input: RegisterNodeInput!) {{
  registerNode(input: $input) {{ {RESULT} }} }}"""
READMIT = f"""mutation Readmit($id: ID!, $hostKey: String, $v: Int) {{
  readmitNode(id: $id, hostKey: $hostKey, expectedVersion: $v) {{ {RESULT} }} }}"""
NODE = f"query One($id: ID!) {{ fleetNode(id: $id) {{ {NODE_FIELDS} }} }}"
RELAY_NODE = "query Relay($id: ID!) { node(id: $id) { __typename id ... on FleetNode { name } } }"
NODES = """query List($first: Int, $after: String, $filter: FleetNodeFilter) {
  fleetNodes(first: $first, after: $after, filter: $filter) {
    edges { cursor node { id name state region } } pageInfo { hasNextPage endCursor } } }"""
EVENTS = """query Events($id: ID!, $first: Int, $after: String) { fleetNode(id: $id) {
  events(first: $first, after: $after) {
    edges { node { id kind message step state reasonCode at } }
    pageInfo { hasNextPage endCursor } } } }"""
CAPACITY = """query { capacity {
  nodes { node { name state gpus { index } } gpuModel region total allocated free cordoned }
  totals { gpuModel region total allocated free cordoned } } }"""
FACTS = NodeFacts(os_id="ubuntu", os_version="22.04", kernel="6.5.0-41-generic", cpus=192,
                  ram_mib=2_000_000, disk_total_mib=30_000_000, disk_free_mib=29_000_000)  # fmt: skip


def action(name: str) -> str:
    return f"""mutation Act($id: ID!, $v: Int) {{ {name}(id: $id, expectedVersion: $v) {{
      __typename ... on NodePayload {{ node {{ id state version health retiredAt }} }}
      ... on NodeError {{ code message field problems {{ code field }} }} }} }}"""


CORDON, DRAIN, UNCORDON, RETIRE = (action(n) for n in
                                   ("cordonNode", "drainNode", "uncordonNode", "retireNode"))  # fmt: skip


def private_key() -> str:
    return asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode()


def public_line(key: asyncssh.SSHKey | None = None) -> str:
    key = key or asyncssh.generate_private_key("ssh-ed25519")
    return " ".join(key.export_public_key().decode().split()[:2])


def key_body_lines(pem: str) -> list[str]:
    """The base64 lines of a private key file, the parts a leak would show."""
    return [line for line in pem.splitlines() if line and not line.startswith("-----")]


def node_input(name: str, port: int, **changes: Any) -> dict[str, Any]:
    # Loopback with a closed port: a worker of a later test that looks at it fails at once.
    values: dict[str, Any] = {"name": name, "host": "127.0.0.1", "port": port,
                              "sshUser": "gpucloud", "privateKey": private_key(),
                              "region": "eu-west"}  # fmt: skip
    return {**values, **changes}


async def register(admin: Account, name: str, port: int, **changes: Any) -> dict[str, Any]:
    result = await admin.gql(REGISTER, {"input": node_input(name, port, **changes)})
    assert "errors" not in result, result
    return result["data"]["registerNode"]  # type: ignore[no-any-return]


async def registered(admin: Account, name: str, port: int, **changes: Any) -> dict[str, Any]:
    payload = await register(admin, name, port, **changes)
    assert payload["__typename"] == "NodePayload", payload
    return payload["node"]  # type: ignore[no-any-return]


async def act(admin: Account, mutation: str, node_id: str, version: int | None = None) -> Any:
    result = await admin.gql(mutation, {"id": node_id, "v": version})
    assert "errors" not in result, result
    return next(iter(result["data"].values()))


async def make_ready(uow: Any, node_gid: str, model: str = "NVIDIA H200", count: int = 8) -> None:
    """What a successful bootstrap does, through the domain: record the GPUs and move the node
    to READY with `transition` and `store` (event, audit row, outbox row)."""
    _, node_id = from_global_id(node_gid)
    now = datetime.now(UTC)
    gpus = [GpuInfo(index=i, uuid=f"GPU-{node_id}-{i}", model=model,
                    pci_bus_id=f"00000000:{i + 1:02X}:00.0", memory_mib=143_771,
                    driver_version="550.54.15", mig_enabled=False) for i in range(count)]  # fmt: skip
    async with uow() as tx:
        before = await tx.nodes.get(node_id, for_update=True)
        await tx.nodes.record_gpus(node_id, gpus)
        seen = dataclasses.replace(
            before, health=NodeHealth.OK, gpu_model=canonical_model(model), gpu_count=count,
            facts=FACTS, bootstrapped_at=now, last_probe_at=now,
        )  # fmt: skip
        after = transition(seen, NodeTrigger.BOOTSTRAPPED, now)
        await store(tx, before, after, "fleet.node.bootstrapped", now=now)
        await tx.commit()


async def assign(uow: Any, node_gid: str, indices: list[int], holder: str) -> None:
    _, node_id = from_global_id(node_gid)
    async with uow() as tx:
        await tx.placements.assign(node_id, indices, holder)
        await tx.commit()


async def rows(engine: AsyncEngine, sql: str) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(text(sql))).all())


# --- Registration -----------------------------------------------------------------------------


async def test_register_with_a_key_pins_the_host_key_and_reads_back(
    accounts: Accounts, engine: AsyncEngine
) -> None:
    admin = await accounts.admin()
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    node = await registered(admin, "gpu-a1", 2, hostKey=public_line(host_key) + " root@gpu-a1",
                            labels=[{"key": "rack", "value": "r12"},
                                    {"key": "fabric", "value": "ib"}])  # fmt: skip
    assert node["id"] == to_global_id("FleetNode", from_global_id(node["id"])[1])
    assert {k: node[k] for k in ("name", "host", "port", "sshUser", "auth", "region", "state",
                                 "version", "health", "reason", "gpuModel", "gpuCount", "gpus",
                                 "facts", "bootstrappedAt", "retiredAt")} == {
        "name": "gpu-a1", "host": "127.0.0.1", "port": 2, "sshUser": "gpucloud", "auth": "KEY",
        "region": "eu-west", "state": "BOOTSTRAPPING", "version": 1, "health": "UNKNOWN",
        "reason": None, "gpuModel": None, "gpuCount": 0, "gpus": [], "facts": None,
        "bootstrappedAt": None, "retiredAt": None}  # fmt: skip
    assert node["hostKey"] == public_line(host_key)  # the comment is dropped
    assert node["hostKeyFingerprint"] == host_key.get_fingerprint("sha256")
    assert node["labels"] == [{"key": "fabric", "value": "ib"}, {"key": "rack", "value": "r12"}]

    # The same node by fleetNode(id), by node(id), and in the list (filtered).
    again = await admin.gql(NODE, {"id": node["id"]})
    assert again == {"data": {"fleetNode": node}}
    relay = await admin.gql(RELAY_NODE, {"id": node["id"]})
    assert relay["data"]["node"] == {"__typename": "FleetNode", "id": node["id"], "name": "gpu-a1"}
    for wanted, names in (({"state": "BOOTSTRAPPING", "region": "eu-west"}, ["gpu-a1"]),
                          ({"state": "READY"}, []), ({"region": "us-east"}, []),
                          (None, ["gpu-a1"])):  # fmt: skip
        listed = await admin.gql(NODES, {"filter": wanted})
        assert [e["node"]["name"] for e in listed["data"]["fleetNodes"]["edges"]] == names, wanted

    # The key is stored sealed, once, for the node; the node row holds only its secret's id.
    (secret,) = await rows(engine, "SELECT id, purpose FROM secrets")
    assert secret.purpose == "node_admin_key"
    (stored,) = await rows(engine, "SELECT auth, credential_secret_id, host_key FROM nodes")
    assert (stored.auth, stored.credential_secret_id) == ("key", secret.id)
    assert stored.host_key == public_line(host_key)

    # One registration event and one audit row, with the fingerprint and no credential.
    (event,) = await rows(engine, "SELECT kind, state, message FROM node_events")
    assert (event.kind, event.state) == ("registered", "bootstrapping")
    assert "gpucloud@127.0.0.1:2" in event.message
    assert host_key.get_fingerprint("sha256") in event.message
    (audited,) = await rows(engine, "SELECT action, actor_type, target_type, after "
                                    "FROM audit_events WHERE action LIKE 'fleet.%'")  # fmt: skip
    assert (audited.action, audited.actor_type, audited.target_type) == (
        "fleet.node.registered",
        "user",
        "node",
    )
    assert audited.after["hostKey"] == host_key.get_fingerprint("sha256")
    assert not {"credentialSecretId", "privateKey", "credential"} & set(audited.after)
    (outbox,) = await rows(engine, "SELECT topic, name, payload FROM outbox WHERE topic = 'fleet'")
    assert (outbox.name, outbox.payload["nodeName"], outbox.payload["state"]) == (
        "node.registered",
        "gpu-a1",
        "bootstrapping",
    )


async def test_a_private_key_appears_in_no_response_audit_row_event_or_log(
    accounts: Accounts, engine: AsyncEngine, capfd: pytest.CaptureFixture[str]
) -> None:
    admin = await accounts.admin()
    key = private_key()
    lines = key_body_lines(key)
    joined = "".join(lines)
    broken = key.replace(lines[1], lines[1][:-8])  # the key's own lines, one cut short
    extra = {**node_input("gpu-extra", 7, privateKey=key), "sshPassword": "x"}
    responses = [
        await admin.gql(REGISTER, {"input": node_input("gpu-secret", 2, privateKey=key)}),
        # Refused inputs that carry the key: another problem with it, a clash, the key where
        # the host key goes, a damaged key, and a field the schema lacks (graphql-core would
        # quote the whole input back).
        await admin.gql(REGISTER, {"input": node_input("Bad Name", 3, privateKey=key)}),
        await admin.gql(REGISTER, {"input": node_input("gpu-secret", 4, privateKey=key)}),
        await admin.gql(REGISTER, {"input": node_input("gpu-other", 5, hostKey=key)}),
        await admin.gql(REGISTER, {"input": node_input("gpu-junk", 6, privateKey=broken)}),
        await admin.gql(REGISTER, {"input": extra}),
    ]
    assert responses[0]["data"]["registerNode"]["__typename"] == "NodePayload"
    assert [r["data"]["registerNode"]["code"] for r in responses[1:5]] == [
        "INVALID_NAME", "NAME_TAKEN", "INVALID_HOST_KEY", "INVALID_PRIVATE_KEY"]  # fmt: skip
    assert codes(responses[5]) == ["GRAPHQL_VALIDATION_FAILED"]

    texts = {"responses": json.dumps(responses)}
    for table in ("audit_events", "node_events", "outbox", "nodes"):
        found = await rows(engine, f"SELECT * FROM {table}")
        texts[table] = json.dumps([[str(value) for value in row] for row in found])
    (sealed,) = await rows(engine, "SELECT ciphertext FROM secrets")
    texts["secrets"] = bytes(sealed.ciphertext).hex() + bytes(sealed.ciphertext).decode("latin-1")
    captured = capfd.readouterr()
    texts["logs"] = captured.out + captured.err
    assert texts["audit_events"] != "[]" and texts["node_events"] != "[]"
    for where, content in texts.items():
        leaked = [line for line in [*lines, joined] if line in content]
        assert not leaked, f"the private key is in the {where}"


async def test_register_with_the_platform_ca(
    accounts: Accounts, uow: Any, settings: Settings
) -> None:
    admin = await accounts.admin()
    no_ca = await register(admin, "gpu-ca1", 2, privateKey=None, useCa=True)
    assert (no_ca["__typename"], no_ca["code"], no_ca["field"]) == (
        "NodeError",
        "CA_NOT_FOUND",
        "useCa",
    )
    await create_ca(uow(), LocalKms(settings.kms_key_file), AesGcmCipher(), AsyncsshCaSigner())
    node = await registered(admin, "gpu-ca1", 2, privateKey=None, useCa=True)
    assert (node["auth"], node["state"], node["hostKey"]) == ("CA", "BOOTSTRAPPING", None)
    assert node["hostKeyFingerprint"] is None


async def test_every_problem_of_a_registration_is_reported_with_its_field(
    accounts: Accounts, engine: AsyncEngine
) -> None:
    admin = await accounts.admin()
    bad = {"name": "GPU_1", "host": "not a host", "port": 70000, "sshUser": "Root!",
           "privateKey": None, "hostKey": "ssh-ed25519 not-base64!", "region": "EU West",
           "labels": [{"key": "Bad Key", "value": "x"}]}  # fmt: skip
    result = await admin.gql(REGISTER, {"input": {**node_input("x", 2), **bad}})
    error = result["data"]["registerNode"]
    assert error["__typename"] == "NodeError"
    assert {(p["code"], p["field"]) for p in error["problems"]} == {
        ("INVALID_NAME", "name"), ("INVALID_HOST", "host"), ("INVALID_PORT", "port"),
        ("INVALID_SSH_USER", "sshUser"), ("CREDENTIAL_REQUIRED", "privateKey"),
        ("INVALID_HOST_KEY", "hostKey"), ("INVALID_REGION", "region"),
        ("INVALID_LABELS", "labels")}  # fmt: skip
    assert (error["code"], error["field"]) == (error["problems"][0]["code"],
                                               error["problems"][0]["field"])  # fmt: skip
    assert all(p["message"] for p in error["problems"])

    one_by_one = [
        ({"useCa": True}, "CREDENTIAL_REQUIRED", "privateKey"),  # a key and the CA
        ({"privateKey": "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n"}, "INVALID_PRIVATE_KEY",
         "privateKey"),
        ({"privateKey": "A" * 20_000}, "INVALID_PRIVATE_KEY", "privateKey"),
        ({"labels": [{"key": "rack", "value": "1"}, {"key": "rack", "value": "2"}]},
         "INVALID_LABELS", "labels"),
        ({"labels": [{"key": f"k{i}", "value": "v"} for i in range(33)]}, "INVALID_LABELS",
         "labels"),
        ({"sshUser": "root;rm"}, "INVALID_SSH_USER", "sshUser"),
        ({"host": "999.1.1.1"}, "INVALID_HOST", "host"),
    ]  # fmt: skip
    for changes, code, field in one_by_one:
        refused = await register(admin, "gpu-ok", 3, **changes)
        assert (refused["__typename"], refused["code"], refused["field"]) == (
            "NodeError",
            code,
            field,
        ), changes
    for table in ("nodes", "secrets", "node_events", "outbox WHERE topic = 'fleet'"):
        assert await rows(engine, f"SELECT 1 FROM {table}") == [], table


async def test_names_and_live_addresses_are_unique(accounts: Accounts) -> None:
    admin = await accounts.admin()
    first = await registered(admin, "gpu-u1", 2)
    clash = await register(admin, "gpu-u1", 3)
    assert (clash["code"], clash["field"]) == ("NAME_TAKEN", "name")
    same_place = await register(admin, "gpu-u2", 2)
    assert (same_place["code"], same_place["field"]) == ("ADDRESS_TAKEN", "host")
    await registered(admin, "gpu-u2", 3)  # another port of the same host is another node
    assert (await act(admin, RETIRE, first["id"]))["node"]["state"] == "RETIRED"
    await registered(admin, "gpu-u3", 2)  # a retired node's address is free again
    assert (await register(admin, "gpu-u1", 4))["code"] == "NAME_TAKEN"  # its name is not


async def test_concurrent_registrations_of_one_name_store_one_node(
    accounts: Accounts, engine: AsyncEngine
) -> None:
    admin = await accounts.admin()
    results = await asyncio.gather(*(register(admin, "gpu-race", port)
                                     for port in range(2, 8)))  # fmt: skip
    kinds = sorted(r["__typename"] for r in results)
    assert kinds == ["NodeError"] * 5 + ["NodePayload"], results
    assert {r["code"] for r in results if r["__typename"] == "NodeError"} == {"NAME_TAKEN"}
    assert len(await rows(engine, "SELECT 1 FROM nodes")) == 1
    assert len(await rows(engine, "SELECT 1 FROM secrets")) == 1  # the losers sealed nothing


async def test_only_administrators_reach_the_fleet(accounts: Accounts) -> None:
    user = await accounts.sign_up()
    admin = await accounts.admin()
    node = await registered(admin, "gpu-p1", 2)
    for document, variables in ((REGISTER, {"input": node_input("gpu-p2", 3)}),
                                (CORDON, {"id": node["id"]}), (NODE, {"id": node["id"]}),
                                (NODES, {}), (CAPACITY, {}), (RELAY_NODE, {"id": node["id"]})):  # fmt: skip
        refused = await user.gql(document, variables)
        assert codes(refused) == ["FORBIDDEN"], (document, refused)
        assert not any((refused["data"] or {}).values()), refused
    # An admin's token without admin:write reads but cannot act.
    reader = await accounts.bearer(await admin.token(["ADMIN_READ"], name="fleet-reader"))
    assert (await gql(reader, NODE, {"id": node["id"]}))["data"]["fleetNode"]["name"] == "gpu-p1"
    assert codes(await gql(reader, CORDON, {"id": node["id"]})) == ["MISSING_SCOPE"]
    assert (await act(admin, CORDON, node["id"]))["node"]["version"] == 2  # nothing happened


async def test_writes_without_a_key_service_are_unavailable_and_reads_work(
    settings: Settings, engine: AsyncEngine
) -> None:
    from gpucloud.app import create_app

    app = create_app(dataclasses.replace(settings, kms_key_file=""))
    async with LifespanManager(app), AsyncExitStack() as stack:
        admin = await Accounts(app, stack).admin()
        result = await admin.gql(REGISTER, {"input": node_input("gpu-nokms", 2)})
        assert codes(result) == ["SERVICE_UNAVAILABLE"], result
        assert result["errors"][0]["extensions"]["requestId"]
        assert "key service" in result["errors"][0]["message"]
        listed = await admin.gql(NODES)
        assert listed == {"data": {"fleetNodes": {"edges": [], "pageInfo": {
            "hasNextPage": False, "endCursor": None}}}}  # fmt: skip


# --- Admin actions ----------------------------------------------------------------------------


async def test_cordon_drain_uncordon_retire_follow_the_state_machine(accounts: Accounts) -> None:
    admin = await accounts.admin()
    node = await registered(admin, "gpu-s1", 2)
    gid = node["id"]

    cordoned = await act(admin, CORDON, gid, 1)
    assert cordoned["node"] == {"id": gid, "state": "CORDONED", "version": 2,
                                "health": "UNKNOWN", "retiredAt": None}  # fmt: skip
    again = await act(admin, CORDON, gid)
    assert (again["code"], again["field"]) == ("TRANSITION_NOT_ALLOWED", "id")
    assert "is CORDONED;" in again["message"]  # the state as the API spells it
    stale = await act(admin, DRAIN, gid, 1)
    assert (stale["code"], stale["field"]) == ("VERSION_MISMATCH", "expectedVersion")
    assert (await act(admin, DRAIN, gid, 2))["node"]["state"] == "DRAINING"
    assert (await act(admin, CORDON, gid, 3))["node"]["state"] == "CORDONED"  # drain -> cordon
    # Never bootstrapped: an uncordon lands on BOOTSTRAPPING, whatever the health says.
    assert (await act(admin, UNCORDON, gid, 4))["node"] == {
        "id": gid,
        "state": "BOOTSTRAPPING",
        "version": 5,
        "health": "UNKNOWN",
        "retiredAt": None,
    }
    not_held = await act(admin, UNCORDON, gid)
    assert not_held["code"] == "TRANSITION_NOT_ALLOWED"
    early = await admin.gql(READMIT, {"id": gid})  # readmit is for ready or failed nodes
    assert early["data"]["readmitNode"]["code"] == "TRANSITION_NOT_ALLOWED"

    retired = await act(admin, RETIRE, gid, 5)
    assert retired["node"]["state"] == "RETIRED" and retired["node"]["retiredAt"]
    for mutation in (RETIRE, CORDON, DRAIN, UNCORDON):
        assert (await act(admin, mutation, gid))["code"] == "TRANSITION_NOT_ALLOWED"

    missing = await act(admin, CORDON, to_global_id("FleetNode", 10**9))
    assert (missing["code"], missing["field"]) == ("NOT_FOUND", "id")
    for bad in ("nonsense", to_global_id("Sku", 1)):
        refused = await act(admin, CORDON, bad)
        assert (refused["code"], refused["field"]) == ("INVALID_ID", "id")


async def test_a_ready_node_is_cordoned_uncordoned_readmitted_and_busy_nodes_stay(
    accounts: Accounts, uow: Any
) -> None:
    admin = await accounts.admin()
    node = await registered(admin, "gpu-r1", 2)
    await make_ready(uow, node["id"], count=4)
    ready = (await admin.gql(NODE, {"id": node["id"]}))["data"]["fleetNode"]
    assert (ready["state"], ready["health"], ready["gpuModel"], ready["gpuCount"]) == (
        "READY",
        "OK",
        "H200",
        4,
    )
    assert [g["index"] for g in ready["gpus"]] == [0, 1, 2, 3]
    assert ready["gpus"][0] == {"index": 0, "uuid": ready["gpus"][0]["uuid"],
                                "model": "NVIDIA H200", "memoryMib": 143_771,
                                "driverVersion": "550.54.15", "migEnabled": False,
                                "pciBusId": "00000000:01:00.0", "present": True}  # fmt: skip
    assert ready["facts"] == {"osId": "ubuntu", "osVersion": "22.04", "kernel": "6.5.0-41-generic",
                              "cpus": 192, "ramMib": 2_000_000, "diskTotalMib": 30_000_000,
                              "diskFreeMib": 29_000_000}  # fmt: skip

    assert (await act(admin, CORDON, node["id"]))["node"]["state"] == "CORDONED"
    assert (await act(admin, UNCORDON, node["id"]))["node"]["state"] == "READY"  # healthy

    await assign(uow, node["id"], [0], "alloc-1")
    busy = await act(admin, RETIRE, node["id"])
    assert (busy["code"], busy["field"]) == ("NODE_BUSY", "id")

    bad_key = await admin.gql(READMIT, {"id": node["id"], "hostKey": "ssh-ed25519 !!"})
    assert bad_key["data"]["readmitNode"]["code"] == "INVALID_HOST_KEY"
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    readmitted = await admin.gql(READMIT, {"id": node["id"], "hostKey": public_line(host_key)})
    back = readmitted["data"]["readmitNode"]["node"]
    assert (back["state"], back["health"], back["hostKey"], back["hostKeyFingerprint"]) == (
        "BOOTSTRAPPING",
        "UNKNOWN",
        public_line(host_key),
        host_key.get_fingerprint("sha256"),
    )


async def test_concurrent_cordons_of_one_node_apply_exactly_once(
    accounts: Accounts, engine: AsyncEngine
) -> None:
    admin = await accounts.admin()
    other = await accounts.admin()
    node = await registered(admin, "gpu-c1", 2)
    results = await asyncio.gather(*(act(who, CORDON, node["id"])
                                     for who in (admin, other) * 3))  # fmt: skip
    won = [r for r in results if r["__typename"] == "NodePayload"]
    lost = [r for r in results if r["__typename"] == "NodeError"]
    assert len(won) == 1 and won[0]["node"]["version"] == 2, results
    assert {r["code"] for r in lost} == {"TRANSITION_NOT_ALLOWED"} and len(lost) == 5
    changes = await rows(engine, "SELECT 1 FROM node_events WHERE kind = 'state_changed'")
    audited = await rows(engine, "SELECT 1 FROM audit_events WHERE action = 'fleet.node.cordoned'")
    assert len(changes) == len(audited) == 1


async def test_events_list_the_history_newest_first_in_pages(accounts: Accounts) -> None:
    admin = await accounts.admin()
    node = await registered(admin, "gpu-e1", 2)
    for mutation in (CORDON, DRAIN, UNCORDON):
        assert (await act(admin, mutation, node["id"]))["__typename"] == "NodePayload"
    first = (await admin.gql(EVENTS, {"id": node["id"], "first": 2}))["data"]["fleetNode"]
    page = first["events"]
    assert [(e["node"]["kind"], e["node"]["state"]) for e in page["edges"]] == [
        ("STATE_CHANGED", "BOOTSTRAPPING"),
        ("STATE_CHANGED", "DRAINING"),
    ]
    assert page["edges"][0]["node"]["message"] == "uncordoned by an admin"
    assert page["pageInfo"]["hasNextPage"] is True
    rest = await admin.gql(EVENTS, {"id": node["id"], "first": 2,
                                    "after": page["pageInfo"]["endCursor"]})  # fmt: skip
    tail = rest["data"]["fleetNode"]["events"]
    assert [(e["node"]["kind"], e["node"]["state"]) for e in tail["edges"]] == [
        ("STATE_CHANGED", "CORDONED"),
        ("REGISTERED", "BOOTSTRAPPING"),
    ]
    assert tail["pageInfo"]["hasNextPage"] is False
    assert tail["edges"][1]["node"]["step"] is None and tail["edges"][1]["node"]["at"]
    ids = [e["node"]["id"] for e in page["edges"] + tail["edges"]]
    assert len(set(ids)) == 4


# --- Capacity and what each SKU could still place --------------------------------------------


async def test_capacity_counts_free_allocated_and_cordoned_gpus(
    accounts: Accounts, uow: Any
) -> None:
    admin = await accounts.admin()
    n1 = await registered(admin, "n1", 2)
    n2 = await registered(admin, "n2", 3)
    await registered(admin, "n3", 4)  # never bootstrapped: no GPUs, no model
    n4 = await registered(admin, "n4", 5, region="us-east")
    n5 = await registered(admin, "n5", 6)
    await make_ready(uow, n1["id"], count=8)
    await make_ready(uow, n2["id"], count=4)
    await make_ready(uow, n4["id"], model="NVIDIA H100 80GB HBM3", count=2)
    await make_ready(uow, n5["id"], count=8)
    await assign(uow, n1["id"], [0, 1], "alloc-1")
    await assign(uow, n2["id"], [3], "alloc-2")
    assert (await act(admin, CORDON, n2["id"]))["node"]["state"] == "CORDONED"
    assert (await act(admin, RETIRE, n5["id"]))["node"]["state"] == "RETIRED"

    result = await admin.gql(CAPACITY)
    assert "errors" not in result, result
    found = result["data"]["capacity"]
    by_name = {e["node"]["name"]: e for e in found["nodes"]}
    assert set(by_name) == {"n1", "n2", "n3", "n4"}  # retired nodes are not capacity
    assert [e["node"]["name"] for e in found["nodes"]] == ["n1", "n2", "n3", "n4"]
    counts = {name: (e["gpuModel"], e["region"], e["total"], e["allocated"], e["free"],
                     e["cordoned"]) for name, e in by_name.items()}  # fmt: skip
    assert counts == {
        "n1": ("H200", "eu-west", 8, 2, 6, 0),
        "n2": ("H200", "eu-west", 4, 1, 0, 3),
        "n3": (None, "eu-west", 0, 0, 0, 0),
        "n4": ("H100 80GB HBM3", "us-east", 2, 0, 2, 0),
    }
    assert by_name["n2"]["node"]["state"] == "CORDONED"
    assert len(by_name["n1"]["node"]["gpus"]) == 8
    assert found["totals"] == [
        {"gpuModel": "H100 80GB HBM3", "region": "us-east", "total": 2, "allocated": 0,
         "free": 2, "cordoned": 0},
        {"gpuModel": "H200", "region": "eu-west", "total": 12, "allocated": 3, "free": 6,
         "cordoned": 3},
    ]  # fmt: skip


async def test_node_pages_and_capacity_cost_the_same_queries_for_any_fleet_size(
    app: Any, accounts: Accounts, uow: Any
) -> None:
    admin = await accounts.admin()
    made = [await registered(admin, f"q{i}", 10 + i) for i in range(6)]
    for node in made:
        await make_ready(uow, node["id"], count=2)
    page = """query($first: Int) { fleetNodes(first: $first) { edges { node {
      name gpus { index } labels { key } } } } }"""
    counts = {}
    for size in (1, 3, 6):
        with counting(app) as statements:
            result = await admin.gql(page, {"first": size})
        assert len(result["data"]["fleetNodes"]["edges"]) == size
        counts[size] = len(statements)
    assert counts[1] == counts[3] == counts[6], counts
    with counting(app) as statements:
        result = await admin.gql(CAPACITY)
    assert len(result["data"]["capacity"]["nodes"]) == 6
    # The page: nodes, then their GPUs. Capacity: its rows, their nodes, then their GPUs. One
    # query each, not one per node.
    assert len(statements) == counts[6] + 1, (statements, counts)


SKUS_AVAILABLE = """query Available%d($first: Int) { skus(first: $first, filter: {status: null}) {
  edges { node { name status available } } } }"""


async def test_available_counts_whole_skus_on_ready_nodes(
    app: Any, accounts: Accounts, uow: Any
) -> None:
    admin = await accounts.admin()
    for name, model, count, region in (("h200x1", "H200", 1, "eu-west"),
                                       ("h200x4", "H200", 4, "eu-west"),
                                       ("h200x8", "H200", 8, "eu-west"),
                                       ("h100x1", "H100", 1, "us-east"),
                                       ("h100x1-eu", "H100", 1, "eu-west"),
                                       ("h200x1-old", "H200", 1, "eu-west")):  # fmt: skip
        await catalog.add_sku(uow(), make_spec(name, gpu_model=model, gpu_count=count,
                                               region=region))  # fmt: skip
    old = await catalog.get_sku_by_name(uow(), "h200x1-old")
    assert old is not None
    await catalog.retire_sku(uow(), old.id)
    n1 = await registered(admin, "a1", 2)
    n2 = await registered(admin, "a2", 3)
    n3 = await registered(admin, "a3", 4, region="us-east")
    await make_ready(uow, n1["id"], count=8)
    await make_ready(uow, n2["id"], count=4)
    await make_ready(uow, n3["id"], model="NVIDIA H100 80GB HBM3", count=2)
    await assign(uow, n1["id"], [0, 1], "alloc-1")
    await assign(uow, n2["id"], [0], "alloc-2")
    assert (await act(admin, CORDON, n2["id"]))["node"]["state"] == "CORDONED"

    # The public catalog page is cached for a few seconds per query text; in this test no
    # worker relays the fleet events that clear it, so each read is a query text of its own.
    async def available(read: int) -> dict[str, int]:
        result = await gql(await accounts.client(), SKUS_AVAILABLE % read, {"first": 50})
        assert "errors" not in result, result
        return {e["node"]["name"]: e["node"]["available"] for e in result["data"]["skus"]["edges"]}

    assert await available(1) == {"h200x1": 6, "h200x4": 1, "h200x8": 0, "h100x1": 2,
                                  "h100x1-eu": 0, "h200x1-old": 0}  # fmt: skip
    assert (await act(admin, UNCORDON, n2["id"]))["node"]["state"] == "READY"
    assert await available(2) == {"h200x1": 9, "h200x4": 1, "h200x8": 0, "h100x1": 2,
                                  "h100x1-eu": 0, "h200x1-old": 0}  # fmt: skip
    async with uow() as tx:
        await tx.placements.release("alloc-1")
        await tx.commit()
    assert (await available(3))["h200x8"] == 1

    # One more query for the whole page, whatever its size.
    counts = {}
    for size in (1, 3, 6):
        with counting(app) as statements:
            result = await gql(await accounts.client(), SKUS_AVAILABLE % (10 + size),
                               {"first": size})  # fmt: skip
        assert len(result["data"]["skus"]["edges"]) == size
        counts[size] = len(statements)
    assert counts[1] == counts[3] == counts[6] == 2, counts


# --- fleetEvents, live, against real processes -------------------------------------------------

SUBSCRIBE = """subscription { fleetEvents { kind nodeId nodeName state previousState version
  health reason message } }"""


@pytest.fixture
def fleet_stack(
    engine: AsyncEngine, service_env: dict[str, str], tmp_path: Path
) -> Iterator[dict[str, Any]]:
    """`gpucloud serve` and `gpucloud worker` (relay and fleet loop) on this run's servers;
    `engine` has emptied the tables first, so the worker meets only this test's nodes."""
    with served(service_env, tmp_path, "fleet", GPUCLOUD_FLEET_TICK_SECONDS="0.3",
                GPUCLOUD_SSH_CONNECT_TIMEOUT_SECONDS="3") as running:  # fmt: skip
        yield {"http": running.http[0], "ws": running.ws[0], "env": running.env}


def _admin_session(stack: dict[str, Any]) -> tuple[httpx.Client, str]:
    """An administrator made by the CLI, signed in to the running API: (client, CSRF token)."""
    email = unique_email("fleet-admin")
    made = gpucloud("admin", "create", "--email", email, "--password-stdin",
                    env=stack["env"], stdin=PASSWORD + "\n")  # fmt: skip
    assert made.returncode == 0, made.stderr
    client = httpx.Client(base_url=stack["http"])
    logged = client.post("/graphql", json=body(LOG_IN, {"email": email, "password": PASSWORD}))
    payload = logged.json()["data"]["logIn"]
    assert payload["user"]["role"] == "ADMIN", payload
    return client, payload["csrfToken"]


async def _subscribe(stack: dict[str, Any], token: str) -> Any:
    return await subscribe(stack["ws"], token, SUBSCRIBE)


async def test_fleet_events_stream_registrations_and_unreachable_alerts_to_admins(
    fleet_stack: dict[str, Any],
) -> None:
    client, csrf = await asyncio.to_thread(_admin_session, fleet_stack)
    expires = datetime.now(UTC).replace(year=datetime.now(UTC).year + 1).isoformat()
    minted = client.post("/graphql", headers={"x-csrf-token": csrf}, json=body(
        CREATE_TOKEN, {"name": "fleet-watch", "scopes": ["ADMIN_READ"], "expiresAt": expires}))  # fmt: skip
    token = minted.json()["data"]["createApiToken"]["secret"]
    user_token = await asyncio.to_thread(sync_sign_up_with_token, fleet_stack["http"])

    refused = await _subscribe(fleet_stack, user_token)
    try:
        message = await next_message(refused)
        assert "FORBIDDEN" in json.dumps(message), message
        assert message["type"] in ("error", "next")
    finally:
        await refused.close()

    ws = await _subscribe(fleet_stack, token)
    try:
        await asyncio.sleep(1.0)  # the subscription is registered before the node is
        closed_port = free_port()  # nothing listens there: the first contact is refused
        result = client.post("/graphql", headers={"x-csrf-token": csrf}, json=body(
            REGISTER, {"input": node_input("gpu-live", closed_port)})).json()  # fmt: skip
        node = result["data"]["registerNode"]["node"]

        # The worker publishes events from several threads: they arrive in any order.
        seen: dict[str, dict[str, Any]] = {}
        wanted = {"REGISTERED", "STATE_CHANGED", "ALERT"}
        while not wanted <= set(seen):
            message = await next_message(ws)
            assert message["type"] == "next", message
            event = message["payload"]["data"]["fleetEvents"]
            if event["nodeName"] == "gpu-live":
                assert event["nodeId"] == node["id"]
                seen.setdefault(event["kind"], event)
        assert (seen["REGISTERED"]["state"], seen["REGISTERED"]["version"]) == (
            "BOOTSTRAPPING",
            1,
        )
        changed = seen["STATE_CHANGED"]
        assert (changed["previousState"], changed["state"], changed["reason"]) == (
            "BOOTSTRAPPING",
            "UNREACHABLE",
            "UNREACHABLE",
        )
        alert = seen["ALERT"]
        assert (alert["state"], alert["reason"]) == ("UNREACHABLE", "UNREACHABLE")
        assert alert["message"] and alert["version"] == changed["version"] > 1
    finally:
        await ws.close()
        client.close()
