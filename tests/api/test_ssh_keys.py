"""SSH keys over GraphQL: add (normalised, fingerprinted, audited), list, remove; every refusal
with its code and field; other users' keys invisible; token scopes; and a pasted private key
echoed nowhere."""

from __future__ import annotations

import json
from typing import Any

import asyncssh
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.compute.ssh_keys import MAX_KEYS, NewSshKey
from schema.relay import to_global_id
from tests.api.helpers import codes, gql
from tests.support.identity import Account, Accounts

RESULT = """__typename
  ... on SshKeyPayload { sshKey { id name fingerprint keyType bits publicKey createdAt } }
  ... on SshKeyError { code message field problems { code field message } }"""
ADD = f"""mutation Add($name: String!, $publicKey: String!) {{
  addSshKey(input: {{name: $name, publicKey: $publicKey}}) {{ {RESULT} }} }}"""
REMOVE = f"""mutation Remove($id: ID!) {{ removeSshKey(id: $id) {{ {RESULT} }} }}"""
LIST = "{ sshKeys { edges { node { id name fingerprint keyType publicKey } } } }"
NODE = "query($id: ID!) { node(id: $id) { __typename id ... on SshKey { name } } }"


def make_key(kind: str = "ssh-ed25519", **kw: Any) -> asyncssh.SSHKey:
    return asyncssh.generate_private_key(kind, comment="ada@laptop", **kw)


def public_line(key: asyncssh.SSHKey) -> str:
    return key.export_public_key().decode().strip()  # with its comment, as in a .pub file


async def add(who: Account | Any, name: str, public_key: str) -> dict[str, Any]:
    variables = {"name": name, "publicKey": public_key}
    result = await (who.gql(ADD, variables) if isinstance(who, Account)
                    else gql(who, ADD, variables))  # fmt: skip
    assert "errors" not in result, result
    return result["data"]["addSshKey"]  # type: ignore[no-any-return]


async def listed(who: Account) -> list[dict[str, Any]]:
    result = await who.gql(LIST)
    assert "errors" not in result, result
    return [edge["node"] for edge in result["data"]["sshKeys"]["edges"]]


async def rows(engine: AsyncEngine, sql: str) -> list[Any]:
    async with engine.connect() as conn:
        return list(await conn.execute(text(sql)))


async def test_add_list_remove(accounts: Accounts, engine: AsyncEngine) -> None:
    account = await accounts.sign_up()
    key = make_key()
    added = await add(account, " laptop ", f"  {public_line(key)}\n")
    assert added["__typename"] == "SshKeyPayload", added
    ssh_key = added["sshKey"]
    bare = " ".join(public_line(key).split()[:2])
    assert ssh_key["name"] == "laptop"
    assert ssh_key["publicKey"] == bare  # the comment is not kept
    assert ssh_key["fingerprint"] == key.get_fingerprint("sha256")
    assert (ssh_key["keyType"], ssh_key["bits"]) == ("ssh-ed25519", 256)

    rsa = make_key("ssh-rsa", key_size=3072)
    assert (await add(account, "old box", public_line(rsa)))["sshKey"]["bits"] == 3072
    assert [k["name"] for k in await listed(account)] == ["laptop", "old box"]

    removed = await account.gql(REMOVE, {"id": ssh_key["id"]})
    assert removed["data"]["removeSshKey"]["sshKey"]["id"] == ssh_key["id"]
    assert [k["name"] for k in await listed(account)] == ["old box"]
    again = await account.gql(REMOVE, {"id": ssh_key["id"]})
    assert (again["data"]["removeSshKey"]["code"], again["data"]["removeSshKey"]["field"]) == (
        "NOT_FOUND", "id")  # fmt: skip

    audited = await rows(engine, "SELECT * FROM audit_events WHERE action LIKE 'ssh_key.%' "
                                 "ORDER BY id")  # fmt: skip
    assert [(r.action, r.target_type) for r in audited] == [
        ("ssh_key.added", "ssh_key"), ("ssh_key.added", "ssh_key"),
        ("ssh_key.removed", "ssh_key")]  # fmt: skip
    assert audited[0].after["fingerprint"] == ssh_key["fingerprint"]
    assert audited[2].before["fingerprint"] == ssh_key["fingerprint"]
    assert audited[0].actor_user_id == audited[2].actor_user_id is not None
    # The fingerprint names the key; the key itself is in no audit row.
    assert bare.split()[1] not in json.dumps([dict(r._mapping) for r in audited], default=str)


async def test_every_refusal_has_its_code_and_field(
    accounts: Accounts, engine: AsyncEngine, uow: Any
) -> None:
    account = await accounts.sign_up()
    key = make_key()
    assert (await add(account, "laptop", public_line(key)))["__typename"] == "SshKeyPayload"
    ca = make_key()
    cases = [
        ("k", "garbage", "INVALID_PUBLIC_KEY", "publicKey"),
        ("k", f"{public_line(make_key())}\n{public_line(make_key())}", "INVALID_PUBLIC_KEY",
         "publicKey"),
        ("k", make_key().export_private_key().decode(), "PRIVATE_KEY_PASTED", "publicKey"),
        ("k", make_key().generate_user_certificate(ca, "ada").export_certificate().decode(),
         "UNSUPPORTED_KEY_TYPE", "publicKey"),
        ("k", public_line(make_key("ssh-rsa", key_size=1024)), "UNSUPPORTED_KEY_SIZE",
         "publicKey"),
        ("", public_line(make_key()), "INVALID_NAME", "name"),
        ("other name", public_line(key), "DUPLICATE_KEY", "publicKey"),
        ("LAPTOP", public_line(make_key()), "NAME_TAKEN", "name"),
    ]  # fmt: skip
    for name, pasted, code, field in cases:
        refused = await add(account, name, pasted)
        assert refused["__typename"] == "SshKeyError", (code, refused)
        assert (refused["code"], refused["field"]) == (code, field), refused
        assert refused["problems"][0]["code"] == code

    both = await add(account, "laptop", public_line(key))
    assert {(p["code"], p["field"]) for p in both["problems"]} == {
        ("DUPLICATE_KEY", "publicKey"), ("NAME_TAKEN", "name")}  # fmt: skip

    # The limit: fill the account up to it, then one more is refused.
    async with uow() as tx:
        user_id = (await tx.users.get_by_email(account.email.lower())).id
        for i in range(MAX_KEYS - 1):
            made = make_key()
            line = " ".join(public_line(made).split()[:2])
            await tx.ssh_keys.add(user_id, NewSshKey(f"seed-{i}", line,
                                  made.get_fingerprint("sha256"), "ssh-ed25519", 256))  # fmt: skip
        await tx.commit()
    full = await add(account, "one more", public_line(make_key()))
    assert (full["code"], full["field"]) == ("TOO_MANY_KEYS", "publicKey")

    for bad_id, code in (("not-an-id", "INVALID_ID"), (account.user_id, "INVALID_ID"),
                         (to_global_id("SshKey", 10**12), "NOT_FOUND")):  # fmt: skip
        result = (await account.gql(REMOVE, {"id": bad_id}))["data"]["removeSshKey"]
        assert (result["code"], result["field"]) == (code, "id"), result
    assert len(await rows(engine, "SELECT id FROM ssh_keys")) == MAX_KEYS


async def test_a_private_key_is_echoed_nowhere(
    accounts: Accounts, engine: AsyncEngine, capfd: pytest.CaptureFixture[str]
) -> None:
    account = await accounts.sign_up()
    private = make_key("ssh-rsa", key_size=2048).export_private_key().decode()
    lines = [line for line in private.splitlines() if line and not line.startswith("-----")]
    responses = [
        await account.gql(ADD, {"name": "k", "publicKey": private}),
        await account.gql(ADD, {"name": "", "publicKey": private}),
        await account.gql(ADD, {"name": "k", "publicKey": "".join(lines)}),
        await account.gql(ADD, {"name": "k", "publicKey": private.replace("\n", " ")}),
        # Input the schema refuses before any resolver: graphql-core would quote the value.
        await account.gql(ADD, {"name": 7, "publicKey": private}),
        await account.gql(
            "mutation($i: AddSshKeyInput!) { addSshKey(input: $i) { __typename } }",
            {"i": {"name": "k", "publicKey": private, "comment": private}},
        ),
    ]
    for refused in responses[:4]:
        problems = refused["data"]["addSshKey"]["problems"]
        assert ("PRIVATE_KEY_PASTED", "publicKey") in {(p["code"], p["field"]) for p in problems}
    assert all(codes(r) for r in responses[4:]), responses[4:]
    texts = {"responses": json.dumps(responses)}
    for table in ("ssh_keys", "audit_events", "outbox"):
        found = await rows(engine, f"SELECT * FROM {table}")
        texts[table] = json.dumps([[str(value) for value in row] for row in found])
    captured = capfd.readouterr()
    texts["logs"] = captured.out + captured.err
    for where, content in texts.items():
        leaked = [line for line in [*lines, "".join(lines)] if line in content]
        assert not leaked, f"the private key is in the {where}"


async def test_another_users_keys_are_invisible(accounts: Accounts) -> None:
    owner, stranger = await accounts.sign_up(), await accounts.sign_up()
    key = make_key()
    ssh_key = (await add(owner, "laptop", public_line(key)))["sshKey"]
    assert await listed(stranger) == []
    node = await stranger.gql(NODE, {"id": ssh_key["id"]})
    assert codes(node) == ["NOT_FOUND"] and node["data"] == {"node": None}
    refused = (await stranger.gql(REMOVE, {"id": ssh_key["id"]}))["data"]["removeSshKey"]
    missing = await stranger.gql(REMOVE, {"id": to_global_id("SshKey", 10**12)})
    assert refused["code"] == "NOT_FOUND"
    assert refused["message"] == missing["data"]["removeSshKey"]["message"]
    assert [k["id"] for k in await listed(owner)] == [ssh_key["id"]]
    assert (await owner.gql(NODE, {"id": ssh_key["id"]}))["data"]["node"]["name"] == "laptop"
    # The same key on another account is fine: a key does not say who a user is.
    assert (await add(stranger, "laptop", public_line(key)))["__typename"] == "SshKeyPayload"


async def test_anonymous_callers_are_refused(accounts: Accounts) -> None:
    anonymous = await accounts.client()
    owner = await accounts.sign_up()
    ssh_key = (await add(owner, "laptop", public_line(make_key())))["sshKey"]
    for query, variables in ((LIST, None), (ADD, {"name": "k", "publicKey": "x"}),
                             (REMOVE, {"id": ssh_key["id"]})):  # fmt: skip
        result = await gql(anonymous, query, variables)
        assert codes(result) == ["UNAUTHENTICATED"], result
        assert result["data"] is None
    assert len(await listed(owner)) == 1


async def test_token_scopes(accounts: Accounts, engine: AsyncEngine) -> None:
    account = await accounts.sign_up()
    reader = await accounts.bearer(await account.token(["COMPUTE_READ"]))
    writer = await accounts.bearer(await account.token(["COMPUTE_WRITE"]))
    other = await accounts.bearer(await account.token(["ACCOUNT_READ", "ACCOUNT_WRITE"]))

    refused = await gql(reader, ADD, {"name": "ci", "publicKey": public_line(make_key())})
    assert codes(refused) == ["MISSING_SCOPE"]
    assert codes(await gql(other, LIST)) == ["MISSING_SCOPE"]

    added = await add(writer, "ci", public_line(make_key()))
    assert added["__typename"] == "SshKeyPayload"
    seen = await gql(reader, LIST)
    assert [e["node"]["name"] for e in seen["data"]["sshKeys"]["edges"]] == ["ci"]
    assert codes(await gql(reader, REMOVE, {"id": added["sshKey"]["id"]})) == ["MISSING_SCOPE"]
    removed = await gql(writer, REMOVE, {"id": added["sshKey"]["id"]})
    assert removed["data"]["removeSshKey"]["__typename"] == "SshKeyPayload"
    (row,) = await rows(engine, "SELECT actor_token_id FROM audit_events "
                                "WHERE action = 'ssh_key.added'")  # fmt: skip
    assert row.actor_token_id is not None


async def test_an_admin_may_remove_anyones_key(accounts: Accounts) -> None:
    owner, admin = await accounts.sign_up(), await accounts.admin()
    ssh_key = (await add(owner, "laptop", public_line(make_key())))["sshKey"]
    assert (await admin.gql(NODE, {"id": ssh_key["id"]}))["data"]["node"]["name"] == "laptop"
    assert await listed(admin) == []  # sshKeys lists one's own keys only
    removed = await admin.gql(REMOVE, {"id": ssh_key["id"]})
    assert removed["data"]["removeSshKey"]["__typename"] == "SshKeyPayload"
    assert await listed(owner) == []
